"""Compiling a checked blueprint into a ``BusinessCase`` subclass that runs on the ordinary engine.

Each level of steps becomes one stage, in order; the class is made with ``type(...)`` and goes through the
same definition checks as a hand-written case, so a blueprint process has the same document, status API,
retries, deadlines and guarantees. How each step kind runs:

* ``api_call`` / ``call``: the stage sends ``ctx.call("http" | api, ...)`` and names *itself* as the stage
  the reply resumes; resumed with the reply, it keeps the fields and goes on. A retry of the call re-sends
  the same command (same taskId, so the same ``Idempotency-Key``); a failed reply takes the step's
  ``on_failed``/``optional`` path. While it waits, the status shows the step's own name.
* ``fan_out`` and a level of several independent steps: ``ctx.fan_out(...)`` resuming the same stage, which
  then reads ``ctx.fan_in``. Independent steps run level by level: a level starts when the whole previous
  level is done.
* ``wait_for_event`` and ``approval``: ``ctx.wait_for(...)`` resuming the same stage, which then reads
  ``ctx.event``. An approval waits for the event ``approval:<step>`` (``Signals.decide``: approve or reject, with a
  comment), keeps the decision in the store under the step's name and goes on, to ``on_reject``, or fails;
  its deadline goes to ``on_expiry``. Both wait once by default (``retry`` attempts 1): a timeout takes the
  failure path at once.
* ``wait``, ``transform``, ``validate``, ``condition``, ``complete``, ``fail``: computed in the stage.

A blueprint's ``schedules`` become the class's ``schedules`` (checked on load like steps), so workers that
load the blueprint sync and fire them exactly as they do a Python case's.

An expression that fails at run time (a null in a URL, a wrong type) fails its step at once: running the
same expression on the same data again cannot help, so it goes straight to ``on_failed``/``optional``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from framework.blueprint.apis import ApiDefinition, expand_apis
from framework.blueprint.expressions import ExpressionError, Expressions, truthy
from framework.blueprint.fields import check_value, model_from_fields
from framework.blueprint.loader import EVENT_KINDS, CheckedBlueprint, Level, check_blueprint, read_blueprint
from framework.blueprint.requests import http_payload
from framework.blueprint.step_kinds import STEP_KINDS
from framework.case import BusinessCase, stage
from framework.context import APPROVAL_PREFIX, StageContext
from framework.errors import NonRetryableError
from framework.fanout import FanItem
from framework.policies import Retry
from framework.schedules import Schedule

DEFAULT_RETRY = Retry(attempts=3, backoff_s=1.0, max_backoff_s=60.0)
WAIT_ONCE = Retry(attempts=1)  # an event step whose time is up takes its failure path, it does not wait again
HTTP_API = "http"
_MAX_ERRORS_SHOWN = 10

StepBody = Callable[[StageContext], None]


def compile_blueprint(
    source: str | Any, *, functions: Mapping[str, Callable[..., Any]] | None = None,
    constants: Mapping[str, Any] | None = None, apis: Mapping[str, ApiDefinition] | None = None,
    connections: frozenset[str] | None = None,
) -> type[BusinessCase]:
    """Read, check and compile a blueprint (a JSON/YAML file path or a dict) into a case class.

    ``functions``: extra functions for expressions. ``constants``: overrides of the blueprint's declared
    ``constants`` (names it does not declare are ignored, so one mapping can serve many blueprints).
    ``apis``: shared API definitions (``load_api_files``) beside the blueprint's own ``apis:``.
    ``connections``: the ``db_query`` connections that exist (None: unknown here, so not checked).
    """
    data, origin = read_blueprint(source)
    expressions = Expressions(functions)
    data = expand_apis(data, origin, apis or {}, expressions)  # api: NAME steps become inline requests
    checked = check_blueprint(data, expressions, connections=connections)
    declared = dict(data.get("constants") or {})
    declared.update({k: v for k, v in (constants or {}).items() if k in declared})
    return _build_class(checked, _Runtime(expressions, declared, checked), origin)


class _Runtime:
    """What every stage of one blueprint shares: its expressions, constants and stage names."""

    def __init__(self, expressions: Expressions, constants: dict[str, Any], checked: CheckedBlueprint) -> None:
        self.expressions = expressions
        self.constants = constants
        self.stage_of = checked.stage_of
        self.result = checked.data.get("result")

    def data(self, ctx: StageContext, **extra: Any) -> dict[str, Any]:
        return {"input": ctx.input.model_dump(mode="json"), "store": ctx.store, "const": self.constants,
                "failure": dataclasses.asdict(ctx.failure) if ctx.failure else None, **extra}

    def evaluate(self, expression: str, data: Mapping[str, Any]) -> Any:
        return self.expressions.evaluate(expression, data)

    def render(self, template: Any, data: Mapping[str, Any]) -> Any:
        return self.expressions.render(template, data)

    def keep(self, ctx: StageContext, keep: Mapping[str, str], **extra: Any) -> None:
        data = self.data(ctx, **extra)
        ctx.store.update({name: self.evaluate(expression, data) for name, expression in keep.items()})

    def go_on(self, ctx: StageContext, target: str | None) -> None:
        if target is not None:
            ctx.next(stage=target)
        else:
            ctx.complete(self.render(self.result, self.data(ctx)))

    def http_request(self, request: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
        """The ``http`` command payload for a blueprint request (``framework/blueprint/requests.py``)."""
        return http_payload(self.expressions, request, data)


def _build_class(checked: CheckedBlueprint, rt: _Runtime, origin: str) -> type[BusinessCase]:
    data = checked.data
    default_retry = Retry(**data["retry"]) if "retry" in data else DEFAULT_RETRY
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": data.get("description") or f"Blueprint {data['name']} v{data['version']} ({origin})",
        "name": data["name"],
        "version": data["version"],
        "Input": model_from_fields(f"{_camel(data['name'])}Input", data.get("input") or {}, extra="forbid"),
        "retry": default_retry,
        "reply_timeout_s": data.get("reply_timeout_s"),
        "blueprint": data,
        "blueprint_source": origin,
        "schedules": tuple(Schedule(**spec) for spec in data.get("schedules") or ()),  # bound to the class on creation
    }
    for index, level in enumerate(checked.levels):
        following = checked.levels[index + 1].stage if index + 1 < len(checked.levels) else None
        attrs[f"stage_{index}"] = _level_stage(level, following, rt, default_retry)
    return type(_camel(data["name"]), (BusinessCase,), attrs)


def _level_stage(level: Level, following: str | None, rt: _Runtime, default_retry: Retry) -> Any:
    if level.parallel:
        return stage(_guarded(level.stage, _parallel(level, following, rt)), name=level.stage, retry=default_retry)
    step = level.steps[0]
    target = rt.stage_of[step["next"]] if "next" in step else following
    build = _BODIES.get(step["kind"]) or STEP_KINDS[step["kind"]].body  # db_query, notify: step_kinds.py
    body = build(step, level.stage, target, rt)
    failed_to = step.get("on_expiry") or step.get("on_failed")
    return stage(
        _guarded(step["name"], body), name=level.stage,
        retry=Retry(**step["retry"]) if "retry" in step else WAIT_ONCE if step["kind"] in EVENT_KINDS
        else default_retry,
        on_failed=rt.stage_of[failed_to] if failed_to else None,
        optional=bool(step.get("optional")),
        reply_timeout_s=step.get("reply_timeout_s") or _reply_timeout(step),
    )


def _guarded(step_name: str, body: StepBody) -> Callable[[Any, StageContext], Any]:
    async def run(self: Any, ctx: StageContext) -> None:
        try:
            body(ctx)
        except ExpressionError as exc:
            raise NonRetryableError(f"step {step_name!r}: {exc.message}") from None

    return run


def _reply_timeout(step: Mapping[str, Any]) -> float | None:
    """An API call's reply may take its request timeout, plus room for a queue and a retry by the broker."""
    if step["kind"] != "api_call":
        return None
    request_timeout_s = float(step["request"].get("timeout_s", 30.0))
    return request_timeout_s * 2 + 30.0


