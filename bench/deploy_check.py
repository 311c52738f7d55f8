"""``stageflow deploy check`` at 1,000,000 live processes: ``python -m bench.deploy_check [--rows N]``.

Seeds a scratch PostgreSQL schema straight in SQL (INSERT ... SELECT generate_series: live ``ecommerce_order``
v1 processes at each of its stages, with the reach a worker would derive), then times the store's query
(``live_reach``, three runs) and the CLI command as a user runs it (a subprocess with
``STAGEFLOW_CASES=business_cases``, so Python's start-up is in the figure). Prints one JSON line and drops its
schema. Not part of the suite: it takes a minute or two and some disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import orjson

from framework.store.postgres import PostgresStore

STORE_URL = os.environ.get("STAGEFLOW_TEST_STORE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[1]
# (stage, reach) of the example order's live processes: running at a stage, or waiting for a call's reply
SHAPES = [("get_schedule", "get_schedule"), ("create_job", "create_job get_schedule"),
          ("keep_job_id", "create_job keep_job_id"), ("finish", "finish keep_job_id")]

SEED = """
INSERT INTO {s}.processes (process_id, case_name, status, version, doc, created_at, updated_at, case_version,
                           stage, reach, derived_version)
SELECT 'b' || n, 'ecommerce_order', CASE WHEN n % 2 = 0 THEN 'waiting' ELSE 'running' END, 3, '{{}}'::jsonb,
       n, n, 1, (ARRAY[{stages}])[1 + n % {k}], (ARRAY[{reaches}])[1 + n % {k}], 3
FROM generate_series(1, {rows}) AS n
"""


async def main(rows: int) -> dict[str, object]:
    schema = f"bench_deploy_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(STORE_URL)
    try:
        async with PostgresStore(STORE_URL, schema=schema, min_size=1, max_size=2):
            pass  # migrated: the tables and the live-process index
        started = time.perf_counter()
        await conn.execute(SEED.format(s=schema, rows=rows, k=len(SHAPES),
                                       stages=", ".join(f"'{s}'" for s, _ in SHAPES),
                                       reaches=", ".join(f"'{r}'" for _, r in SHAPES)))
        await conn.execute(f"VACUUM ANALYZE {schema}.processes")
        seeded_s = time.perf_counter() - started
        async with PostgresStore(STORE_URL, schema=schema, min_size=1, max_size=2) as store:
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                live = await store.live_reach()
                runs.append(time.perf_counter() - t0)
        env = {**os.environ, "STAGEFLOW_STORE_URL": STORE_URL, "STAGEFLOW_STORE_SCHEMA": schema,
               "STAGEFLOW_CASES": "business_cases", "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        check = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "framework", "deploy", "check"],
                                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        cli_s = time.perf_counter() - t0
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
    return {"live_processes": sum(g.processes for g in live), "groups": len(live), "seed_s": round(seeded_s, 1),
            "query_s_median": round(statistics.median(runs), 3), "cli_s": round(cli_s, 2),
            "cli_exit": check.returncode, "cli_output": check.stdout.strip() or check.stderr.strip()[-300:]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    print(orjson.dumps(asyncio.run(main(parser.parse_args().rows))).decode())
