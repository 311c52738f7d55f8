"""The gateway's reads at 1,000,000 processes: ``python -m bench.gateway_scale [--rows N] [--keep]``.

Seeds a PostgreSQL schema straight in SQL (generate_series: ~1 min for a million rows, no workers), then
times the queries behind ``/stats`` and the list endpoint's filters (EXPLAIN ANALYZE), and ``/stats`` and
``/processes`` through the gateway app (cached stats). Prints one JSON line. Not part of ``make test``: it
takes minutes and a few GB of disk.

The mix: 5 cases (one rare: 0.1 %), 90 % completed, 5 % failed (at one of 3 stages), 3 % running, 2 %
waiting (a quarter of those in a retry backoff), created over 30 days; 2 history rows per process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import asyncpg
import httpx
import orjson

from bench.measure import percentile
from framework import Settings, Stageflow
from framework.store.postgres import PostgresStore

STORE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DAY = 86400.0

SEED = """
INSERT INTO {s}.processes (process_id, case_name, client_key, status, version, doc, due_at, created_at, updated_at,
                           retrying, waiting_summary)
SELECT id, case_name, NULL, status, 3,
       jsonb_build_object('process_id', id, 'case', case_name, 'case_version', 1, 'status', status,
                          'stage', stage, 'version', 3, 'input', '{{}}'::jsonb, 'created_at', created,
                          'updated_at', created + 1,
                          'ended_at', CASE WHEN status IN ('completed', 'failed') THEN created + 1 END,
                          'waiting', waiting, 'error', error),
       CASE WHEN status = 'waiting' THEN created + DAY_S END, created, created + 1,
       coalesce(waiting->>'reason' = 'retry', false), waiting::text  -- what the store's derived_columns writes
FROM (
    SELECT id, case_name, status, created,
           CASE WHEN status = 'failed' THEN (ARRAY['fetch', 'charge', 'ship'])[1 + n % 3]
                WHEN status = 'completed' THEN NULL ELSE 'charge' END AS stage,
           CASE WHEN status = 'waiting' AND n % 4 = 0
                    THEN jsonb_build_object('kind', 'timer', 'reason', 'retry', 'stage', 'charge',
                                            'until', created + 60)
                WHEN status = 'waiting' THEN jsonb_build_object('kind', 'service', 'api', 'pay', 'stage', 'charge') END
               AS waiting,
           CASE WHEN status = 'failed' THEN jsonb_build_object('stage', (ARRAY['fetch', 'charge', 'ship'])[1 + n % 3],
                                                               'reason', 'boom', 'at', created + 1) END AS error
    FROM (
        SELECT n, 'p' || lpad(n::text, 9, '0') AS id,
               CASE WHEN n % 1000 = 7 THEN 'rare' ELSE 'case_' || (n % 4) END AS case_name,
               CASE WHEN h < 90 THEN 'completed' WHEN h < 95 THEN 'failed' WHEN h < 98 THEN 'running'
                    ELSE 'waiting' END AS status,
               NOW_S - 30 * DAY_S + n * (30 * DAY_S / ROWS) AS created
        FROM (SELECT n, ((n::bigint * 2654435761) % 4294967291) % 100 AS h FROM generate_series(1, ROWS) AS n) g
    ) x
) y;
INSERT INTO {s}.history (process_id, version, entry)
SELECT process_id, v, jsonb_build_object('event', 'stage', 'stage', 'charge', 'at', created_at + v,
                                         'duration_ms', 1.5 + v)
