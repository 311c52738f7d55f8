"""Independent witnesses for the exactly-once tests, and the queries that read them.

* The **ledger**: a PostgreSQL trigger on ``<schema>.processes`` that records every UPDATE of a process
  row (old and new version, the stage the old document was at, the new status) into ``<schema>.ledger``,
  a table with no unique key. It sees what the database really did, whatever the framework believes:
  a transition committed twice would show as two rows for the same old version. Relay claims also
  update the row (``due_at`` only, the version stays): they are recorded too, and told apart by
  ``old_version = new_version``; such a row must never change the document.
* The **effects** table, written by the ``effects`` test service (``tests/support/services.py``): one row
  per applied effect, no unique key, so a doubled effect shows as two rows.
* The framework's own ``history`` table (primary key ``(process_id, version)``).

``audit()`` reads all three for a set of processes of one case and checks them against that case's
``Expected`` shape (``audit_five_calls()`` for ``five_calls``); ``doubled_commits()`` and
``doubled_effects()`` count what was applied twice across a whole schema, whatever the case, and
``longest_gap_s()`` the longest stretch without a committed transition (a stall).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg

from tests.support.servers import connect_broker

# The stage commits a ``five_calls`` process makes, in order: (old version, stage the old document was
# at, status after the commit). Stage ``step_k`` runs at version k and calls the service, so the process
# waits; ``done`` runs at version 6 and completes it (version 7).
FIVE_CALLS_STAGES = ("step_1", "step_2", "step_3", "step_4", "step_5", "done")
FIVE_CALLS_COMMITS = tuple(
    (version, stage, "completed" if stage == "done" else "waiting")
    for version, stage in enumerate(FIVE_CALLS_STAGES, start=1)
)
FIVE_CALLS_STEPS = (1, 2, 3, 4, 5)
FIVE_CALLS_HISTORY = tuple(range(1, len(FIVE_CALLS_STAGES) + 2))  # 1 (started) .. 7


@dataclass(frozen=True)
class Expected:
    """What the witnesses must show for one process of a case that runs without a hitch (faults aside).

    ``commits``: the version-changing ledger rows, in order, as (old version, stage the old document was
    at, status after the commit); ``steps``: the ``effects`` steps, each applied exactly once;
    ``history``: the history versions.
    """

    commits: tuple[tuple[int, str, str], ...]
    steps: tuple[int, ...]
    history: tuple[int, ...]


FIVE_CALLS = Expected(FIVE_CALLS_COMMITS, FIVE_CALLS_STEPS, FIVE_CALLS_HISTORY)


async def install_ledger(conn: asyncpg.Connection, schema: str) -> None:
    """Create ``<schema>.ledger`` and the AFTER UPDATE trigger on ``<schema>.processes`` (which must exist)."""
    await conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {schema}.ledger (
            process_id   text NOT NULL,
            old_version  integer NOT NULL,
            new_version  integer NOT NULL,
            old_stage    text,
            new_status   text NOT NULL,
            doc_changed  boolean NOT NULL,
            recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE OR REPLACE FUNCTION {schema}.ledger_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {schema}.ledger (process_id, old_version, new_version, old_stage, new_status, doc_changed)
            VALUES (OLD.process_id, OLD.version, NEW.version, OLD.doc->>'stage', NEW.status,
                    OLD.doc IS DISTINCT FROM NEW.doc);
            RETURN NULL;
        END
        $$;
        DROP TRIGGER IF EXISTS ledger_witness ON {schema}.processes;
        CREATE TRIGGER ledger_witness AFTER UPDATE ON {schema}.processes
            FOR EACH ROW EXECUTE FUNCTION {schema}.ledger_record();
        """
    )


