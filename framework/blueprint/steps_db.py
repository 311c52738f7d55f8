"""The ``db_query`` step: one parameterised SQL statement on a named connection, run by the ``dbquery`` service.

::

    - name: find_customer
      kind: db_query
      connection: crm                  # STAGEFLOW_DB_CRM where the service runs
      mode: select                     # select | insert | update
      output: single                   # single (default) | multiple
      sql: "SELECT id, tier FROM customers WHERE email = :email"
      params: {email: input.email}     # name -> expression; bound by the driver, never written into the SQL
      keep: {customer: reply.row}      # reply: {row, count} (single) or {rows, count} (multiple)

On load: the SQL is one statement of the kind ``mode`` says, uses no ``{...}``, ``%s``, ``$1`` or ``?``
formatting or placeholders, and every ``:name`` has a ``params`` entry (and every entry a ``:name``); a
parameter reading ``input.x`` or ``store.x`` needs an input field or a step that keeps ``x``; ``output:
multiple`` of a write needs ``RETURNING``; and where connection settings exist, the connection is one of them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from framework.blueprint.expressions import BASE_ROOTS
from framework.context import StageContext
from framework.dbquery.sql import NamedSql, SqlError, dbquery_api

if TYPE_CHECKING:
    from framework.blueprint.step_kinds import CheckContext, ExpressionField, Runtime, StepBody

_SIMPLE_PATH = re.compile(r"^\s*(input|store)\.([A-Za-z_][A-Za-z0-9_]*)\b")


def expression_fields(step: dict[str, Any]) -> Iterator[ExpressionField]:
    for name, expression in (step.get("params") or {}).items():
        yield ["params", name], expression, BASE_ROOTS, False


def check(step: dict[str, Any], index: int, ctx: CheckContext) -> Iterator[str]:
    at = ["steps", index]
    connection = step["connection"]
    if ctx.connections is not None and connection not in ctx.connections:
        close = difflib.get_close_matches(connection, sorted(ctx.connections), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        yield (f"{ctx.where([*at, 'connection'])}: unknown connection {connection!r}{hint}; configured: "
               f"{', '.join(sorted(ctx.connections))} (set STAGEFLOW_DB_{connection.upper()}=postgresql://...)")
    try:
        sql = NamedSql.parse(step["sql"])
        sql.check_mode(step["mode"], step.get("output", "single"))
    except SqlError as exc:
        yield f"{ctx.where([*at, 'sql'])}: {exc}"
        return
    params = step.get("params") or {}
    for name in sql.names:
        if name not in params:
            yield f"{ctx.where([*at, 'sql'])}: :{name} has no value; add it to params ({name}: <expression>)"
    for name in params:
        if name not in sql.names:
            yield f"{ctx.where([*at, 'params', name])}: the sql has no :{name}; remove it or use it"
    yield from _references(params, at, ctx)


def _references(params: dict[str, str], at: list[Any], ctx: CheckContext) -> Iterator[str]:
    """A parameter that reads a field nothing provides would bind null: say so on load instead."""
    declared = ctx.data.get("input")
    kept = _kept_names(ctx.data)
    for name, expression in params.items():
        found = _SIMPLE_PATH.match(expression)
        if found is None:
            continue
        root, field = found.groups()
        known = set(declared) if root == "input" and declared is not None else kept if root == "store" else None
        if known is None or field in known:
            continue
        close = difflib.get_close_matches(field, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = "the input declares no" if root == "input" else "no step keeps"
        yield f"{ctx.where([*at, 'params', name])}: {expression!r} cannot resolve: {what} {field!r}{hint}"


def _kept_names(data: dict[str, Any]) -> set[str]:
    """Every store name some step of the blueprint writes."""
    names: set[str] = set()
    for step in data["steps"]:
        names |= set(step.get("keep") or {}) | set(step.get("set") or {})
        if "into" in step:
            names |= {step["into"], f"{step['into']}_rejected"}
        if step["kind"] == "approval":
            names |= {step["name"], "approval"}
    return names


def body(step: dict[str, Any], me: str, target: str | None, rt: Runtime) -> StepBody:
    api = dbquery_api(step["connection"])
    fixed = {"sql": step["sql"], "mode": step["mode"], "output": step.get("output", "single")}
    params = step.get("params") or {}

    def run(ctx: StageContext) -> None:
        if ctx.reply is None:
            data = rt.data(ctx)
            values = {name: rt.evaluate(expression, data) for name, expression in params.items()}
            ctx.call(api, {**fixed, "params": values}, resume=me)
            return
        rt.keep(ctx, step.get("keep") or {}, reply=ctx.reply.data)
        rt.go_on(ctx, target)

    return run
