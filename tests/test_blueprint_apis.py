"""API definitions: declared once (a blueprint's ``apis:`` or a shared file), named by ``api_call`` steps with
overrides, checked on load (each problem named by file, step and field), and resolved into the command when the
step runs, with secrets as references only."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from framework.blueprint import BlueprintError, load_api_files, load_blueprint
from framework.errors import ConfigurationError
from framework.messages import ServiceCommand
from framework.testing import run_cases

TICKETS: dict[str, Any] = {
    "name": "tickets", "version": 1,
    "input": {"customer": {"type": "string"}, "topic": {"type": "string"}},
    "constants": {"desk": "https://desk.example.com"},
    "apis": {"open_ticket": {
        "method": "POST", "url": "${const.desk}/customers/${input.customer}/tickets",
        "headers": {"Authorization": {"secret": "DESK_TOKEN"}, "X-Source": "stageflow"},
        "body": {"customer": "${input.customer}", "topic": "${input.topic}"},
        "timeout_s": 10, "keep": {"ticket_id": "reply.body.id"}, "retry": {"attempts": 5, "backoff_s": 1},
        "allowed_hosts": ["desk.example.com"],
    }},
    "steps": [
        {"name": "open", "kind": "api_call", "api": "open_ticket", "request": {"body": {"priority": "low"}}},
        {"name": "escalate", "kind": "api_call", "api": "open_ticket",
         "request": {"body": {"priority": "high", "parent": "${store.ticket_id}"}, "timeout_s": 3,
                     "params": {"notify": "yes"}},
         "keep": {"escalation_id": "reply.body.id"}, "retry": {"attempts": 2}},  # its own keep and retry
    ],
    "result": {"first": "${store.ticket_id}", "escalation": "${store.escalation_id}"},
}


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(TICKETS)
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return data


def _errors(data: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(BlueprintError) as raised:
        load_blueprint(data, **kwargs)
    return raised.value.errors


async def test_two_steps_name_one_api_with_their_own_overrides() -> None:
    case = load_blueprint(TICKETS)
    open_stage, escalate_stage = case.stages
    assert escalate_stage.retry.attempts == 2 and open_stage.retry.attempts == 5  # the step's retry, else the API's
    seen: list[dict[str, Any]] = []

    async def desk(command: ServiceCommand, tx: Any) -> dict[str, Any]:
        seen.append(command.payload)
        return {"status": 201, "headers": {}, "body": {"id": f"T-{len(seen)}"}}

    async with run_cases([case], services={"http": desk}) as env:
        doc = await env.run(case, {"customer": "ACME/../1", "topic": "billing"})
    assert doc.result == {"first": "T-1", "escalation": "T-2"}
    first, second = seen
    url = "https://desk.example.com/customers/ACME%2F..%2F1/tickets"
    assert first == {"method": "POST", "url": url,
                     "headers": {"Authorization": {"secret": "DESK_TOKEN"}, "X-Source": "stageflow"},
                     "json": {"customer": "ACME/../1", "topic": "billing", "priority": "low"},
                     "timeout_s": 10, "allowed_hosts": ["desk.example.com"]}
    assert second["json"] == {"customer": "ACME/../1", "topic": "billing", "priority": "high", "parent": "T-1"}
    assert second["timeout_s"] == 3 and second["params"] == {"notify": "yes"} and second["url"] == url
    assert "DESK_TOKEN" not in str(doc.store)  # only the reference travels, in the command


def test_a_shared_file_defines_apis_for_every_blueprint(tmp_path: Path) -> None:
    shared = tmp_path / "desk.yaml"
    shared.write_text(yaml.safe_dump({"apis": TICKETS["apis"]}))
    apis = load_api_files([str(tmp_path / "*.yaml")])
    assert list(apis) == ["open_ticket"] and apis["open_ticket"].origin == str(shared)
    own = _with()
    del own["apis"]
    assert [s.name for s in load_blueprint(own, apis=apis).stages] == ["open", "escalate"]
    errors = _errors(_with(), apis=apis)  # defined in both places
    assert errors == [f"blueprint 'tickets': apis.open_ticket: also defined in {shared}; rename one"], errors
    with pytest.raises(ConfigurationError, match="no API file matches"):
        load_api_files([str(tmp_path / "nothing-*.yaml")])


def test_a_bad_shared_file_is_named_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"apis": {
        "one": {"url": "ftp://files.example.com/${input.x}"},
        "two": {"url": "${const.base}/x/${stroe.y}", "allowed_hosts": ["ok.example.com"]},
        "three": {"method": "GET"},
    }}))
    with pytest.raises(BlueprintError) as raised:
        load_api_files([str(bad)])
    assert raised.value.errors == [f"{bad}: apis.three: 'url' is a required property"], raised.value.errors
    bad.write_text(yaml.safe_dump({"apis": {k: v for k, v in yaml.safe_load(bad.read_text())["apis"].items()
                                            if k != "three"}}))
    with pytest.raises(BlueprintError) as raised:
        load_api_files([str(bad)])
    first, second = raised.value.errors
    assert first.startswith(f"{bad}: apis.one.url: 'ftp://files.example.com/${{input.x}}' must start with http")
    assert second.startswith(f"{bad}: apis.two.url: expression 'stroe.y' reads 'stroe'"), second


@pytest.mark.parametrize(("changes", "expected"), [
    ({"steps__1__api": "open_tiket"},
     "blueprint 'tickets': steps[1] 'escalate'.api: unknown api 'open_tiket' (did you mean 'open_ticket'?); "
     "defined: open_ticket"),
    ({"steps__1__request": {"body": {"parent": "${store.ticket}"}}},
     "blueprint 'tickets': steps[1] 'escalate' (api 'open_ticket').body.parent: reads store.ticket, which no "
     "earlier step keeps (did you mean store.ticket_id?)"),
    ({"steps__0__request": {"body": {"parent": "${store.ticket_id}"}}},  # kept by this very step: not earlier
     "blueprint 'tickets': steps[0] 'open' (api 'open_ticket').body.parent: reads store.ticket_id, which no "
     "earlier step keeps"),
    ({"apis__open_ticket__body": {"customer": "${input.customr}"}},
     "blueprint 'tickets': steps[0] 'open' (api 'open_ticket').body.customer: reads input.customr, which the "
     "input does not declare (did you mean input.customer?)"),
    ({"apis__open_ticket__url": "${const.dsk}/tickets"},
     "blueprint 'tickets': steps[0] 'open' (api 'open_ticket').url: reads const.dsk, which the blueprint's "
     "constants do not declare (did you mean const.desk?)"),
    ({"apis__open_ticket__url": "desk.example.com/${input.customer}"},
     "blueprint 'tickets': apis.open_ticket.url: 'desk.example.com/${input.customer}' must start with http:// or "
     "https://, or with a ${...} base URL"),
    ({"apis__open_ticket__url": "https://desk/${input.customer"},
     "blueprint 'tickets': apis.open_ticket.url: unclosed ${ in 'https://desk/${input.customer'"),
    ({"apis__open_ticket__allowed_hosts": ["desk.example.com", "bad host"]},
     "apis.open_ticket.allowed_hosts[1]: 'bad host' does not match ^(\\*\\.)?[A-Za-z0-9_.:-]{1,253}$"),
])
def test_problems_are_named_by_file_step_and_field(changes: dict[str, Any], expected: str) -> None:
    errors = _errors(_with(**changes))
    assert errors == [expected], errors


def test_overrides_may_not_change_what_the_api_is() -> None:
    errors = _errors(_with(steps__0__request={"url": "https://elsewhere.example.com/"}))
    assert errors == ["steps[0] 'open'.request: unknown field 'url'; allowed: body, headers, ok_statuses, params, "
                      "timeout_s"], errors
    errors = _errors(_with(steps__0__api="open_ticket", steps__0__kind="call"))
    assert errors and "steps[0] 'open'" in errors[0], errors


def test_a_step_with_neither_api_nor_request_is_refused() -> None:
    data = _with()
    del data["steps"][0]["api"]
    del data["steps"][0]["request"]
    assert _errors(data) == ["steps[0] 'open': 'request' is a required property"]