async def ledger_commits(
    conn: asyncpg.Connection, schema: str, process_id: str
) -> list[tuple[int, int, str, str]]:
    """One process's version-changing updates as ``(old_version, new_version, old_stage, new_status)``."""
    rows = await conn.fetch(
        f"SELECT old_version, new_version, old_stage, new_status FROM {schema}.ledger"
        " WHERE process_id = $1 AND old_version <> new_version ORDER BY recorded_at, old_version",
        process_id,
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def effect_counts(conn: asyncpg.Connection, schema: str, process_id: str) -> dict[int, int]:
    """How many ``effects`` rows each step of one process has (each should have exactly one)."""
    rows = await conn.fetch(
        f"SELECT step, count(*) AS n FROM {schema}.effects WHERE process_id = $1 GROUP BY step", process_id
    )
    return {r["step"]: r["n"] for r in rows}


async def history_versions(conn: asyncpg.Connection, schema: str, process_id: str) -> list[int]:
    rows = await conn.fetch(
        f"SELECT version FROM {schema}.history WHERE process_id = $1 ORDER BY version", process_id
    )
    return [r["version"] for r in rows]


async def count_finished(conn: asyncpg.Connection, schema: str) -> int:
    return await conn.fetchval(
        f"SELECT count(*) FROM {schema}.processes WHERE status IN ('completed', 'failed', 'cancelled')"
    )


async def wait_all_finished(conn: asyncpg.Connection, schema: str, total: int, timeout_s: float) -> bool:
    """Poll (one count query) until ``total`` processes are finished; False if the time ran out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await count_finished(conn, schema) >= total:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)


@dataclass
class Audit:
    """What the witnesses say about a set of processes of one case."""

    processes: int
    completed: int = 0
    failed: int = 0
    lost: int = 0  # not completed: failed, stuck, or missing
    stage_commits: int = 0  # version-changing ledger rows
    doubled_stage_commits: int = 0  # ledger rows beyond one per (process, old version)
    wrong_stage_commits: int = 0  # processes whose commit sequence is not exactly the expected one
    relay_claims: int = 0  # ledger rows that kept the version (relay claims)
    silent_overwrites: int = 0  # ledger rows that kept the version but changed the document
    effects: int = 0
    doubled_effects: int = 0  # effect rows beyond one per (process, step)
    missing_effects: int = 0  # (process, step) pairs with no effect row
    stray_effects: int = 0  # effect rows of unknown processes or steps
    bad_histories: int = 0  # processes whose history versions are not the expected ones
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.doubled_stage_commits or self.wrong_stage_commits or self.silent_overwrites
            or self.doubled_effects or self.missing_effects or self.stray_effects or self.bad_histories
        )

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "examples"}


async def audit_five_calls(conn: asyncpg.Connection, schema: str, process_ids: Sequence[str]) -> Audit:
    """Check every ``five_calls`` process in ``process_ids`` against the three witnesses."""
    return await audit(conn, schema, process_ids, FIVE_CALLS)


async def audit(
    conn: asyncpg.Connection, schema: str, process_ids: Sequence[str], expected: Expected, *,
    others_may_have_effects: bool = False,
) -> Audit:
    """Check every process in ``process_ids`` against the three witnesses and ``expected`` (set-based
    queries). Effect rows of processes outside ``process_ids`` count as stray unless
    ``others_may_have_effects`` (another group of processes in the same schema is audited apart)."""
    wanted = set(process_ids)
    report = Audit(processes=len(wanted))

    statuses = {
        r["process_id"]: r["status"]
        for r in await conn.fetch(
            f"SELECT process_id, status FROM {schema}.processes WHERE process_id = ANY($1::text[])", list(wanted)
        )
    }
    report.completed = sum(1 for s in statuses.values() if s == "completed")
    report.failed = sum(1 for s in statuses.values() if s == "failed")
    report.lost = report.processes - report.completed
    for pid in sorted(wanted):
        if statuses.get(pid) != "completed":
            report.note(f"{pid}: status {statuses.get(pid)}")

    commits: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for r in await conn.fetch(
        f"SELECT process_id, old_version, new_version, old_stage, new_status, doc_changed FROM {schema}.ledger"
        " WHERE process_id = ANY($1::text[]) ORDER BY process_id, old_version, recorded_at",
        list(wanted),
    ):
        if r["old_version"] == r["new_version"]:
            report.relay_claims += 1
            if r["doc_changed"]:
                report.silent_overwrites += 1
                report.note(f"{r['process_id']}: document changed at version {r['old_version']} without a commit")
            continue
        report.stage_commits += 1
        if r["new_version"] != r["old_version"] + 1:
            report.note(f"{r['process_id']}: version jumped {r['old_version']} -> {r['new_version']}")
        commits[r["process_id"]].append((r["old_version"], r["old_stage"], r["new_status"]))
    for pid in wanted:
        seen = commits.get(pid, [])
        versions = [v for v, _, _ in seen]
        report.doubled_stage_commits += len(versions) - len(set(versions))
        if tuple(seen) != expected.commits:
            report.wrong_stage_commits += 1
            report.note(f"{pid}: stage commits {seen}")

    per_step: dict[tuple[str, int], int] = {}
    for r in await conn.fetch(
        f"SELECT process_id, step, count(*) AS n FROM {schema}.effects"
        " WHERE process_id = ANY($1::text[]) GROUP BY process_id, step",
        list(wanted),
    ):
        per_step[(r["process_id"], r["step"])] = r["n"]
    report.effects = sum(per_step.values())
    for (pid, step), n in per_step.items():
        if step not in expected.steps:
            report.stray_effects += n
            report.note(f"{pid}: effect for unknown step {step}")
        elif n > 1:
            report.doubled_effects += n - 1
            report.note(f"{pid}: step {step} applied {n} times")
    for pid in wanted:
        for step in expected.steps:
            if (pid, step) not in per_step:
                report.missing_effects += 1
                report.note(f"{pid}: step {step} never applied")
    if not others_may_have_effects:
        report.stray_effects += await conn.fetchval(
            f"SELECT count(*) FROM {schema}.effects WHERE NOT (process_id = ANY($1::text[]))", list(wanted)
        )

    histories: dict[str, list[int]] = defaultdict(list)
    for r in await conn.fetch(
        f"SELECT process_id, version FROM {schema}.history WHERE process_id = ANY($1::text[])"
        " ORDER BY process_id, version",
        list(wanted),
    ):
        histories[r["process_id"]].append(r["version"])
    for pid in wanted:
        if tuple(histories.get(pid, [])) != expected.history:
            report.bad_histories += 1
            report.note(f"{pid}: history versions {histories.get(pid, [])}")
    return report


async def doubled_commits(conn: asyncpg.Connection, schema: str) -> int:
    """Version-changing ledger rows beyond one per (process, old version), over the whole schema."""
    return await conn.fetchval(
        f"""SELECT coalesce(sum(n - 1), 0)::bigint FROM (
                SELECT count(*) AS n FROM {schema}.ledger WHERE old_version <> new_version
                GROUP BY process_id, old_version) AS per_version"""
    )


async def doubled_effects(conn: asyncpg.Connection, schema: str) -> int:
    """``effects`` rows beyond one per (process, step), over the whole schema (0 if there is no table)."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.effects"):
        return 0
    return await conn.fetchval(
        f"""SELECT coalesce(sum(n - 1), 0)::bigint FROM (
                SELECT count(*) AS n FROM {schema}.effects GROUP BY process_id, step) AS per_step"""
    )


