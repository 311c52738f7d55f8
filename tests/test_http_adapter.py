"""The HTTP adapter against a real local HTTP server: keys, secrets, status classes, timeouts, limits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from business_cases.local_http import serve
from framework import ServiceError
from framework.http import HttpAdapter, idempotency_key
from framework.messages import ServiceCommand
from framework.taskid import TaskIdSigner, TaskRef
from tests.conftest import TEST_SECRET

SIGNER = TaskIdSigner([TEST_SECRET])
LOCAL = ["127.0.0.1"]  # the test server's address: loopback, so refused unless allowed


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    app = FastAPI()

    @app.api_route("/echo/{status}", methods=["GET", "POST"])
    async def echo(status: int, request: Request) -> Any:
        body = await request.body()
        seen.append({"headers": dict(request.headers), "body": body, "query": dict(request.query_params)})
        return JSONResponse({"got": status}, status_code=status, headers={"ETag": "v1", "X-Other": "no"})

    @app.get("/text")
    async def text() -> Any:
        return PlainTextResponse("plain words")

    @app.get("/big")
    async def big() -> Any:
        return PlainTextResponse("x" * 5000)

    @app.get("/slow")
    async def slow() -> Any:
        await asyncio.sleep(2)
        return {}

    with serve(app) as url:
        yield url, seen


def task_id(name: str) -> str:
    return SIGNER.sign(TaskRef(name, "case", "http", "stage", 1))


def command(payload: Any, task: str = "task-1") -> ServiceCommand:
    return ServiceCommand(task_id(task), "http", payload)


async def test_request_reply_key_and_secret(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = server
    async with HttpAdapter(signer=SIGNER, allow_networks=LOCAL, secrets={"TOKEN": "Bearer t0k"}) as http:
        reply = await http.handle(command({
            "method": "POST", "url": f"{url}/echo/201", "params": {"q": "1"}, "json": {"a": [1, 2]},
            "headers": {"Authorization": {"secret": "TOKEN"}, "X-Plain": "yes"},
        }))
        again = await http.handle(command({"url": f"{url}/echo/200"}))
        text = await http.handle(command({"url": f"{url}/text"}, task="task-2"))
    assert reply == {"status": 201, "headers": {"content-type": "application/json", "etag": "v1"}, "body": {"got": 201}}
    first, second = seen
    key = idempotency_key(task_id("task-1"))
    assert first["headers"]["idempotency-key"] == second["headers"]["idempotency-key"] == key
    assert first["headers"]["authorization"] == "Bearer t0k" and first["headers"]["x-plain"] == "yes"
    assert first["body"] == b'{"a":[1,2]}' and first["headers"]["content-type"] == "application/json"
    assert first["query"] == {"q": "1"}
    assert again["status"] == 200 and text["body"] == "plain words"
    assert idempotency_key(task_id("task-1")) != idempotency_key(task_id("task-2"))


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (500, True), (429, True), (404, False), (422, False)])
async def test_error_statuses_are_classified(server: tuple[str, list[dict[str, Any]]], status: int,
                                             retryable: bool) -> None:
    url, _ = server
    async with HttpAdapter(signer=SIGNER, allow_networks=LOCAL) as http:
        with pytest.raises(ServiceError) as raised:
            await http.handle(command({"url": f"{url}/echo/{status}"}))
        assert raised.value.retryable is retryable
        assert f"HTTP {status}" in raised.value.message
        ok = await http.handle(command({"url": f"{url}/echo/404", "ok_statuses": ["2xx", 404]}))
    assert ok["status"] == 404 and ok["body"] == {"got": 404}


async def test_timeouts_and_refused_connections_are_retryable(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, _ = server
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    async with HttpAdapter(signer=SIGNER, allow_networks=LOCAL) as http:
        with pytest.raises(ServiceError, match=r"no response within 0\.3 s") as slow:
            await http.handle(command({"url": f"{url}/slow", "timeout_s": 0.3}))
        with pytest.raises(ServiceError, match="ConnectError") as refused:
            await http.handle(command({"url": f"http://127.0.0.1:{closed}/"}))
    assert slow.value.retryable and refused.value.retryable


async def test_bad_requests_missing_secrets_and_big_bodies_are_final(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = server
    async with HttpAdapter(signer=SIGNER, allow_networks=LOCAL, secrets={}, max_body_bytes=1024) as http:
        for payload, message in [
            ("not an object", "must be an object"),
            ({"url": "file:///etc/passwd"}, "http:// or https://"),
            ({"url": f"{url}/echo/200", "method": "TRACE"}, "http method 'TRACE'"),
            ({"url": f"{url}/echo/200", "data": 1}, "unknown http request fields: data"),
            ({"url": f"{url}/echo/200", "headers": {"A": {"secret": "X", "more": 1}}}, "must be {\"secret\""),
            ({"url": f"{url}/echo/200", "headers": {"A": {"secret": "NOPE"}}},
             "secret 'NOPE' for header 'A' is not configured: set STAGEFLOW_HTTP_SECRET_NOPE"),
            ({"url": f"{url}/big"}, "response body of 5000 bytes is over the 1024-byte limit"),
        ]:
            with pytest.raises(ServiceError, match=message) as raised:
                await http.handle(command(payload))
            assert raised.value.retryable is False
    assert seen == []  # nothing was sent for a bad description or a missing secret


def test_secrets_come_from_the_environment_at_send_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from framework.http import env_secrets

    lookup = env_secrets()
    assert lookup("shop") is None
    monkeypatch.setenv("STAGEFLOW_HTTP_SECRET_SHOP", "s")
    assert lookup("shop") == "s"


async def test_error_texts_keep_no_credentials_or_query_values_from_the_url(
    server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = server
    secret_url = url.replace("http://", "http://alice:hunter2@") + "/echo/500?token=s3cret&page=2"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    async with HttpAdapter(signer=SIGNER, allow_networks=LOCAL) as http:
        with pytest.raises(ServiceError) as failed:
            await http.handle(command({"url": secret_url}))
        with pytest.raises(ServiceError) as refused:
            await http.handle(command({"url": f"http://bob:pa55@127.0.0.1:{closed}/x?key=abc"}))
    for error in (failed.value, refused.value):  # these texts go into `failures` and the status API
        assert not any(s in error.message for s in ("alice", "hunter2", "s3cret", "bob", "pa55", "abc")), error.message
    assert "/echo/500?…: HTTP 500" in failed.value.message and "GET http://127.0.0.1:" in failed.value.message
