"""db_query and notify steps checked on load: every problem named by step and field, with what to write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from framework.blueprint import BlueprintError, load_blueprint
from framework.dbquery import known_connections

EXAMPLES = Path(__file__).resolve().parents[1] / "business_cases" / "blueprints"


def blueprint(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "checked", "version": 1, "input": {"email": {"type": "string"}, "limit": {"type": "integer"}},
            "steps": [{"name": "find", "kind": "db_query", "connection": "shop", "mode": "select",
                       "sql": "SELECT id FROM customers WHERE email = :email", "params": {"email": "input.email"},
                       "keep": {"customer": "reply.row"}}, *steps]}


def errors_of(data: dict[str, Any], connections: frozenset[str] | None = None) -> list[str]:
    with pytest.raises(BlueprintError) as raised:
        load_blueprint(data, connections=connections)
    return raised.value.errors


def db(name: str, sql: str, mode: str = "select", **more: Any) -> dict[str, Any]:
    return {"name": name, "kind": "db_query", "connection": "shop", "mode": mode, "sql": sql, **more}


def test_a_good_blueprint_compiles_into_stages() -> None:
    case = load_blueprint(blueprint({"name": "tell", "kind": "notify", "channel": "log",
                                     "message": "found ${store.customer.id}"}), connections=frozenset({"shop"}))
    assert [s.name for s in case.stages] == ["find", "tell"]


def test_sql_that_formats_values_or_uses_other_placeholders_is_refused() -> None:
    assert errors_of(blueprint(
        db("a", "SELECT * FROM t WHERE e = '{email}'"),
        db("b", "SELECT * FROM t WHERE e = {email}"),
        db("c", "SELECT * FROM t WHERE e = %s"),
        db("d", "SELECT * FROM t WHERE e = $1"),
        db("e", "SELECT * FROM t WHERE e = '${input.email}'"),
        db("f", "SELECT 1; DROP TABLE t"),
    )) == [
        "steps[1] 'a'.sql: sql holds '{email}' in a string: no formatting of values into SQL; write :name "
        "(unquoted) and list the name under params",
        "steps[2] 'b'.sql: sql uses '{': no formatting of values into SQL; write :name and list the name under "
        "params (the driver binds the value)",
        "steps[3] 'c'.sql: sql uses the placeholder '%s'; write :name and list the name under params (the driver "
        "binds the value)",
        "steps[4] 'd'.sql: sql uses the placeholder '$1'; write :name and list the name under params (the driver "
        "binds the value)",
        "steps[5] 'e'.sql: sql holds ${...}: SQL is no template; write :name and list the name under params",
        "steps[6] 'f'.sql: sql holds 2 statements; a db_query step runs exactly one",
    ]


def test_parameters_modes_and_outputs() -> None:
    assert errors_of(blueprint(
        db("a", "SELECT * FROM t WHERE a = :a AND b = :b", params={"a": "input.limit", "c": "input.limit"}),
        db("b", "SELECT * FROM t WHERE a = :a", params={"a": "input.emial"}),
        db("c", "SELECT * FROM t WHERE a = :a", params={"a": "store.custmer.id"}),
        db("d", "SELECT * FROM t WHERE a = :a", params={"a": "stroe.x"}),
        db("e", "UPDATE t SET a = 1", mode="update", output="multiple"),
        db("f", "SELECT 1", mode="insert"),
    )) == [
        "steps[4] 'd'.params.a: expression 'stroe.x' reads 'stroe', which is not available here (did you mean "
        "'store'? available: const, failure, input, store)",
        "steps[1] 'a'.sql: :b has no value; add it to params (b: <expression>)",
        "steps[1] 'a'.params.c: the sql has no :c; remove it or use it",
        "steps[2] 'b'.params.a: 'input.emial' cannot resolve: the input declares no 'emial' (did you mean 'email'?)",
        "steps[3] 'c'.params.a: 'store.custmer.id' cannot resolve: no step keeps 'custmer' (did you mean "
        "'customer'?)",
        "steps[5] 'e'.sql: output 'multiple' of an update returns rows only with RETURNING; add RETURNING (the "
        "columns you keep) or use output 'single' (the affected-row count)",
        "steps[6] 'f'.sql: mode 'insert' needs a INSERT statement, but the sql is SELECT",
    ]
    assert errors_of(blueprint(db("g", "SELECT 1", mode="delete"))) == [
        "steps[1] 'g'.mode: 'delete' is not one of ['select', 'insert', 'update']"]


def test_connections_are_checked_where_they_are_configured() -> None:
    data = blueprint(db("other", "SELECT 1", connection="shpo"))
    assert errors_of(data, frozenset({"shop", "crm"})) == [
        "steps[1] 'other'.connection: unknown connection 'shpo' (did you mean 'shop'?); configured: crm, shop "
        "(set STAGEFLOW_DB_SHPO=postgresql://...)"]
    load_blueprint(data)  # no connection settings in this process: not checkable here, so not checked
    assert known_connections({"STAGEFLOW_DB_SHOP": "postgresql://x", "STAGEFLOW_DBQUERY_MAX_ROWS": "5"}) == {"shop"}
    assert known_connections({"STAGEFLOW_STORE_URL": "postgresql://x"}) is None


def test_notify_fields_belong_to_their_channel() -> None:
    assert errors_of(blueprint(
        {"name": "a", "kind": "notify", "channel": "email", "to": "${input.email}", "subject": "s", "level": "info"},
        {"name": "b", "kind": "notify", "channel": "webhook", "subject": "s"},
        {"name": "c", "kind": "notify", "channel": "log", "message": "${stroe.x}"},
        {"name": "d", "kind": "notify", "channel": "sms", "message": "x"},
    )) == ["steps[4] 'd'.channel: 'sms' is not one of ['webhook', 'email', 'log']"]
    assert errors_of(blueprint(
        {"name": "a", "kind": "notify", "channel": "email", "to": "${input.email}", "subject": "s", "level": "info"},
        {"name": "b", "kind": "notify", "channel": "webhook", "subject": "s"},
        {"name": "c", "kind": "notify", "channel": "log", "message": "${stroe.x}"},
    )) == [
        "steps[3] 'c'.message: expression 'stroe.x' reads 'stroe', which is not available here (did you mean "
        "'store'? available: const, failure, input, store)",
        "steps[1] 'a': an email notification needs 'body'",
        "steps[1] 'a'.level: an email notification has no 'level' (that is a field of channel 'log')",
        "steps[2] 'b': a webhook notification needs 'request'",
        "steps[2] 'b'.subject: a webhook notification has no 'subject' (that is a field of channel 'email')",
    ]


def test_cli_validate_names_an_unknown_connection(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(blueprint(db("other", "SELECT 1", connection="crm"))))
    env = {**os.environ, "STAGEFLOW_DB_SHOP": "postgresql://127.0.0.1/shop"}
    done = subprocess.run([sys.executable, "-m", "framework", "blueprint", "validate", str(path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "steps[1] 'other'.connection: unknown connection 'crm'; configured: shop" in done.stderr
    ok = subprocess.run([sys.executable, "-m", "framework", "blueprint", "validate",
                         str(EXAMPLES / "restock_alerts.yaml"), str(EXAMPLES / "restock_order.yaml")],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
