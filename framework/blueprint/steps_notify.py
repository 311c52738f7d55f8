"""The ``notify`` step: a webhook, an email or a log line, sent once per taskId by the ``notify`` service.

::

    - {name: tell, kind: notify, channel: email, to: "${input.email}",
       subject: "Order ${input.order_id} shipped", body: "Hello ${input.name}, ..."}
    - {name: hook, kind: notify, channel: webhook,
       request: {url: "${const.hooks}/shipped", body: {order: "${input.order_id}"}}}   # POST unless method says
    - {name: note, kind: notify, channel: log, level: info, message: "shipped ${input.order_id}",
       fields: {order: "${input.order_id}"}}

Subjects, bodies, messages and requests are templates of the expression language (``${...}``), rendered in
the stage: user data is never handed to Python's ``format``. ``keep`` reads the reply: a webhook's
``{status, headers, body}``, an email's ``{message_id, accepted, refused}``, a log's ``{logged}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from framework.blueprint.expressions import BASE_ROOTS, ExpressionError
from framework.context import StageContext
from framework.notify.service import NOTIFY_API

if TYPE_CHECKING:
    from framework.blueprint.step_kinds import CheckContext, ExpressionField, Runtime, StepBody

FIELDS = {"webhook": ("request",), "email": ("to", "cc", "subject", "body"), "log": ("message", "level", "fields")}
REQUIRED = {"webhook": ("request",), "email": ("to", "subject", "body"), "log": ("message",)}
_TEMPLATES = {"webhook": (), "email": ("to", "cc", "subject", "body"), "log": ("message", "fields")}
_NOT_TEMPLATES = ("method", "timeout_s", "ok_statuses")  # of a request; a secret reference is no template either


def expression_fields(step: dict[str, Any]) -> Iterator[ExpressionField]:
    channel = step["channel"]
    if channel == "webhook" and "request" in step:
        request = {k: v for k, v in step["request"].items() if k not in _NOT_TEMPLATES}
        yield ["request"], request, BASE_ROOTS, True
    for key in _TEMPLATES[channel]:
        if key in step:
            yield [key], step[key], BASE_ROOTS, True


def check(step: dict[str, Any], index: int, ctx: CheckContext) -> Iterator[str]:
    channel = step["channel"]
    a = "an" if channel[0] in "aeiou" else "a"
    for key in REQUIRED[channel]:
        if key not in step:
            yield f"{ctx.where(['steps', index])}: {a} {channel} notification needs {key!r}"
    for other, keys in FIELDS.items():
        for key in keys:
            if other != channel and key in step and key not in FIELDS[channel]:
                yield (f"{ctx.where(['steps', index, key])}: {a} {channel} notification has no {key!r} "
                       f"(that is a field of channel {other!r})")


def body(step: dict[str, Any], me: str, target: str | None, rt: Runtime) -> StepBody:
    channel = step["channel"]

    def run(ctx: StageContext) -> None:
        if ctx.reply is None:
            ctx.call(NOTIFY_API, _payload(step, channel, rt, rt.data(ctx)), resume=me)
            return
        rt.keep(ctx, step.get("keep") or {}, reply=ctx.reply.data)
        rt.go_on(ctx, target)

    return run


def _payload(step: dict[str, Any], channel: str, rt: Runtime, data: dict[str, Any]) -> dict[str, Any]:
    if channel == "webhook":
        return {"channel": channel, "request": rt.http_request({"method": "POST", **step["request"]}, data)}
    if channel == "email":
        to, cc = rt.render(step["to"], data), rt.render(step.get("cc", []), data)
        return {"channel": channel, "to": _addresses(to, "to"), "cc": _addresses(cc, "cc"),
                "subject": _text(rt.render(step["subject"], data), "subject"),
                "body": _text(rt.render(step["body"], data), "body")}
    fields = rt.render(step.get("fields") or {}, data)
    return {"channel": channel, "level": step.get("level", "info"),
            "message": _text(rt.render(step["message"], data), "message"), "fields": fields}


def _text(value: Any, field: str) -> str:
    """A rendered template as text: a number or object in its JSON form; a null is an error, not "None"."""
    if value is None:
        raise ExpressionError(f"the {field} is null")
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _addresses(value: Any, field: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(a, str) and a for a in items):
        raise ExpressionError(f"{field} is {value!r}, not an address or a list of addresses")
    return items
