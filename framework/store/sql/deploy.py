"""The worker registry and the deploy queries, written once for both SQL databases (mixed into ``SqlStore``).

The deploy queries group live processes by the columns ``derived_columns`` writes at every create and commit
(``case_version``, ``stage``, ``reach``), through the ``processes_live`` index. A row committed by a release
that did not write them yet (its workers may still run beside this one's during a deploy) carries deploy
columns derived from an older version than its own: the query hands its id back, and its document is read
instead, so the answer is never stale.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from framework.document import ProcessDocument
from framework.store.derived import Derived, derived_columns
from framework.store.records import GONE_AFTER_BEATS, LiveGroup, WorkerRow
from framework.store.sql.dialect import Dialect
from framework.store.sql.schema import LIVE

WORKER_COLUMNS = "worker_id, release, carries, started_at, last_seen, heartbeat_s"
_STALE_IDS_PER_READ = 1000
GroupKey = tuple[str, int, str | None, str | None]  # case, version and the two grouped columns


class DeployStatements:
    def __init__(self, d: Dialect, p: str) -> None:
        sql = d.sql
        self.dialect = d
        self.record_worker = sql(f"""
            INSERT INTO {p}workers ({WORKER_COLUMNS}) VALUES ($1, $2, $3::jsonb, $4, $5, $6)
            ON CONFLICT (worker_id) DO UPDATE SET release = EXCLUDED.release, carries = EXCLUDED.carries,
                last_seen = EXCLUDED.last_seen, heartbeat_s = EXCLUDED.heartbeat_s""")
        seen = f"last_seen >= $1 - {GONE_AFTER_BEATS} * heartbeat_s"
        self.forget_gone_workers = sql(f"DELETE FROM {p}workers WHERE NOT ({seen})")
        self.remove_worker = sql(f"DELETE FROM {p}workers WHERE worker_id = $1")
        self.running_workers = sql(f"SELECT {WORKER_COLUMNS} FROM {p}workers WHERE {seen} ORDER BY release, worker_id")
        kind = d.json_field("waiting_summary::jsonb" if d.name == "postgresql" else "waiting_summary", "kind")
        self.live_reach = self._live(p, "reach, NULL")
        self.live_stages = self._live(p, f"stage, {kind}")
        self.documents = sql(f"SELECT doc FROM {p}processes WHERE process_id {d.in_list(1)}")

    @staticmethod
    def _live(p: str, grouped: str) -> str:
        """Live processes by (case, version, ``grouped``); a row whose deploy columns are older than its
        version (or missing) is a group of its own, with its id in the last column."""
        return f"""
            SELECT case_name, case_version, {grouped}, count(*),
                   CASE WHEN derived_version = version THEN NULL ELSE process_id END AS stale
            FROM {p}processes WHERE {LIVE}
            GROUP BY 1, 2, 3, 4, stale"""


class SqlDeploy:
    """``DeployStore`` over a backend's ``_rows``/``_changed`` and its ``_deploy`` statements."""

    _deploy: DeployStatements

    @abstractmethod
    async def _rows(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...

    @abstractmethod
    async def _changed(self, sql: str, *args: Any) -> int: ...

    async def record_worker(self, worker: WorkerRow) -> None:
        carries = orjson.dumps([list(pair) for pair in worker.carries]).decode()
        await self._changed(self._deploy.record_worker, worker.worker_id, worker.release, carries,
                            worker.started_at, worker.last_seen, worker.heartbeat_s)
        await self._changed(self._deploy.forget_gone_workers, worker.last_seen)

    async def remove_worker(self, worker_id: str) -> None:
        await self._changed(self._deploy.remove_worker, worker_id)

    async def running_workers(self, now: float) -> list[WorkerRow]:
        return [WorkerRow(r[0], r[1], tuple((c, int(v)) for c, v in orjson.loads(r[2])), r[3], r[4], r[5])
                for r in await self._rows(self._deploy.running_workers, now)]

    async def live_reach(self) -> list[LiveGroup]:
        groups = await self._live(self._deploy.live_reach, lambda doc, d: (doc.case, doc.case_version, d.reach, None))
        return [LiveGroup(c, v, n, reach=r) for (c, v, r, _), n in sorted(groups.items(), key=_order)]

    async def live_stages(self) -> list[LiveGroup]:
        groups = await self._live(self._deploy.live_stages, lambda doc, d: (
            doc.case, doc.case_version, d.stage, None if doc.waiting is None else doc.waiting.kind))
        return [LiveGroup(c, v, n, stage=s, waiting=w) for (c, v, s, w), n in sorted(groups.items(), key=_order)]

    async def _live(self, sql: str, key: Callable[[ProcessDocument, Derived], GroupKey]) -> Counter[GroupKey]:
        counts: Counter[GroupKey] = Counter()
        stale: list[str] = []
        for case, version, first, second, n, stale_id in await self._rows(sql):
            if stale_id is None:
                counts[(case, int(version), first, second)] += int(n)
            else:
                stale.append(stale_id)
        for start in range(0, len(stale), _STALE_IDS_PER_READ):  # few: rows an older release committed
            ids = self._deploy.dialect.list_param(stale[start:start + _STALE_IDS_PER_READ])
            for (raw,) in await self._rows(self._deploy.documents, ids):
                doc = ProcessDocument.from_json(raw)
                if not doc.status.finished:
                    counts[key(doc, derived_columns(doc))] += 1
        return counts


def _order(item: tuple[GroupKey, int]) -> tuple[str, int, str, str]:
    (case, version, first, second), _ = item
    return case, version, first or "", second or ""
