"""An ``api_call`` request (inline, or from an API definition) rendered into the ``http`` command's payload.

What goes into a URL is encoded by where it lands, so process data can never change a request's target:

* a value that *starts* the URL (``${const.crm_api}/leads``) is its base and is written as it is;
* a value in the host part (``https://${const.region}.api.example.com``) may not hold ``/ ? # @ \\`` or spaces;
* any other value, in the path or the query, is percent-encoded whole (``/`` ``?`` ``#`` ``&`` ``=`` ``%``
  included), and a value of only dots is encoded too, so ``..`` is no path segment. ``/files/${input.name}``
  with the name ``../admin?x#y`` requests ``/files/..%2Fadmin%3Fx%23y``.

Header values must render to strings (or numbers): a secret reference (``{"secret": NAME}``) is only ever the
blueprint's own literal, never something process data produced. The command carries the reference; the
adapter resolves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from framework.blueprint.expressions import ExpressionError, Expressions, template_parts

_NOT_IN_HOST = frozenset("/?#@\\ \t\r\n")
_PASSED = ("timeout_s", "ok_statuses", "allowed_hosts")


def http_payload(expressions: Expressions, request: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``http`` command payload for ``request`` over ``data`` (``body`` is sent as JSON)."""
    url = render_url(expressions, request["url"], data)
    payload: dict[str, Any] = {"method": request.get("method", "GET"), "url": url}
    if "params" in request:
        payload["params"] = expressions.render(request["params"], data)
    if "headers" in request:
        headers = request["headers"].items()
        payload["headers"] = {name: _header(expressions, name, value, data) for name, value in headers}
    if "body" in request:
        payload["json"] = expressions.render(request["body"], data)
    payload.update({key: request[key] for key in _PASSED if key in request})
    return payload


def render_url(expressions: Expressions, template: str, data: Mapping[str, Any]) -> str:
    url = ""
    for text, is_expression in template_parts(template):
        if not is_expression:
            url += text
            continue
        value = _scalar(expressions.evaluate(text, data), f"${{{text}}} in the url")
        if not url:  # the base of the URL (a constant, typically)
            url = value
        elif "/" not in url.partition("://")[2] and "?" not in url and "#" not in url:  # in the host part
            if _NOT_IN_HOST & set(value):
                raise ExpressionError(f"${{{text}}} is {value[:80]!r}, which would change the url's host")
            url += value
        else:
            encoded = quote(value, safe="")
            url += encoded.replace(".", "%2E") if set(encoded) <= {"."} else encoded
    return url


def _header(expressions: Expressions, name: str, value: Any, data: Mapping[str, Any]) -> Any:
    if isinstance(value, Mapping):  # the blueprint's literal {"secret": NAME} (the schema allows no other object)
        return dict(value)
    return _scalar(expressions.render(value, data), f"header {name!r}")


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, dict | list):
        raise ExpressionError(f"{where} is {orjson.dumps(value).decode()[:80]}, not a string or a number")
    return orjson.dumps(value).decode()  # a number or a boolean, as JSON writes it
