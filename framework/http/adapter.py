"""The built-in HTTP adapter: the service behind ``ctx.call("http", request)`` and blueprint ``api_call`` steps.

A command's payload describes one request::

    {"method": "POST", "url": "https://api.example.com/jobs", "params": {...},
     "headers": {"Authorization": {"secret": "JOBS_TOKEN"}}, "json": {...},
     "timeout_s": 10, "ok_statuses": ["2xx", 404]}

The reply's data is ``{"status", "headers" (a few), "body"}`` (JSON when the response is JSON, else text).

Promises:

* **Idempotency**: every request carries an ``Idempotency-Key`` derived from the command's taskId. The
  engine re-sends a retried call with the *same* taskId, so every attempt of one call carries the same key
  and the API can dedupe it (the adapter keeps no inbox of its own: the API is the one place that knows).
* **Secrets never enter the process document**: a header value ``{"secret": "NAME"}`` travels as that
  reference and is resolved here, at send time, from ``STAGEFLOW_HTTP_SECRET_NAME`` (or the mapping given).
* **Errors are classified**: 5xx, 408, 429, connection errors and timeouts are retryable (the stage's
  ``Retry`` re-sends); any other status outside ``ok_statuses`` is final. A bad request description or a
  response too large for a reply message is final too, so nothing is redelivered for ever.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson

from framework.errors import ServiceError
from framework.messages import ServiceCommand
from framework.service.inbox import ServiceTransaction

SECRET_ENV_PREFIX = "STAGEFLOW_HTTP_SECRET_"
DEFAULT_OK_STATUSES = ("2xx", "3xx")
KEPT_HEADERS = ("content-type", "location", "etag", "last-modified", "retry-after", "x-request-id")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_STATUS_CLASS = re.compile(r"^[1-5]xx$")

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
    ``Service("http", adapter.handle, broker=broker, inbox=StatelessInbox())`` — workers do that for you
    when ``STAGEFLOW_HTTP_ADAPTER`` is on (the default).
    """

    api = "http"

    def __init__(
        self, *, secrets: SecretLookup | Mapping[str, str] | None = None, default_timeout_s: float = 30.0,
        max_body_bytes: int = 100_000, max_connections: int = 100, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._secret: SecretLookup
        if isinstance(secrets, Mapping):
            table = dict(secrets)
            self._secret = table.get
        else:
            self._secret = secrets or env_secrets()
        self.default_timeout_s = default_timeout_s
        self.max_body_bytes = max_body_bytes
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections), transport=transport, follow_redirects=False,
        )

    async def __aenter__(self) -> HttpAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def handle(self, command: ServiceCommand, tx: ServiceTransaction | None = None) -> dict[str, Any]:
        request = _parse_request(command.payload)
        headers = httpx.Headers({"Idempotency-Key": idempotency_key(command.task_id)})
        headers.update(self._headers(request.get("headers") or {}))  # a key the request names wins
        timeout_s = request.get("timeout_s") or self.default_timeout_s
        body = request.get("json")
        if body is not None and "content-type" not in headers:
            headers["Content-Type"] = "application/json"
        try:
            response = await self._client.request(
                request["method"], request["url"], params=request.get("params"), headers=headers,
                content=orjson.dumps(body) if body is not None else None, timeout=timeout_s,
            )
        except httpx.TimeoutException:
            raise ServiceError(f"{_where(request)}: no response within {timeout_s:g} s", retryable=True) from None
        except httpx.TransportError as exc:
            raise ServiceError(f"{_where(request)}: {type(exc).__name__}: {exc}", retryable=True) from None
        return self._reply(request, response)

    def _headers(self, given: Mapping[str, Any]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in given.items():
            if isinstance(value, Mapping):
                secret = self._secret(str(value["secret"]))
                if secret is None:
                    raise ServiceError(
                        f"secret {value['secret']!r} for header {name!r} is not configured: set "
                        f"{SECRET_ENV_PREFIX}{str(value['secret']).upper()} where the http adapter runs"
                    )
                headers[name] = secret
            else:
                headers[name] = value
        return headers

    def _reply(self, request: Mapping[str, Any], response: httpx.Response) -> dict[str, Any]:
        where = _where(request)
        status = response.status_code
        if len(response.content) > self.max_body_bytes:
            raise ServiceError(f"{where}: response body of {len(response.content)} bytes is over the "
                               f"{self.max_body_bytes}-byte limit of a reply")
        body = _body(response)
        if not _status_ok(status, request.get("ok_statuses") or DEFAULT_OK_STATUSES):
            retryable = status >= 500 or status in _RETRYABLE_STATUSES
            detail = body if isinstance(body, str) else orjson.dumps(body).decode()
            raise ServiceError(f"{where}: HTTP {status}: {detail[:300]}", retryable=retryable)
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        return {"status": status, "headers": kept, "body": body}


def _where(request: Mapping[str, Any]) -> str:
    """The request as error texts show it (they are kept in ``failures``): no credentials, no query values."""
    url = httpx.URL(request["url"])
    shown = url.copy_with(userinfo=b"", query=None, fragment=None)
    return f"{request['method']} {shown}{'?…' if url.query else ''}"


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    if "json" not in response.headers.get("content-type", ""):
        return response.text
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:  # a server that says JSON and sends something else: keep the text
        return response.text


def _status_ok(status: int, ok_statuses: Any) -> bool:
    return any(
        status == rule if isinstance(rule, int) else str(status)[0] == rule[0] for rule in ok_statuses
    )


def _parse_request(payload: Any) -> dict[str, Any]:
    """Check the request description; a bad one is a final error (sending it again cannot help)."""
    if not isinstance(payload, Mapping):
        raise ServiceError("an http command's payload must be an object with at least 'url'")
    unknown = set(payload) - {"method", "url", "params", "headers", "json", "timeout_s", "ok_statuses"}
    if unknown:
        raise ServiceError(f"unknown http request fields: {', '.join(sorted(unknown))}")
    request = dict(payload)
    request["method"] = str(request.get("method") or "GET").upper()
    if request["method"] not in _METHODS:
        raise ServiceError(f"http method {request['method']!r} is not one of {', '.join(sorted(_METHODS))}")
    url = request.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ServiceError(f"http url must be an http:// or https:// URL, got {url!r}")
    headers = request.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise ServiceError("http headers must be an object")
    for name, value in headers.items():
        if isinstance(value, Mapping):
            secret = value.get("secret")
            if not (len(value) == 1 and isinstance(secret, str) and _SECRET_NAME.match(secret)):
                raise ServiceError(f"header {name!r}: an object value must be {{\"secret\": \"NAME\"}}")
        elif not isinstance(value, str):
            raise ServiceError(f"header {name!r} must be a string or {{\"secret\": \"NAME\"}}")
    params = request.get("params")
    if params is not None and not isinstance(params, Mapping):
        raise ServiceError("http params must be an object")
    timeout_s = request.get("timeout_s")
    if timeout_s is not None and not (isinstance(timeout_s, int | float) and 0 < timeout_s <= 3600):
        raise ServiceError("http timeout_s must be a number of seconds in (0, 3600]")
    ok = request.get("ok_statuses")
    if ok is not None and not (
        isinstance(ok, list) and ok
        and all((isinstance(r, int) and 100 <= r <= 599) or (isinstance(r, str) and _STATUS_CLASS.match(r)) for r in ok)
    ):
        raise ServiceError("http ok_statuses must be a list of status codes or classes like '2xx'")
    return request
