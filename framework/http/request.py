"""An ``http`` command's payload, checked once into a typed ``HttpRequest``.

Everything a request could be refused for is found here, before anything is sent, and is a final
``ServiceError`` whose text says what is wrong (the process sees it as its step's failure): a URL that does not
parse or is not http(s) with a host and a valid port, a header name that is no HTTP token, a header value with
NUL, CR, LF or another control character, or one outside latin-1 (HTTP headers are bytes; httpx would crash on
it or send it broken), query parameters that are not scalars. Sending the same description again cannot help.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from framework.errors import ServiceError

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DEFAULT_OK_STATUSES: tuple[int | str, ...] = ("2xx", "3xx")
FIELDS = frozenset({"method", "url", "params", "headers", "json", "timeout_s", "ok_statuses", "allowed_hosts"})
SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_STATUS_CLASS = re.compile(r"^[1-5]xx$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")  # RFC 9110 field-name
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed in a field value, nothing else below 0x20
_HOST = re.compile(r"^[a-z0-9_.-]{1,253}$|^[0-9a-f:.]+$")  # a name (IDNA-encoded already) or an IP literal
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A header value resolved where the request is sent: ``{"secret": "NAME"}``."""

    name: str


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: httpx.URL
    params: Mapping[str, Any] | None
    headers: tuple[tuple[str, str | SecretRef], ...]
    json: Any
    timeout_s: float | None
    ok_statuses: tuple[int | str, ...]
    allowed_hosts: tuple[str, ...]  # empty: any host the address policy allows

    @property
    def where(self) -> str:
        """The request as error texts show it (they are kept in ``failures``): no credentials, no query values."""
        shown = self.url.copy_with(userinfo=b"", query=None, fragment=None)
        return f"{self.method} {shown}{'?…' if self.url.query else ''}"


def header_bytes(name: str, value: str, *, shown: str | None = None) -> bytes:
    """``value`` as the bytes HTTP sends, or a final error naming the header (``shown`` stands in for a secret)."""
    described = shown or repr(value[:60])
    if _CONTROL.search(value):
        raise ServiceError(f"header {name!r}: value {described} holds a control character (NUL, CR, LF...), "
                           "which would end or split the header")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ServiceError(f"header {name!r}: value {described} has characters outside latin-1, which HTTP "
                           "headers cannot carry (percent-encode or base64 it)") from None


def parse_request(payload: Any) -> HttpRequest:
    """Check the request description; a bad one is a final error (sending it again cannot help)."""
    if not isinstance(payload, Mapping):
        raise ServiceError("an http command's payload must be an object with at least 'url'")
    unknown = set(payload) - FIELDS
    if unknown:
        raise ServiceError(f"unknown http request fields: {', '.join(sorted(unknown))}")
    method = str(payload.get("method") or "GET").upper()
    if method not in METHODS:
        raise ServiceError(f"http method {method!r} is not one of {', '.join(sorted(METHODS))}")
    return HttpRequest(
        method=method, url=_url(payload.get("url")), params=_params(payload.get("params")),
        headers=_headers(payload.get("headers") or {}), json=payload.get("json"),
        timeout_s=_timeout(payload.get("timeout_s")), ok_statuses=_ok_statuses(payload.get("ok_statuses")),
        allowed_hosts=_hosts(payload.get("allowed_hosts")),
    )


def _url(url: Any) -> httpx.URL:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ServiceError(f"http url must be an http:// or https:// URL, got {str(url)[:200]!r}")
    if _CONTROL.search(url) or " " in url:
        raise ServiceError(f"invalid http url {url[:200]!r}: it holds a space or a control character")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ServiceError(f"invalid http url {url[:200]!r}: {exc}") from None
    host = parsed.raw_host.decode("ascii", "replace").lower()
    if not _HOST.match(host):
        raise ServiceError(f"invalid http url {url[:200]!r}: {host!r} is not a host name")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ServiceError(f"invalid http url {url[:200]!r}: port {parsed.port} is out of range")
    return parsed


def _params(params: Any) -> Mapping[str, Any] | None:
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise ServiceError("http params must be an object")
    for name, value in params.items():
        values = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, _SCALARS) for v in values):
            raise ServiceError(f"http param {name!r} must be a string, number, boolean, null or a list of them")
    return params


def _headers(headers: Any) -> tuple[tuple[str, str | SecretRef], ...]:
    if not isinstance(headers, Mapping):
        raise ServiceError("http headers must be an object")
    checked: list[tuple[str, str | SecretRef]] = []
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ServiceError(f"header name {name[:60]!r} is not a valid HTTP header name")
        if isinstance(value, Mapping):
            secret = value.get("secret")
            if not (len(value) == 1 and isinstance(secret, str) and SECRET_NAME.match(secret)):
                raise ServiceError(f"header {name!r}: an object value must be {{\"secret\": \"NAME\"}}")
            checked.append((name, SecretRef(secret)))
        elif isinstance(value, str):
            header_bytes(name, value)
            checked.append((name, value))
        else:
            raise ServiceError(f"header {name!r} must be a string or {{\"secret\": \"NAME\"}}")
    return tuple(checked)


def _timeout(timeout_s: Any) -> float | None:
    if timeout_s is not None and not (
        isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool) and 0 < timeout_s <= 3600
    ):
        raise ServiceError("http timeout_s must be a number of seconds in (0, 3600]")
    return None if timeout_s is None else float(timeout_s)


def _ok_statuses(ok: Any) -> tuple[int | str, ...]:
    if ok is None:
        return DEFAULT_OK_STATUSES
    if not (isinstance(ok, list) and ok and all(
        (isinstance(r, int) and 100 <= r <= 599) or (isinstance(r, str) and _STATUS_CLASS.match(r)) for r in ok
    )):
        raise ServiceError("http ok_statuses must be a list of status codes or classes like '2xx'")
    return tuple(ok)


def _hosts(hosts: Any) -> tuple[str, ...]:
    if hosts is None:
        return ()
    if not (isinstance(hosts, list) and all(isinstance(h, str) and h for h in hosts)):
        raise ServiceError("http allowed_hosts must be a list of host names")
    return tuple(h.lower() for h in hosts)
