"""Blueprints are checked on load (schema, references, expressions) and compile into ordinary cases.

No server: these run on the in-memory harness. The end-to-end proofs on RabbitMQ + PostgreSQL with worker
subprocesses and a real HTTP server are in tests/test_blueprint_end_to_end.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from business_cases.blueprint_functions import FUNCTIONS
from framework import Engine, InvalidInputError, ServiceError, Status, TaskIdSigner
from framework.blueprint import BlueprintError, blueprint_schema, load_blueprint
from framework.broker.memory import MemoryBroker
from framework.cli import cli
from framework.messages import RunStage
from framework.store.sqlite import SqliteStore
from framework.testing import run_cases

EXAMPLES = Path(__file__).resolve().parents[1] / "business_cases" / "blueprints"

ROUTING: dict[str, Any] = {
    "name": "routing",
    "version": 1,
    "input": {"sku": {"type": "string"}, "qty": {"type": "integer", "min": 1}},
    "steps": [
        {"name": "stock", "kind": "call", "api": "inventory", "payload": {"sku": "${input.sku}"},
         "keep": {"on_hand": "reply.on_hand"}},
        {"name": "route", "kind": "condition",
         "branches": [{"if": "store.on_hand >= input.qty", "goto": "reserve"}], "default": "backorder"},
        {"name": "reserve", "kind": "transform", "set": {"reserved": "input.qty"}, "next": "done"},
        {"name": "backorder", "kind": "fail", "reason": "only ${store.on_hand} of ${input.sku} in stock"},
        {"name": "done", "kind": "complete", "result": {"sku": "${input.sku}", "reserved": "${store.reserved}"}},
    ],
}


def broken(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(ROUTING)
    for index, step_changes in changes.items():
        data["steps"][int(index.removeprefix("s"))].update(step_changes)
    return data


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(BlueprintError) as raised:
        load_blueprint(data)
    return raised.value.errors


def test_the_published_schema_is_valid_and_the_examples_follow_it() -> None:
    jsonschema.Draft202012Validator.check_schema(blueprint_schema())
    for path in EXAMPLES.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), blueprint_schema())
        case = load_blueprint(path, functions=FUNCTIONS)
        assert case.stages and case.version == 1


def test_errors_name_the_step_and_the_field() -> None:
    assert errors_of(broken(s0={"payload": {"sku": "${input.skuu}", "n": "${input.qty"}})) == [
        "steps[0] 'stock'.payload.n: unclosed ${ in '${input.qty'",
    ]
    assert errors_of(broken(s2={"set": {"reserved": "stroe.qty"}})) == [
        "steps[2] 'reserve'.set.reserved: expression 'stroe.qty' reads 'stroe', which is not available here "
        "(did you mean 'store'? available: const, failure, input, store)"
    ]
    assert errors_of(broken(s1={"branches": [{"if": "store.on_hand", "goto": "reserv"}]})) == [
        "steps[1] 'route'.branches[0].goto: unknown step 'reserv' (did you mean 'reserve'?)"
    ]
    assert errors_of(broken(s0={"kind": "wait"})) == [
        "steps[0] 'stock': needs 'seconds' or 'until'",
        "steps[0] 'stock'.api: a wait step has no field 'api'",
        "steps[0] 'stock'.keep: a wait step has no field 'keep'",
        "steps[0] 'stock'.payload: a wait step has no field 'payload'",
    ]
    assert errors_of(broken(s3={"name": "reserve"})) == [
        "steps[3] 'reserve'.name: duplicate step name (also steps[2])",
        "steps[1] 'route'.default: unknown step 'backorder'",
    ]
    assert errors_of(broken(s2={"depends_on": ["done"]})) == [
        "steps[2] 'reserve'.depends_on[0]: 'done' is not an earlier step"]
    assert errors_of({**ROUTING, "name": "Routing"}) == [
        "name: 'Routing' does not match ^[a-z][a-z0-9_]{0,62}$ (lowercase letters, digits, underscores)"
    ]


def test_a_bad_blueprint_file_is_refused_by_the_cli_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    result_exprs = {"sku": "${upper(input.sku, input.qty)}", "x": "${nope(input.sku)}"}
    bad.write_text(yaml.safe_dump(broken(s4={"result": result_exprs})))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ROUTING))
    result = CliRunner().invoke(cli, ["blueprint", "validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{good}: ok, routing v1: stock -> route -> reserve -> backorder -> done" in result.stdout
    assert "steps[4] 'done'.result.x: expression 'nope(input.sku)' calls unknown function nope()" in result.stderr
    assert ("steps[4] 'done'.result.sku: expression 'upper(input.sku, input.qty)': upper() takes 1 argument(s), "
            "not 2") in result.stderr
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    assert CliRunner().invoke(cli, ["blueprint", "validate", str(tmp_path / "broken.yaml")]).exit_code == 1
    ok = CliRunner().invoke(cli, ["blueprint", "validate", str(good)])
    assert ok.exit_code == 0, ok.output


async def test_a_blueprint_runs_as_a_case_with_data_mapped_between_steps() -> None:
    case = load_blueprint(ROUTING)

    async def inventory(command, tx):  # type: ignore[no-untyped-def]
        if command.payload["sku"] == "down":
            raise ServiceError("inventory is down")
        return {"on_hand": 5 if command.payload["sku"] == "lamp" else 1}

    async with run_cases([case], services={"inventory": inventory}) as env:
        done = await env.run(case, {"sku": "lamp", "qty": 2})
        short = await env.run(case, {"sku": "chair", "qty": 2}, raise_on_failure=False)
        down = await env.run(case, {"sku": "down", "qty": 2}, raise_on_failure=False)
    assert done.status is Status.COMPLETED and done.result == {"sku": "lamp", "reserved": 2}
    assert done.store == {"on_hand": 5, "reserved": 2}
    assert short.status is Status.FAILED and short.error.reason == "only 1 of chair in stock"
    assert down.error.stage == "stock" and "inventory is down" in down.error.reason


async def test_validate_and_transform_steps() -> None:
    case = load_blueprint({
        "name": "rows", "version": 1, "input": {"rows": {"type": "array"}},
        "steps": [
            {"name": "check", "kind": "validate", "target": "input.rows", "on_failed": "report",
             "fields": {"sku": {"type": "string", "pattern": "^[A-Z]+$"}, "price": {"type": "integer", "min": 0}}},
            {"name": "shape", "kind": "transform", "from": "input.rows", "where": "item.price > `0`",
             "pick": ["sku"], "into": "priced"},
            {"name": "done", "kind": "complete", "result": "${store.priced[].sku}"},
            {"name": "report", "kind": "fail", "reason": "${failure.reason}"},
        ],
    })
    async with run_cases([case]) as env:
        ok = await env.run(case, {"rows": [{"sku": "A", "price": 0}, {"sku": "B", "price": 3}]})
        bad = await env.run(case, {"rows": [{"sku": "a", "price": "3"}, {"price": -1}]}, raise_on_failure=False)
    assert ok.result == ["B"]
    assert bad.status is Status.FAILED
    assert bad.error.reason == (
        "NonRetryableError: step 'check': invalid data: [0].sku: String should match pattern '^[A-Z]+$'; "
        "[0].price: Input should be a valid integer; [1].sku: Field required; "
        "[1].price: Input should be greater than or equal to 0"
    )


async def test_a_process_keeps_the_blueprint_version_it_started_with() -> None:
    v1 = load_blueprint({**ROUTING, "steps": [{"name": "first", "kind": "transform", "set": {"v": "`1`"}},
                                               {"name": "old_name", "kind": "complete", "result": "v1"}]})
    v2 = load_blueprint({**ROUTING, "version": 2, "steps": [
        {"name": "first", "kind": "transform", "set": {"v": "`2`"}},
        {"name": "new_name", "kind": "complete", "result": "v2"}]})
    store, broker = SqliteStore(":memory:"), MemoryBroker()
    signer = TaskIdSigner(["blueprint-versions-test-key-0123"])
    async with store:
        before = Engine(cases=[v1], store=store, broker=broker, signer=signer)
        doc = await before.start("routing", {"sku": "a", "qty": 1})
        await before.apply(RunStage(doc.process_id, "routing", "first", 1))
        after = Engine(cases=[v1, v2], store=store, broker=broker, signer=signer)
        await after.apply(RunStage(doc.process_id, "routing", "old_name", 2))
        newer = await after.start("routing", {"sku": "b", "qty": 1})
        done = await store.load(doc.process_id)
    assert done is not None and done.case_version == 1 and done.result == "v1" and done.store == {"v": 1}
    assert newer.case_version == 2


def test_input_is_validated_at_start_with_field_names() -> None:
    case = load_blueprint(ROUTING)
    with pytest.raises(InvalidInputError) as raised:
        case.validate_input({"sku": 5, "qty": 0, "extra": 1})
    assert {e["field"] for e in raised.value.errors} == {"sku", "qty", "extra"}


PARALLEL: dict[str, Any] = {
    "name": "parallel_demo", "version": 1,
    "steps": [
        {"name": "price", "kind": "call", "api": "prices", "keep": {"price": "reply.price"}},
        {"name": "stock", "kind": "call", "api": "stock", "depends_on": [], "keep": {"stock": "reply.stock"}},
        {"name": "done", "kind": "complete", "depends_on": ["price", "stock"],
         "result": {"price": "${store.price}", "stock": "${store.stock}"}},
    ],
}


def test_parallel_levels_only_hold_single_commands_and_cannot_be_jumped_into() -> None:
    data = copy.deepcopy(PARALLEL)
    data["steps"][1] = {"name": "stock", "kind": "wait", "seconds": 1, "depends_on": []}
    data["steps"].append({"name": "again", "kind": "condition", "branches": [{"if": "`true`", "goto": "price"}]})
    assert errors_of(data) == [
        "steps[1] 'stock': runs in parallel with 'price', 'stock', but only api_call and call steps can run in "
        "parallel; add depends_on to put it on a level of its own",
        "steps[3] 'again'.branches[0].goto: 'price' runs in parallel with other steps; only a step on a level of "
        "its own can be jumped to",
    ]


async def test_independent_steps_run_as_one_fan_out_and_join() -> None:
    case = load_blueprint(PARALLEL)
    assert [s.name for s in case.stages] == ["parallel_price", "done"]

    async def prices(command, tx):  # type: ignore[no-untyped-def]
        return {"price": 12}

    async def stock(command, tx):  # type: ignore[no-untyped-def]
        return {"stock": 3}

    async with run_cases([case], services={"prices": prices, "stock": stock}) as env:
        done = await env.run(case)
    assert done.result == {"price": 12, "stock": 3}


async def test_fan_out_step_over_a_list() -> None:
    case = load_blueprint({
        "name": "fan", "version": 1, "input": {"skus": {"type": "array"}},
        "steps": [
            {"name": "each", "kind": "fan_out", "items": "input.skus",
             "call": {"api": "lookup", "payload": {"sku": "${item}"}},
             "max_in_flight": 2, "keep": {"found": "fan_in.results[].name", "ok": "fan_in.succeeded"}},
        ],
        "result": {"found": "${store.found}", "ok": "${store.ok}"},
    })

    async def lookup(command, tx):  # type: ignore[no-untyped-def]
        return {"name": command.payload["sku"].lower()}

    async with run_cases([case], services={"lookup": lookup}) as env:
        done = await env.run(case, {"skus": ["A", "B", "C"]})
    assert done.result == {"found": ["a", "b", "c"], "ok": 3}


async def test_a_function_that_raises_fails_the_step_naming_it() -> None:
    case = load_blueprint({
        "name": "splitter", "version": 1, "input": {"text": {"type": "string"}},
        "steps": [
            {"name": "cut", "kind": "transform", "set": {"parts": "split(input.text, '')"}},
            {"name": "done", "kind": "complete", "result": "${store.parts}"},
        ],
    })
    async with run_cases([case]) as env:
        doc = await env.run(case, {"text": "a,b"}, raise_on_failure=False)
    assert doc.status is Status.FAILED
    assert doc.error.stage == "cut"
    assert doc.error.reason.startswith("NonRetryableError: step 'cut': expression \"split(input.text, '')\" failed: "
                                       "ValueError: empty separator"), doc.error.reason
