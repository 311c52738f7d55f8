"""``GET /processes/{id}`` on PostgreSQL and SQLite: the document and its history come from one store call
(``load_with_history``) and the body is the same view as a ``load`` plus a ``history`` would give."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from framework import Settings
from framework.document import ProcessDocument, Status
from framework.store.base import ProcessStore
from gateway.views import process_view
from tests.support.cases import Jumper
from tests.support.gateway import Gateway, open_gateway

pytestmark = pytest.mark.integration

TRANSITIONS = 11  # versions 2..12: a version order that a text sort would get wrong


@pytest.fixture(params=["postgres", "sqlite"])
async def gw(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> AsyncIterator[Gateway]:
    store_url = settings.store_url if request.param == "postgres" else f"sqlite:///{tmp_path}/reads.db"
    async with open_gateway(settings, store_url=store_url, broker_url="memory://") as gateway:
        yield gateway


def _entry(version: int) -> dict[str, Any]:
    """A history entry with the values a JSON round trip could change: floats, None, nesting, non-ASCII."""
    return {"version": version, "event": "next", "stage": "third", "at": 1_700_000_000.123456 + version,
            "duration_ms": 0.1 * version, "reason": None, "detail": {"tries": [1, 2.5, None, "é ✓"], "ok": True}}


async def _finish_with_history(store: ProcessStore, doc: ProcessDocument) -> None:
    """Commit ``TRANSITIONS`` transitions straight to the store, the last one completing the process."""
    for version in range(2, TRANSITIONS + 2):
        last = version == TRANSITIONS + 1
        new = dataclasses.replace(
            doc, version=version, updated_at=doc.created_at + version, outbox=[],
            status=Status.COMPLETED if last else Status.RUNNING, stage="fourth" if last else "third",
            ended_at=doc.created_at + version if last else None, result={"score": 0.3, "none": None} if last else None,
        )
        assert await store.commit(new, _entry(version), expected_version=version - 1, due_at=None, expires_at=None)


async def test_get_is_the_document_and_its_whole_history(gw: Gateway) -> None:
    store = gw.flow.store
    started = await gw.flow.start("jumper", {"word": "ünïcode"})
    await _finish_with_history(store, started)
    doc, history = await store.load(started.process_id), await store.history(started.process_id)
    assert doc is not None and await store.load_with_history(started.process_id) == (doc, history)
    assert [e["version"] for e in history] == list(range(1, TRANSITIONS + 2))
    assert history[1:] == [_entry(v) for v in range(2, TRANSITIONS + 2)]

    response = await gw.client.get(f"/processes/{started.process_id}")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    # finished, so the view does not depend on the clock
    assert response.json() == process_view(Jumper, doc, history, now=0.0)


async def test_an_unknown_process_is_a_404_problem(gw: Gateway) -> None:
    assert await gw.flow.store.load_with_history("nope") is None
    missing = await gw.client.get("/processes/nope")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert missing.json() == {"type": "about:blank", "title": "Not Found", "status": 404,
                              "detail": "no process 'nope'", "error": "ProcessNotFoundError"}
