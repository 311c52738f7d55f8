"""The built-in HTTP adapter: the service behind ``ctx.call("http", request)`` and blueprint ``api_call`` steps.

A command's payload describes one request (checked by ``framework/http/request.py``)::

    {"method": "POST", "url": "https://api.example.com/jobs", "params": {...},
     "headers": {"Authorization": {"secret": "JOBS_TOKEN"}}, "json": {...},
     "timeout_s": 10, "ok_statuses": ["2xx", 404], "allowed_hosts": ["api.example.com"]}

The reply's data is ``{"status", "headers" (a few), "body"}`` (JSON when the response is JSON, else text).

Promises:

* **Only our commands**: a command runs only if its taskId is one our keys signed, for the ``http`` api; any
  other is refused with a ``TaskIdError``, which the service SDK parks with its reason. So broker access alone
  cannot make the adapter send a request, let alone one with a configured secret.
* **Only allowed places**: loopback, link-local, unspecified and multicast addresses are refused unless the
  operator allows their network (``framework/http/policy.py``), checked on the address actually connected
  (``framework/http/transport.py``). A request's ``allowed_hosts`` and a secret's hosts
  (``STAGEFLOW_HTTP_HOSTS_BY_SECRET``) limit where it may go; redirects are never followed; proxies from the
  environment are not used (they would bypass the address check).
* **Idempotency**: every request carries an ``Idempotency-Key`` derived from the command's taskId. The
  engine re-sends a retried call with the *same* taskId, and a command redelivered after the adapter was
  killed mid-request is sent again with it too, so the API can dedupe every attempt of one call (the adapter
  keeps no inbox of its own: only the API knows whether a request it received took effect).
* **Secrets never enter the process document**: a header value ``{"secret": "NAME"}`` travels as that
  reference and is resolved here, at send time, from ``STAGEFLOW_HTTP_SECRET_NAME`` (or the mapping given).
* **Errors are classified**: 5xx, 408, 429, connection errors and timeouts are retryable (the stage's
  ``Retry`` re-sends); any other status outside ``ok_statuses`` is final. A bad request description (URL,
  header, fields), a refused address or host, or a response too large for a reply message is final too, so
  nothing is redelivered for ever and the process sees the reason.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
import orjson

from framework.errors import ServiceError, TaskIdError
from framework.http.policy import AddressPolicy, RequestRefused, check_host_patterns, host_allowed
from framework.http.request import HttpRequest, SecretRef, header_bytes, parse_request
from framework.http.transport import GuardedTransport, Resolver
from framework.messages import ServiceCommand
from framework.service.inbox import ServiceTransaction
from framework.taskid import TaskIdSigner

SECRET_ENV_PREFIX = "STAGEFLOW_HTTP_SECRET_"
KEPT_HEADERS = ("content-type", "location", "etag", "last-modified", "retry-after", "x-request-id")
_RETRYABLE_STATUSES = frozenset({408, 425, 429})

SecretLookup = Callable[[str], str | None]


def idempotency_key(task_id: str) -> str:
    """The key sent with every attempt of one call: a hash, so the signed taskId itself never leaves."""
    return "sf-" + hashlib.sha256(task_id.encode()).hexdigest()[:40]


def env_secrets(environ: Mapping[str, str] | None = None) -> SecretLookup:
    """Secrets from ``STAGEFLOW_HTTP_SECRET_<NAME>``, read when a request is sent (not at start)."""

    def lookup(name: str) -> str | None:
        return (os.environ if environ is None else environ).get(SECRET_ENV_PREFIX + name.upper())

    return lookup


class HttpAdapter:
    """The handler of the ``http`` service. One ``httpx.AsyncClient`` per adapter, so connections are pooled.

    Use it as an async context manager (or call ``aclose``), and host it with
    ``Service("http", adapter.handle, broker=broker, inbox=StatelessInbox(), signer=signer)`` — workers do
    that for you when ``STAGEFLOW_HTTP_ADAPTER`` is on (the default), ``stageflow http-adapter`` on its own.

    ``signer``: the engine's taskId signer (only commands it verifies are sent). ``allow_networks``: addresses
    or CIDR networks that may be reached though loopback or link-local (``["127.0.0.1"]`` for a local test
    server). ``hosts_by_secret``: secret name -> the hosts it may be sent to (a secret not named goes to any
    host the request allows).
    """

    api = "http"

    def __init__(
        self, *, signer: TaskIdSigner, secrets: SecretLookup | Mapping[str, str] | None = None,
        allow_networks: Iterable[str] = (), hosts_by_secret: Mapping[str, Sequence[str]] | None = None,
        default_timeout_s: float = 30.0, max_body_bytes: int = 100_000, max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None, resolver: Resolver | None = None,
    ) -> None:
        self._signer = signer
        self._secret: SecretLookup
        if isinstance(secrets, Mapping):
            table = dict(secrets)
            self._secret = table.get
        else:
            self._secret = secrets or env_secrets()
        self._hosts_by_secret = {
            name.upper(): check_host_patterns(hosts, f"hosts of secret {name!r}")
            for name, hosts in (hosts_by_secret or {}).items()
        }
        self.default_timeout_s = default_timeout_s
        self.max_body_bytes = max_body_bytes
        guarded = transport or GuardedTransport(
            AddressPolicy.allowing(allow_networks), max_connections=max_connections, resolver=resolver)
        # trust_env=False: a proxy from HTTP(S)_PROXY would be mounted in front of the guarded transport.
        self._client = httpx.AsyncClient(transport=guarded, follow_redirects=False, trust_env=False)

    async def __aenter__(self) -> HttpAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def handle(self, command: ServiceCommand, tx: ServiceTransaction | None = None) -> dict[str, Any]:
        if self._signer.verify(command.task_id).api != self.api:  # raises TaskIdError if not signed by us
            raise TaskIdError(f"the command's taskId is for another api than {self.api!r}")
        return await self.send(command.task_id, command.payload)

    async def send(self, task_id: str, payload: Any) -> dict[str, Any]:
        """The request a command holds, for a taskId the caller has verified (``handle``, or the ``notify``
        service's webhooks, whose own taskId its SDK verified)."""
        request = parse_request(payload)
        if request.allowed_hosts and not host_allowed(request.url.host, request.allowed_hosts):
            raise RequestRefused(f"{request.where}: host {request.url.host!r} is not one of the request's "
                                 f"allowed_hosts ({', '.join(request.allowed_hosts)})")
        headers = httpx.Headers({"Idempotency-Key": idempotency_key(task_id)})
        headers.update(self._headers(request))  # a key the request names wins
        timeout_s = request.timeout_s or self.default_timeout_s
        if request.json is not None and "content-type" not in headers:
            headers["Content-Type"] = "application/json"
        try:
            response = await self._client.request(
                request.method, request.url, params=request.params, headers=headers,
                content=orjson.dumps(request.json) if request.json is not None else None, timeout=timeout_s,
            )
        except httpx.TimeoutException:
            raise ServiceError(f"{request.where}: no response within {timeout_s:g} s", retryable=True) from None
        except httpx.TransportError as exc:
            raise ServiceError(f"{request.where}: {type(exc).__name__}: {exc}", retryable=True) from None
        return self._reply(request, response)

    def _headers(self, request: HttpRequest) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        for name, value in request.headers:
            if isinstance(value, SecretRef):
                hosts = self._hosts_by_secret.get(value.name.upper())
                if hosts is not None and not host_allowed(request.url.host, hosts):
                    raise RequestRefused(f"{request.where}: secret {value.name!r} (header {name!r}) may only be "
                                         f"sent to {', '.join(hosts)}")
                secret = self._secret(value.name)
                if secret is None:
                    raise ServiceError(
                        f"secret {value.name!r} for header {name!r} is not configured: set "
                        f"{SECRET_ENV_PREFIX}{value.name.upper()} where the http adapter runs"
                    )
                encoded = header_bytes(name, secret, shown=f"of secret {value.name!r}")
            else:
                encoded = header_bytes(name, value)
            headers.append((name.encode("ascii"), encoded))
        return headers

    def _reply(self, request: HttpRequest, response: httpx.Response) -> dict[str, Any]:
        where = request.where
        status = response.status_code
        if len(response.content) > self.max_body_bytes:
            raise ServiceError(f"{where}: response body of {len(response.content)} bytes is over the "
                               f"{self.max_body_bytes}-byte limit of a reply")
        body = _body(response)
        if not _status_ok(status, request.ok_statuses):
            retryable = status >= 500 or status in _RETRYABLE_STATUSES
            detail = body if isinstance(body, str) else orjson.dumps(body).decode()
            raise ServiceError(f"{where}: HTTP {status}: {detail[:300]}", retryable=retryable)
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        return {"status": status, "headers": kept, "body": body}


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    if "json" not in response.headers.get("content-type", ""):
        return response.text
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:  # a server that says JSON and sends something else: keep the text
        return response.text


def _status_ok(status: int, ok_statuses: Sequence[int | str]) -> bool:
    return any(
        status == rule if isinstance(rule, int) else str(status)[0] == rule[0] for rule in ok_statuses
    )
