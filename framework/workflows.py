"""Workflows: blueprints that business users create and change while Stageflow runs, kept in the store.

Each change saves a new, immutable version (``WorkflowStore``). New processes start on the newest version; a
running process keeps the version it started with, since every stored version stays registered. Workers, the
gateway and the CLI keep their case registry in step with the store through ``refresh()``: it reads the
workflows' rows (a few per deployment) and compiles only the versions it has not seen. ``Stageflow`` runs it
every ``STAGEFLOW_WORKFLOW_REFRESH_S`` and a worker also at once when a message names a case it lacks, so a
new workflow or version runs without a restart. A deactivated workflow starts no new processes; its running
ones go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from framework.blueprint import BlueprintError, compile_blueprint
from framework.blueprint.apis import ApiDefinition
from framework.case import BusinessCase
from framework.clock import Clock
from framework.errors import InvalidInputError, StageflowError, UnknownCaseError, WorkflowConflictError
from framework.registry import CaseRegistry
from framework.store.protocols import WorkflowStore
from framework.store.records import WorkflowRow, WorkflowVersion
from framework.values import holds_nul

log = structlog.get_logger("stageflow.workflows")

MAX_BY_CHARS = 200

Added = Callable[[list[type[BusinessCase]]], None]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _row_view(row: WorkflowRow) -> dict[str, Any]:
    return {"name": row.name, "active": row.active, "latest": row.latest, "created_at": _iso(row.created_at),
            "created_by": row.created_by, "updated_at": _iso(row.updated_at), "updated_by": row.updated_by}


def blueprint_problems(exc: BlueprintError) -> InvalidInputError:
    """A blueprint's problems as invalid input, one error per problem (``where: what``)."""
    errors = []
    for problem in exc.errors or [exc.message]:
        where, sep, what = problem.partition(": ")
        errors.append({"field": where if sep else "(blueprint)", "message": what if sep else problem})
    return InvalidInputError(exc.message.split(":\n", 1)[0], errors=errors,
                             hint="POST /workflows/validate (or `stageflow workflow validate FILE`) checks a draft")


