"""The store contract, stored workflows (``WorkflowStore``): run by ``tests/test_store_contract.py`` on
every backend, as ``store_contract.py`` is."""

from __future__ import annotations

import asyncio

import orjson

from framework.store.protocols import ProcessStore
from framework.store.records import WorkflowVersion

T = 1_800_000_000.0


def version_of(name: str, version: int, *, by: str = "ana", at: float = T) -> WorkflowVersion:
    definition = orjson.dumps({"name": name, "version": version, "steps": [{"name": "é", "kind": "complete"}]})
    return WorkflowVersion(name, version, definition.decode(), at, by)


async def test_a_saved_version_is_the_newest_and_a_new_name_starts_active(store: ProcessStore) -> None:
    assert await store.workflows() == []
    assert await store.add_workflow_version(version_of("import", 1))
    assert await store.add_workflow_version(version_of("import", 2, by="bo", at=T + 5))
    [row] = await store.workflows()
    assert (row.name, row.active, row.latest) == ("import", True, 2)
    assert (row.created_by, row.created_at, row.updated_by, row.updated_at) == ("ana", T, "bo", T + 5)
    versions = await store.workflow_versions("import")
    assert [v.version for v in versions] == [1, 2]
    assert orjson.loads(versions[1].definition)["steps"][0]["name"] == "é"
    assert [v.version for v in await store.workflow_versions("import", after=1)] == [2]
    assert await store.workflow_versions("other") == []


async def test_a_version_is_saved_once_however_many_writers_race(store: ProcessStore) -> None:
    assert await store.add_workflow_version(version_of("sync", 1))
    results = await asyncio.gather(*(store.add_workflow_version(version_of("sync", 2, by=f"w{i}")) for i in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    [saved] = await store.workflow_versions("sync", after=1)
    [row] = await store.workflows()
    assert row.latest == 2 and row.updated_by == saved.created_by  # the name points at the one that won


async def test_deactivating_and_activating_keep_the_versions(store: ProcessStore) -> None:
    assert await store.add_workflow_version(version_of("order", 1))
    assert await store.set_workflow_active("order", False, by="cy", now=T + 9)
    [row] = await store.workflows()
    assert (row.active, row.updated_by, row.updated_at, row.latest) == (False, "cy", T + 9, 1)
    assert await store.add_workflow_version(version_of("order", 2))  # a new version keeps it inactive
    assert not (await store.workflows())[0].active
    assert await store.set_workflow_active("order", True, by="cy", now=T + 10)
    assert (await store.workflows())[0].active
    assert not await store.set_workflow_active("missing", True, by="cy", now=T)