FROM {s}.processes, generate_series(2, 3) AS v;
ANALYZE {s}.processes;
ANALYZE {s}.history;
"""

# (name, ProcessFilter-like kwargs) of the list queries to EXPLAIN ANALYZE
LIST_FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("no filter", {}),
    ("status=failed", {"status": "failed"}),
    ("case=case_1", {"case": "case_1"}),
    ("case=rare", {"case": "rare"}),
    ("case=rare,status=failed", {"case": "rare", "status": "failed"}),
    ("status=retrying", {"status": "retrying"}),
    ("status=failed,failed_stage=ship", {"status": "failed", "failed_stage": "ship"}),
    ("failed_stage=ship", {"failed_stage": "ship"}),
    ("case=case_2,created 1 day", {"case": "case_2", "created_after": "day"}),
]


async def seed(conn: asyncpg.Connection, schema: str, rows: int) -> float:
    started = time.monotonic()
    sql = (SEED.format(s=schema).replace("ROWS", str(rows)).replace("NOW_S", str(time.time()))
           .replace("DAY_S", str(DAY)))
    await conn.execute(sql)
    return time.monotonic() - started


async def timed(conn: asyncpg.Connection, sql: str, *args: Any, runs: int = 5) -> float:
    """Median milliseconds of ``runs`` executions (after one warm-up)."""
    await conn.fetch(sql, *args)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await conn.fetch(sql, *args)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


async def explain_lists(conn: asyncpg.Connection, store: PostgresStore) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the first page (50 rows) and of a page deep in the list, per filter."""
    from framework.store.base import ProcessFilter
    from framework.store.sql.dialect import POSTGRESQL
    from framework.store.sql.statements import conditions

    out: dict[str, Any] = {}
    for name, kwargs in LIST_FILTERS:
        if kwargs.get("created_after") == "day":
            kwargs = {**kwargs, "created_after": time.time() - DAY}
        found, params = conditions(POSTGRESQL, ProcessFilter(**kwargs))
        params.append(51)
        sql = (f"SELECT process_id, created_at FROM {store.schema}.processes "
               f"{'WHERE ' + ' AND '.join(found) if found else ''} "
               f"ORDER BY created_at DESC, process_id DESC LIMIT ${len(params)}")
        plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *params)
        top = orjson.loads(plan)[0]
        node = top["Plan"]
        while node.get("Plans") and node["Node Type"] in ("Limit", "Incremental Sort", "Sort", "Gather Merge"):
            node = node["Plans"][0]
        out[name] = {"ms": round(top["Execution Time"], 2), "scan": node["Node Type"],
                     "index": node.get("Index Name"), "rows_removed": node.get("Rows Removed by Filter", 0)}
    return out


async def through_gateway(schema: str, requests: int) -> dict[str, Any]:
    from gateway.app import create_app

    settings = Settings(store_url=STORE_URL, store_schema=schema, broker_url="memory://",
                        secret_keys=["bench-secret-0123456789-abcdefghijklmnop"], gateway_insecure=True, cases=[])
    async with Stageflow.from_settings(settings, cases=[]) as flow:  # reads only: no case needed
        app = create_app(flow, settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            figures: dict[str, Any] = {}
            for path in ("/stats", "/processes?status=failed&limit=50", "/processes?case=rare&limit=50"):
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.text
                    await asyncio.sleep(0.05)
                figures[path] = {"first_ms": round(times[0], 1), "p50_ms": round(percentile(times, 50) or 0, 1),
                                 "p99_ms": round(percentile(times, 99) or 0, 1), "max_ms": round(max(times), 1)}
            if hasattr(app.state, "shutdown"):  # older gateways have none
                await app.state.shutdown()
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--schema", default="gw_scale")
    parser.add_argument("--keep", action="store_true", help="keep the seeded schema (re-used if it has the rows)")
    parser.add_argument("--requests", type=int, default=100, help="HTTP requests per endpoint")
    args = parser.parse_args()

    store = PostgresStore(STORE_URL, schema=args.schema)
    result: dict[str, Any] = {"rows": args.rows}
    conn = await asyncpg.connect(STORE_URL)
    try:
        await store.open()  # creates the schema and its indexes
        have = await conn.fetchval(f"SELECT count(*) FROM {args.schema}.processes")
        if have != args.rows:
            await conn.execute(f"TRUNCATE {args.schema}.processes, {args.schema}.history")
            result["seed_s"] = round(await seed(conn, args.schema, args.rows), 1)
        s = args.schema
        result["group_by_ms"] = await timed(
            conn, f"SELECT case_name, status, count(*) FROM {s}.processes GROUP BY case_name, status")
        result["stage_durations_ms"] = await timed(
            conn, f"""WITH recent AS (SELECT process_id, case_name FROM {s}.processes
                                      ORDER BY created_at DESC, process_id DESC LIMIT 1000)
                      SELECT r.case_name, h.entry->>'stage', (h.entry->>'duration_ms')::float8
                      FROM recent r JOIN {s}.history h ON h.process_id = r.process_id
                      WHERE h.entry ? 'duration_ms' AND h.entry->>'stage' IS NOT NULL""")
        result["lists"] = await explain_lists(conn, store)
        result["http"] = await through_gateway(args.schema, args.requests)
    finally:
        await store.close()
        if not args.keep:
            await conn.execute(f"DROP SCHEMA IF EXISTS {args.schema} CASCADE")
        await conn.close()
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    asyncio.run(main())