class Workflows:
    def __init__(
        self, store: WorkflowStore, cases: CaseRegistry, *, clock: Clock,
        functions: Mapping[str, Callable[..., Any]] | None = None, constants: Mapping[str, Any] | None = None,
        apis: Mapping[str, ApiDefinition] | None = None, on_added: Added | None = None,
    ) -> None:
        self._store = store
        self._cases = cases
        self._clock = clock
        self._functions = functions
        self._constants = constants
        self._apis = apis
        self._on_added = on_added
        self._seen: dict[str, int] = {}  # name -> the newest version read from the store
        self._lock = asyncio.Lock()

    # -- checking --------------------------------------------------------------------------------------------

    def compile(self, definition: Mapping[str, Any]) -> type[BusinessCase]:
        """The case ``definition`` compiles to; ``InvalidInputError`` naming every problem if it does not."""
        if not isinstance(definition, Mapping):
            raise InvalidInputError("a workflow is a blueprint: a JSON object",
                                    errors=[{"field": "(blueprint)", "message": "not an object"}])
        try:
            return compile_blueprint(dict(definition), functions=self._functions, constants=self._constants,
                                     apis=self._apis)
        except BlueprintError as exc:
            raise blueprint_problems(exc) from None

    def validate(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        """``{"valid": bool, "errors": [...]}``, saving nothing (the draft's version number is not checked)."""
        try:
            self.compile({**definition, "version": 1} if isinstance(definition, Mapping) else definition)
        except InvalidInputError as exc:
            return {"valid": False, "errors": exc.errors}
        return {"valid": True, "errors": []}

    # -- changing --------------------------------------------------------------------------------------------

    async def create(self, definition: Mapping[str, Any], *, by: str) -> dict[str, Any]:
        """Save a new workflow as version 1 (active). Its name must be free: no workflow, no case in code."""
        name = definition.get("name") if isinstance(definition, Mapping) else None
        if not isinstance(name, str):
            raise InvalidInputError("a workflow needs a name", errors=[{"field": "name", "message": "missing"}])
        await self.refresh()
        if name in self._seen:
            raise WorkflowConflictError(f"workflow {name!r} exists", hint=f"change it: PUT /workflows/{name}")
        if self._cases.has(name):
            raise WorkflowConflictError(f"{name!r} is a case of this deployment's code or blueprint files",
                                        hint="give the workflow another name")
        return await self._save(name, 1, definition, by)

    async def update(self, name: str, definition: Mapping[str, Any], *, by: str) -> dict[str, Any]:
        """Save ``definition`` as the next version of workflow ``name``; new processes start on it."""
        await self.refresh()
        if name not in self._seen:
            raise self._unknown(name)
        if isinstance(definition, Mapping) and definition.get("name", name) != name:
            raise InvalidInputError("a workflow keeps its name", errors=[
                {"field": "name", "message": f"{definition.get('name')!r} is not {name!r}"}])
        return await self._save(name, self._seen[name] + 1, definition, by)

    async def set_active(self, name: str, active: bool, *, by: str) -> dict[str, Any]:
        """Let new processes start on ``name`` again, or stop them (running processes go on)."""
        if not await self._store.set_workflow_active(name, active, by=_by(by), now=self._clock.now()):
            raise self._unknown(name)
        await self.refresh()
        return await self.get(name)

    async def _save(self, name: str, version: int, definition: Mapping[str, Any], by: str) -> dict[str, Any]:
        data = {**definition, "name": name, "version": version}  # the store numbers the versions
        self.compile(data)
        text = orjson.dumps(data).decode()
        if holds_nul(data):  # PostgreSQL's jsonb cannot keep one: refused here, before anything is written
            raise InvalidInputError("a workflow cannot hold a NUL character", errors=[
                {"field": "(blueprint)", "message": "a string holds a NUL character (\\u0000)"}])
        if not await self._store.add_workflow_version(WorkflowVersion(name, version, text, self._clock.now(),
                                                                      _by(by))):
            raise WorkflowConflictError(f"another change saved version {version} of workflow {name!r} first",
                                        hint="read the workflow again and make the change on its newest version")
        log.info("workflow saved", workflow=name, version=version, by=by)
        await self.refresh()
        return await self.get(name)

    # -- reading ---------------------------------------------------------------------------------------------

    async def summaries(self) -> list[dict[str, Any]]:
        """Every workflow: name, active, newest version, who made and last changed it, when."""
        return [_row_view(row) for row in await self._store.workflows()]

    async def get(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The workflow, its versions (who saved each, when) and the definition of ``version`` (the newest)."""
        row = next((r for r in await self._store.workflows() if r.name == name), None)
        if row is None:
            raise self._unknown(name)
        versions = await self._store.workflow_versions(name)
        shown = next((v for v in versions if v.version == (version or row.latest)), None)
        if shown is None:
            raise UnknownCaseError(f"workflow {name!r} has no version {version}",
                                   hint=f"its versions: {', '.join(str(v.version) for v in versions)}")
        return {**_row_view(row), "version": shown.version, "definition": orjson.loads(shown.definition),
                "versions": [{"version": v.version, "created_at": _iso(v.created_at), "created_by": v.created_by}
                             for v in versions]}

    def _unknown(self, name: str) -> UnknownCaseError:
        return UnknownCaseError(f"no workflow {name!r}",
                                hint="GET /workflows (or `stageflow workflow list`) lists them")

    # -- keeping the registry in step ------------------------------------------------------------------------

    async def refresh(self) -> list[type[BusinessCase]]:
        """Register the stored versions not seen yet and apply each workflow's active flag; the cases added."""
        async with self._lock:
            added: list[type[BusinessCase]] = []
            for row in await self._store.workflows():
                seen = self._seen.get(row.name, 0)
                if row.latest > seen:
                    for stored in await self._store.workflow_versions(row.name, after=seen):
                        case = self._register(stored)
                        if case is not None:
                            added.append(case)
                    self._seen[row.name] = row.latest
                if row.name in self._seen:
                    self._cases.close(row.name, not row.active)
            if added and self._on_added is not None:
                self._on_added(added)
            return added

    def _register(self, stored: WorkflowVersion) -> type[BusinessCase] | None:
        try:
            case = compile_blueprint(orjson.loads(stored.definition), functions=self._functions,
                                     constants=self._constants, apis=self._apis)
            self._cases.add(case)
        except StageflowError as exc:
            # Saved by a deployment that has a function or case this one lacks: the others still run here.
            log.error("stored workflow not registered here", workflow=stored.name, version=stored.version,
                      error=exc.message)
            return None
        log.info("workflow registered", workflow=stored.name, version=stored.version)
        return case


def _by(by: str) -> str:
    cleaned = " ".join(by.replace("\x00", "").split())[:MAX_BY_CHARS]
    return cleaned or "unnamed"
