"""The README's code snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets(heading: str) -> str:
    section = README.read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def _run(heading: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(_snippets(heading), str(README), "exec"), namespace)  # our own README
    return namespace


async def test_readme_first_case_runs() -> None:
    await _run("Write your first case")["test_order"]()  # type: ignore[operator]


async def test_readme_failure_example_runs() -> None:
    from framework import ServiceError
    from framework.testing import run_cases

    namespace = _run("Failures and time")
    product_import = namespace["ProductImport"]

    async def supplier(command, tx):  # type: ignore[no-untyped-def]
        return {"rows": [1, 2, 3]}

    async def enrichment(command, tx):  # type: ignore[no-untyped-def]
        raise ServiceError("enrichment is down")

    async with run_cases([product_import], services={"supplier_api": supplier, "enrichment_api": enrichment}) as env:
        doc = await env.run(product_import)
    assert doc.result == {"imported": 3}
    assert doc.failures[0].stage == "enrich"  # the optional stage failed; the process went on


async def test_readme_observer_counts_transitions() -> None:
    from framework.testing import run_cases

    counter = _run("Observers")["CountTransitions"]()  # type: ignore[operator]
    first_case = _run("Write your first case")

    async def inventory(command, tx):  # type: ignore[no-untyped-def]
        return {"in_stock": False}

    async with run_cases([first_case["Order"]], services={"inventory": inventory}, observers=[counter]) as env:
        doc = await env.run(first_case["Order"], {"order_id": "A-1", "amount_cents": 1}, raise_on_failure=False)
    assert doc.error is not None and doc.error.reason == "out of stock"
    assert counter.by_event == {"call": 1, "next": 1, "failed": 1}  # reserve, charge (jump), backorder


async def test_readme_events_example_runs() -> None:
    await _run("Events, callbacks and lookup")["test_checkout"]()  # type: ignore[operator]


def _yaml_blocks(heading: str) -> list[str]:
    section = README.read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, flags=re.S)


async def test_readme_blueprint_runs() -> None:
    blueprint_yaml = _yaml_blocks("Blueprints")[0]
    await _run("Blueprints")["test_quote"](blueprint_yaml)  # type: ignore[operator]


def test_readme_lead_sync_excerpt_matches_the_example() -> None:
    import yaml

    excerpt = yaml.safe_load(_yaml_blocks("Blueprints")[1])
    example = yaml.safe_load((README.parent / "business_cases" / "blueprints" / "lead_sync.yaml").read_text())
    assert excerpt["schedules"] == example["schedules"]
    steps = {step["name"]: step for step in example["steps"]}
    assert [s["name"] for s in excerpt["steps"]] == list(steps)
    for step in excerpt["steps"]:
        assert {key: steps[step["name"]][key] for key in step} == step


async def test_readme_fan_out_example_runs() -> None:
    await _run("Fan-out, parallel steps and child processes")["test_price_check"]()  # type: ignore[operator]