async def longest_gap(conn: asyncpg.Connection, schema: str) -> tuple[float, float | None]:
    """The longest time between two consecutive commits (version-changing ledger rows) in the schema, and
    when it ended (epoch seconds; None if there were fewer than two commits)."""
    row = await conn.fetchrow(
        f"""SELECT extract(epoch FROM recorded_at - previous) AS gap, extract(epoch FROM recorded_at) AS ended
            FROM (SELECT recorded_at, lag(recorded_at) OVER (ORDER BY recorded_at) AS previous
                  FROM {schema}.ledger WHERE new_version <> old_version) AS commits
            WHERE previous IS NOT NULL ORDER BY recorded_at - previous DESC LIMIT 1"""
    )
    return (0.0, None) if row is None else (float(row["gap"]), float(row["ended"]))


async def longest_gap_s(conn: asyncpg.Connection, schema: str) -> float:
    """The longest time between two consecutive commits (version-changing ledger rows) in the schema."""
    return (await longest_gap(conn, schema))[0]


# -- RabbitMQ: queue depths and taking one message, on the test's own connection ------------------------


async def queue_depth(broker_url: str, queue_name: str) -> int:
    """Ready messages in a RabbitMQ queue (0 if it does not exist); ``broker_url`` may list a cluster's nodes."""
    connection = await connect_broker(broker_url)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0
        return queue.declaration_result.message_count or 0
    finally:
        await connection.close()


async def take_message(broker_url: str, queue_name: str, timeout_s: float = 30.0) -> aio_pika.IncomingMessage:
    """Take (get and ack) one message from a queue, waiting for one to arrive."""
    connection = await connect_broker(broker_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        deadline = time.monotonic() + timeout_s
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                return message
            if time.monotonic() > deadline:
                raise TimeoutError(f"no message on {queue_name} within {timeout_s} s")
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
