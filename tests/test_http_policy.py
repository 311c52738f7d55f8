"""The HTTP adapter's guards, against a real HTTP server on 127.0.0.1: taskIds, addresses (checked on the address
connected), allowed hosts, per-secret hosts, invalid URLs and unencodable headers; and URL encoding in blueprints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from framework import ServiceError, TaskIdError
from framework.blueprint.expressions import ExpressionError, Expressions
from framework.blueprint.requests import http_payload
from framework.errors import ConfigurationError
from framework.http import AddressPolicy, HttpAdapter, RequestRefused
from framework.messages import ServiceCommand
from framework.taskid import TaskIdSigner, TaskRef
from tests.conftest import TEST_SECRET
from tests.support.http_server import CountingServer, counting_server

SIGNER = TaskIdSigner([TEST_SECRET])


@pytest.fixture
def server() -> Iterator[CountingServer]:
    with counting_server() as state:
        yield state


def command(payload: Any, *, api: str = "http", signer: TaskIdSigner = SIGNER) -> ServiceCommand:
    return ServiceCommand(signer.sign(TaskRef("p-1", "case", api, "stage", 1)), "http", payload)


async def test_only_commands_with_our_task_id_for_http_are_sent(server: CountingServer) -> None:
    async with HttpAdapter(signer=SIGNER, allow_networks=["127.0.0.1"]) as http:
        for forged in (ServiceCommand("made-up", "http", {"url": server.url}),
                       command({"url": server.url}, signer=TaskIdSigner(["an-attackers-key-0123456789abcdef"])),
                       command({"url": server.url}, api="effects")):  # ours, but for another api
            with pytest.raises(TaskIdError):
                await http.handle(forged)
        assert server.requests == []
        await http.handle(command({"url": f"{server.url}/genuine"}))
    assert server.paths() == ["/genuine"]


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/", "http://localhost:{port}/", "http://[::ffff:127.0.0.1]:{port}/",
    "http://0.0.0.0:{port}/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:{port}/",
])
async def test_loopback_link_local_and_unspecified_addresses_are_refused_unless_allowed(
    server: CountingServer, url: str
) -> None:
    target = url.format(port=server.url.rsplit(":", 1)[1])
    async with HttpAdapter(signer=SIGNER) as http:
        with pytest.raises(RequestRefused, match=r"refused to connect to .*(loopback|link-local|unspecified)") as err:
            await http.handle(command({"url": target}))
    assert err.value.retryable is False
    assert server.requests == []


async def test_every_address_of_a_name_is_checked_and_the_checked_one_is_connected(server: CountingServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:  # a name server we control
        lookups.append(host)
        return {"mixed.test": ["93.184.216.34", "127.0.0.1"], "rebind.test": ["127.0.0.1"]}[host]

    async with HttpAdapter(signer=SIGNER, resolver=resolver) as http:
        with pytest.raises(RequestRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await http.handle(command({"url": f"http://mixed.test:{port}/"}))  # one bad address is enough
    assert server.requests == []
    async with HttpAdapter(signer=SIGNER, resolver=resolver, allow_networks=["127.0.0.0/8"]) as http:
        reply = await http.handle(command({"url": f"http://rebind.test:{port}/x"}))
    # One lookup, and the connection went to the address it returned: the system resolver knows no
    # 'rebind.test', so a second resolution (the rebinding window) would have failed the request.
    assert lookups == ["mixed.test", "rebind.test"] and reply["status"] == 200
    assert server.requests[0].headers["host"] == f"rebind.test:{port}"


async def test_allowed_hosts_and_the_hosts_of_a_secret_limit_where_a_request_goes(server: CountingServer) -> None:
    async with HttpAdapter(signer=SIGNER, allow_networks=["127.0.0.1"], secrets={"TOKEN": "t0k"},
                           hosts_by_secret={"TOKEN": ["api.example.com"]}) as http:
        with pytest.raises(RequestRefused, match=r"not one of the request's allowed_hosts"):
            await http.handle(command({"url": server.url, "allowed_hosts": ["api.example.com", "*.example.org"]}))
        with pytest.raises(RequestRefused, match=r"secret 'TOKEN' .* may only be sent to api\.example\.com"):
            await http.handle(command({"url": server.url, "headers": {"Authorization": {"secret": "TOKEN"}}}))
        assert server.requests == []
        await http.handle(command({"url": f"{server.url}/ok", "allowed_hosts": ["127.0.0.1"]}))
    assert server.paths() == ["/ok"]
    with pytest.raises(ConfigurationError, match="not a host name"):
        HttpAdapter(signer=SIGNER, hosts_by_secret={"TOKEN": ["bad host"]})
    with pytest.raises(ConfigurationError, match="not an IP address or network"):
        AddressPolicy.allowing(["localhost"])


@pytest.mark.parametrize(("payload", "reason"), [
    ({"url": "http://[::1"}, "invalid http url"),
    ({"url": "http://exa mple.com/"}, "holds a space or a control character"),
    ({"url": "http://127.0.0.1:99999/"}, "port 99999 is out of range"),
    ({"url": "http:///nohost"}, "is not a host name"),
    ({"url": "{url}", "headers": {"X-Note": "a\r\nInjected: yes"}}, "header 'X-Note'.*control character"),
    ({"url": "{url}", "headers": {"X-Note": "nul\x00"}}, "header 'X-Note'.*control character"),
    ({"url": "{url}", "headers": {"X-Note": "snow \u2603"}}, "header 'X-Note'.*outside latin-1"),
    ({"url": "{url}", "headers": {"Bad Name": "x"}}, "not a valid HTTP header name"),
    ({"url": "{url}", "headers": {"Authorization": {"secret": "SPLIT"}}}, "header 'Authorization'.*of secret 'SPLIT'"),
    ({"url": "{url}", "params": {"q": {"nested": 1}}}, "http param 'q' must be"),
])
async def test_invalid_urls_and_unencodable_headers_are_final_errors_with_a_reason(
    server: CountingServer, payload: dict[str, Any], reason: str
) -> None:
    payload = {**payload, "url": payload["url"].replace("{url}", server.url)}
    async with HttpAdapter(signer=SIGNER, allow_networks=["127.0.0.1"], secrets={"SPLIT": "a\nb"}) as http:
        with pytest.raises(ServiceError, match=reason) as err:
            await http.handle(command(payload))
    assert err.value.retryable is False
    assert "a\nb" not in err.value.message  # a secret's value is never shown
    assert server.requests == []


async def test_a_latin_1_header_value_is_sent_as_latin_1(server: CountingServer) -> None:
    async with HttpAdapter(signer=SIGNER, allow_networks=["127.0.0.1"]) as http:
        await http.handle(command({"url": server.url, "headers": {"X-Name": "Jos\u00e9"}}))
    assert server.requests[0].headers["x-name"].encode("latin-1") == "José".encode("latin-1")


def test_values_in_a_url_path_or_query_are_percent_encoded_and_cannot_change_its_target() -> None:
    expressions = Expressions()
    data = {"input": {"name": "../admin?x=1#frag/y", "dots": "..", "region": "eu"},
            "const": {"api": "https://api.example.com"}, "store": {}, "failure": None}
    payload = http_payload(expressions, {
        "url": "${const.api}/files/${input.name}/${input.dots}?q=${input.name}", "headers": {"X-N": "${input.dots}"},
    }, data)
    assert payload["url"] == ("https://api.example.com/files/..%2Fadmin%3Fx%3D1%23frag%2Fy/%2E%2E"
                              "?q=..%2Fadmin%3Fx%3D1%23frag%2Fy")
    host = http_payload(expressions, {"url": "https://${input.region}.example.com/x"}, data)
    assert host["url"] == "https://eu.example.com/x"
    data["input"]["region"] = "evil.com/#"
    with pytest.raises(ExpressionError, match="would change the url's host"):
        http_payload(expressions, {"url": "https://${input.region}.example.com/x"}, data)
    data["input"]["region"] = {"secret": "TOKEN"}  # process data cannot make a secret reference
    with pytest.raises(ExpressionError, match=r"header 'X' is .*not a string"):
        http_payload(expressions, {"url": "https://h/", "headers": {"X": "${input.region}"}}, data)
