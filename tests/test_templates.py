"""Workflow templates: the shipped ones make valid blueprints, bad values and bad templates are refused with
every problem named, and a template becomes a running workflow from the CLI (real RabbitMQ + PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from business_cases.local_http import serve
from framework import Settings, Stageflow, Status
from framework.blueprint import BlueprintError, load_blueprints
from framework.blueprint.templates import TemplateLibrary, parse_template
from framework.errors import InvalidInputError, UnknownTemplateError
from tests.conftest import settings_env
from tests.support.cluster import Cluster, wait_finished

SHIPPED = {"inventory_sync", "listing_creation", "order_processing", "product_import"}
URL = "https://api.example.test"


def _required_values(params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: URL for k, spec in params.items() if "default" not in spec}


def test_every_shipped_template_makes_a_blueprint_that_compiles() -> None:
    library = TemplateLibrary()
    assert set(library.names()) == SHIPPED
    for template in library:
        blueprint = template.render(_required_values(template.parameters), name=f"my_{template.name}")
        assert blueprint["name"] == f"my_{template.name}" and blueprint["version"] == 1
        assert "template" not in blueprint
        text = json.dumps(blueprint)
        assert "{{" not in text, f"{template.name}: a placeholder was left: {text}"
        for param in _required_values(template.parameters):
            assert blueprint["constants"][param] == URL  # text parameters reach steps only through constants


def test_values_fill_constants_whole_values_and_integers_inside_strings() -> None:
    library = TemplateLibrary()
    order = library.get("order_processing").render(
        {"shop_api": URL, "approval_above_cents": 5000, "approval_deadline_s": 3600})
    [manager] = [s for s in order["steps"] if s["name"] == "manager"]
    assert manager["deadline_s"] == 3600 and order["constants"]["approval_above_cents"] == 5000
    sync = library.get("inventory_sync").render({"warehouse_api": URL, "shop_api": URL, "every_minutes": 5})
    assert sync["schedules"][0]["cron"] == "*/5 * * * *"
    [push] = [s for s in sync["steps"] if s["name"] == "push"]
    assert push["max_in_flight"] == 20  # the declared default


def test_bad_values_are_all_named_and_nothing_is_made() -> None:
    template = TemplateLibrary().get("product_import")
    with pytest.raises(InvalidInputError) as caught:
        template.render({"supplier_api": "ftp://x", "max_in_flight": "20", "colour": "red"}, name="Bad Name")
    assert [e["field"] for e in caught.value.errors] == ["name"]
    with pytest.raises(InvalidInputError) as caught:
        template.render({"supplier_api": "ftp://x", "max_in_flight": "20", "colour": "red"})
    fields = {e["field"]: e["message"] for e in caught.value.errors}
    assert set(fields) == {"supplier_api", "catalog_api", "max_in_flight", "colour"}, fields
    assert "not a parameter" in fields["colour"] and "integer" in fields["max_in_flight"]
    with pytest.raises(UnknownTemplateError, match="unknown template 'nope'") as unknown:
        TemplateLibrary().get("nope")
    assert "product_import" in (unknown.value.hint or "")


def test_a_template_that_could_paste_text_into_a_blueprint_is_refused() -> None:
    data = {
        "template": {"parameters": {"host": {"type": "string"}, "unused": {"type": "integer"},
                                    "bad": {"type": "colour"}}},
        "name": "t", "version": 1,
        "steps": [{"name": "a", "kind": "api_call", "request": {"url": "https://{{ host }}/x"}},
                  {"name": "b", "kind": "wait", "seconds": "{{ missing }}"}],
    }
    with pytest.raises(BlueprintError) as caught:
        parse_template(data, "t.yaml")
    text = "\n".join(caught.value.errors)
    assert "{{ host }} inside a string takes integer parameters only" in text
    assert "{{ missing }} names no declared parameter" in text
    assert "template.parameters.unused: used by no constant or placeholder" in text
    assert "template.parameters.bad" in text  # not a field type of the blueprint vocabulary


def test_a_deployments_own_template_folder_adds_and_overrides(tmp_path: Path) -> None:
    shipped = TemplateLibrary().get("product_import")
    own = {"template": {"description": "ours", "parameters": shipped.parameters}, **shipped.blueprint}
    (tmp_path / "product_import.yaml").write_text(yaml.safe_dump(own))
    library = TemplateLibrary((tmp_path,))
    assert library.get("product_import").description == "ours" and set(library.names()) == SHIPPED


# --- a template turned into a running workflow from the CLI ------------------------------------------------------

def _feed_api(written: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/feed/{feed}")
    async def feed(feed: str) -> dict[str, Any]:
        return {"items": [{"sku": "ABC-1", "name": "chair", "price_cents": 4900},
                          {"sku": "ABC-2", "name": "", "price_cents": 100},  # invalid: set aside
                          {"sku": "ABC-3", "name": "table", "price_cents": 19900}]}

    @app.put("/products/{sku}")
    async def put(sku: str, body: dict[str, Any]) -> dict[str, Any]:
        written[sku] = body
        return {"ok": True}

    return app


@pytest.fixture
def feed_api() -> Iterator[tuple[str, dict[str, Any]]]:
    written: dict[str, Any] = {}
    with serve(_feed_api(written)) as url:
        yield url, written


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framework", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.integration
async def test_a_template_becomes_a_running_workflow_from_the_cli(
    settings: Settings, tmp_path: Path, feed_api: tuple[str, dict[str, Any]]
) -> None:
    url, written = feed_api
    blueprint = tmp_path / "acme_import.yaml"
    env = settings_env(settings, STAGEFLOW_CASES="tests.support.cases", STAGEFLOW_BLUEPRINTS=str(blueprint))
    made = _cli(env, "template", "create", "product_import", "--name", "acme_import", "--param", f"supplier_api={url}",
                "--param", f"catalog_api={url}", "--param", "max_in_flight=2", "--output", str(blueprint))
    assert made.returncode == 0, made.stderr
    assert "wrote" in made.stderr and yaml.safe_load(blueprint.read_text())["name"] == "acme_import"

    cluster = Cluster(settings, tmp_path, workers=1, services_modules=(), cases="tests.support.cases",
                      STAGEFLOW_BLUEPRINTS=str(blueprint),
                      STAGEFLOW_HTTP_ALLOW_NETWORKS="127.0.0.1")  # the feed API is on loopback, refused unless allowed
    await cluster.start()
    try:
        started = _cli(env, "start", "acme_import", "--input", '{"feed": "spring"}')
        assert started.returncode == 0, started.stderr
        process_id = started.stdout.strip()
        async with Stageflow.from_settings(settings, cases=load_blueprints([str(blueprint)])) as flow:
            [done] = await wait_finished(flow, [process_id], timeout_s=60)
        assert done.status is Status.COMPLETED, (done.error, cluster.logs())
        assert done.result == {"stored": 2, "rejected": [1]}, done.result
        assert written == {"ABC-1": {"name": "chair", "price_cents": 4900},
                           "ABC-3": {"name": "table", "price_cents": 19900}}
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{cluster.logs()}"