# -- step kinds --------------------------------------------------------------------------------------------


def _api_call(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        if ctx.reply is None:
            ctx.call(HTTP_API, rt.http_request(step["request"], rt.data(ctx)), resume=me)
            return
        rt.keep(ctx, step.get("keep") or {}, reply=ctx.reply.data)
        rt.go_on(ctx, target)

    return body


def _call(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        if ctx.reply is None:
            ctx.call(step["api"], rt.render(step.get("payload"), rt.data(ctx)), resume=me)
            return
        rt.keep(ctx, step.get("keep") or {}, reply=ctx.reply.data)
        rt.go_on(ctx, target)

    return body


def _wait(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        data = rt.data(ctx)
        if "seconds" in step:
            seconds = rt.render(step["seconds"], data)
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise ExpressionError(f"seconds is {seconds!r}, not a number >= 0")
            ctx.wait(seconds, then=target)
        else:
            ctx.wait(until=_instant(rt.render(step["until"], data)), then=target)

    return body


def _wait_for_event(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        if ctx.event is None:
            ctx.wait_for(step["event"], timeout_s=step.get("timeout_s"), resume=me)
            return
        rt.keep(ctx, step.get("keep") or {}, event=_event_data(ctx))
        rt.go_on(ctx, target)

    return body


def _approval(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        name = step["name"]
        if ctx.event is None:
            assignee = rt.render(step.get("assignee"), rt.data(ctx))
            ctx.store["approval"] = {"step": name, "assignee": assignee, "deadline_s": step.get("deadline_s")}
            ctx.wait_for(APPROVAL_PREFIX + name, timeout_s=step.get("deadline_s"), resume=me)
            return
        data = ctx.event.data if isinstance(ctx.event.data, dict) else {}
        decision = {"approved": data.get("approved") is True, "comment": data.get("comment"), "by": data.get("by")}
        ctx.store.pop("approval", None)
        ctx.store[name] = decision
        rt.keep(ctx, step.get("keep") or {}, event=_event_data(ctx))
        if decision["approved"]:
            rt.go_on(ctx, target)
        elif "on_reject" in step:
            ctx.next(stage=rt.stage_of[step["on_reject"]])
        else:
            by = f" by {decision['by']}" if decision["by"] else ""
            ctx.fail(f"step {name!r} rejected{by}: {decision['comment'] or 'no comment'}")

    return body


def _event_data(ctx: StageContext) -> dict[str, Any]:
    event = ctx.event
    return {} if event is None else {"name": event.name, "id": event.id, "data": event.data, "at": event.at}


def _instant(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ExpressionError(f"until is {value!r}, not an ISO date-time") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    raise ExpressionError(f"until is {value!r}, not a date-time or epoch seconds")


def _transform(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        if "from" in step:
            data = rt.data(ctx)
            items = rt.evaluate(step["from"], data)
            if not isinstance(items, list):
                raise ExpressionError(f"'from' gave {type(items).__name__}, not a list")
            if "where" in step:
                items = [item for item in items if truthy(rt.evaluate(step["where"], {**data, "item": item}))]
            if "map" in step:
                items = [{k: rt.evaluate(e, {**data, "item": item}) for k, e in step["map"].items()} for item in items]
            elif "pick" in step:
                items = [{k: item.get(k) for k in step["pick"]} if isinstance(item, dict) else item for item in items]
            ctx.store[step["into"]] = items
        if "set" in step:
            data = rt.data(ctx)
            ctx.store.update({name: rt.evaluate(e, data) for name, e in step["set"].items()})
        rt.go_on(ctx, target)

    return body


def _validate(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    model = model_from_fields(f"{_camel(step['name'])}Fields", step["fields"], extra="ignore")
    drop = step.get("on_invalid") == "drop"

    def body(ctx: StageContext) -> None:
        value = rt.evaluate(step["target"], rt.data(ctx))
        if isinstance(value, list):
            found = [(i, check_value(model, item)) for i, item in enumerate(value)]
            errors = [f"[{i}].{e}" for i, errs in found for e in errs]
            if drop:
                ctx.store[step["into"]] = [item for (i, errs), item in zip(found, value, strict=True) if not errs]
                ctx.store[f"{step['into']}_rejected"] = [{"index": i, "errors": errs} for i, errs in found if errs]
                errors = []
        else:
            errors = check_value(model, value)
        if errors:
            shown = "; ".join(errors[:_MAX_ERRORS_SHOWN])
            more = f" (and {len(errors) - _MAX_ERRORS_SHOWN} more)" if len(errors) > _MAX_ERRORS_SHOWN else ""
            raise NonRetryableError(f"step {step['name']!r}: invalid data: {shown}{more}")
        rt.go_on(ctx, target)

    return body


def _condition(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        data = rt.data(ctx)
        for branch in step["branches"]:
            if truthy(rt.evaluate(branch["if"], data)):
                ctx.next(stage=rt.stage_of[branch["goto"]])
                return
        rt.go_on(ctx, rt.stage_of[step["default"]] if "default" in step else target)

    return body


def _complete(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        ctx.complete(rt.render(step.get("result"), rt.data(ctx)))

    return body


def _fail(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    def body(ctx: StageContext) -> None:
        reason = rt.render(step["reason"], rt.data(ctx))
        ctx.fail(reason if isinstance(reason, str) else str(reason))

    return body


def _fan_out(step: dict[str, Any], me: str, target: str | None, rt: _Runtime) -> StepBody:
    options = {k: step[k] for k in ("max_in_flight", "tolerate", "first", "timeout_s") if k in step}

    def body(ctx: StageContext) -> None:
        fan_in = ctx.fan_in
        if fan_in is None:
            data = rt.data(ctx)
            items = rt.evaluate(step["items"], data)
            if not isinstance(items, list):
                raise ExpressionError(f"items gave {type(items).__name__}, not a list")
            each = [{**data, "item": item} for item in items]
            if "request" in step:
                ctx.fan_out([rt.http_request(step["request"], d) for d in each], api=HTTP_API, resume=me, **options)
            elif "call" in step:
                payloads = [rt.render(step["call"].get("payload"), d) for d in each]
                ctx.fan_out(payloads, api=step["call"]["api"], resume=me, **options)
            else:
                inputs = [rt.render(step["case"].get("input"), d) for d in each]
                ctx.fan_out(inputs, case=step["case"]["name"], resume=me, **options)
            return
        rt.keep(ctx, step.get("keep") or {}, fan_in=_fan_in_data(fan_in))
        rt.go_on(ctx, target)

    return body


def _parallel(level: Level, following: str | None, rt: _Runtime) -> StepBody:
    """Independent steps of one level as one fan-out of ``FanItem``s; the join keeps each step's fields."""

    def body(ctx: StageContext) -> None:
        fan_in = ctx.fan_in
        if fan_in is None:
            data = rt.data(ctx)
            items = [
                FanItem(api=HTTP_API, payload=rt.http_request(s["request"], data)) if s["kind"] == "api_call"
                else FanItem(api=s["api"], payload=rt.render(s.get("payload"), data))
                for s in level.steps
            ]
            # Every step's failure is judged below (optional or not), so the fan-out itself tolerates all.
            ctx.fan_out(items, tolerate=len(items), resume=level.stage)
            return
        joined = _fan_in_data(fan_in)
        for index, step in enumerate(level.steps):
            error = joined["errors"].get(str(index))
            if error is not None:
                if step.get("optional"):
                    continue
                raise NonRetryableError(f"step {step['name']!r}: {error}")
            rt.keep(ctx, step.get("keep") or {}, reply=joined["results"][index])
        rt.go_on(ctx, following)

    return body


def _fan_in_data(fan_in: Any) -> dict[str, Any]:
    return {
        "total": fan_in.total, "succeeded": fan_in.succeeded, "failed": fan_in.failed,
        "results": list(fan_in.results), "errors": {str(k): v for k, v in dict(fan_in.errors).items()},
    }


_BODIES: dict[str, Callable[[dict[str, Any], str, str | None, _Runtime], StepBody]] = {
    "api_call": _api_call, "call": _call, "wait": _wait, "wait_for_event": _wait_for_event, "approval": _approval,
    "transform": _transform, "validate": _validate,
    "condition": _condition, "complete": _complete, "fail": _fail, "fan_out": _fan_out,
}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"_+", name) if part) or "Blueprint"
