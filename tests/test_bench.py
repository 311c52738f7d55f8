"""``make bench`` works: its tiny mode runs every system's chains to the end on the real servers.

The comparison runs in ``.bench-venv`` (Stageflow plus the pinned Celery and Dramatiq; ``make test``
builds it first). Speed is not asserted — the machine may be shared — but every chain of every system
must finish (the harness fails the run otherwise), and every figure the issue asks for must be there.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence

import asyncpg
import orjson
import pytest

from bench.cluster import CLUSTER, LABEL
from bench.compare import table
from bench.harness import PEERS, wait_done
from bench.peers.base import STAGES, BenchError, Peer
from tests.conftest import STORE_URL
from tests.support.processes import ROOT

BENCH_PYTHON = ROOT / ".bench-venv" / "bin" / "python"
REQUIRED = (
    "stageflow_tps", "raw_amqp_tps", "raw_amqp_pg_tps", "dramatiq_pg_tps", "celery_pg_tps",
    "stageflow_vs_raw_amqp", "stageflow_vs_dramatiq_pg", "stageflow_vs_celery_pg",
    "p50_ms", "p99_ms", "p99_half_load_ms",
)


@pytest.mark.integration
def test_tiny_comparison_finishes_every_chain_of_every_system(servers_reachable: None) -> None:
    if not BENCH_PYTHON.exists():
        pytest.fail(f"{BENCH_PYTHON} is missing: run `make bench-env` (make test does it)")
    proc = subprocess.run(  # the 3-node cluster's start-up (30-60 s) is part of it
        [str(BENCH_PYTHON), "-m", "bench", "--tiny"], cwd=ROOT, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    lines = proc.stdout.strip().splitlines()
    summary = orjson.loads(lines[-1])
    assert lines[0].startswith("| system | hops/s"), proc.stdout  # the table of medians comes first

    for key in REQUIRED:
        assert isinstance(summary[key], (int, float)) and summary[key] > 0, (key, summary[key])
    # The cluster row is measured, or the table and the JSON line say why not (never a silent gap).
    unmeasured = summary.get(f"{CLUSTER}_unavailable")
    if unmeasured:
        assert summary[f"{CLUSTER}_tps"] is None and f"not measured: {unmeasured}" in proc.stdout, proc.stdout
    else:
        assert summary[f"{CLUSTER}_tps"] > 0 and summary[f"{CLUSTER}_vs_stageflow"] > 0, summary
        assert LABEL in proc.stdout, proc.stdout
    assert {run["system"] for run in summary["runs"]} == set(PEERS) - ({CLUSTER} if unmeasured else set())
    for run in summary["runs"]:
        assert run["hops"] == run["chains"] * STAGES and run["chains"] == summary["chains"]
        assert run["python_cpu_s"] is not None and run["python_cpu_s"] > 0, run
    for name, cpu in summary["cpu_s"].items():
        assert set(cpu) == {"broker_cpu_s", "database_cpu_s", "python_cpu_s"}, name

    # Clean-up: no schema of any run is left behind (queues are deleted by the same code path).
    schemas = [run["namespace"] for run in summary["runs"]]
    left = asyncio.run(_existing_schemas(schemas))
    assert left == [], f"schemas left behind: {left}"


def test_a_cluster_row_that_could_not_be_measured_says_why() -> None:
    single = {"hops_per_s": 1000.0, "min_hops_per_s": 900.0, "max_hops_per_s": 1100.0, "broker_cpu_s": 1.0,
              "database_cpu_s": 1.0, "python_cpu_s": 1.0, "cpu_ms_per_hop": 1.0}
    summary = {"medians": {"stageflow": single}, f"{CLUSTER}_tps": None,
               f"{CLUSTER}_unavailable": "rabbitmq-server is not installed"}
    lines = table(summary).splitlines()
    assert lines[-1].startswith(f"| {LABEL} | not measured: rabbitmq-server is not installed |"), lines
    assert len(lines[-1].split("|")) == len(lines[0].split("|")), "the row has the table's columns"


SCALE_FIGURES = (
    "history_5_ms", "history_late_ms", "tps_small", "tps_big", "hop_p50_small_ms", "hop_p50_big_ms",
    "load_p99_small_ms", "load_p99_big_ms", "get_p99_small_ms", "get_p99_big_ms", "rss_end_mb",
)


@pytest.mark.integration
def test_tiny_scale_run_measures_every_figure_and_cleans_up(servers_reachable: None) -> None:
    """``make bench-scale`` works: its tiny mode measures history length, store size, reads and memory."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--tiny"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    summary = orjson.loads(proc.stdout.strip().splitlines()[-1])
    for key in SCALE_FIGURES:
        assert isinstance(summary[key], (int, float)) and summary[key] > 0, (key, summary[key])
    assert summary["store_big"] > summary["store_small"] >= 1000, summary  # the filler rows were inserted
    history = summary["detail"]["history"]
    assert history["late_intervals"] == history["window"] * history["processes"], history  # every loop ran to the end
    assert asyncio.run(_existing_schemas([summary["namespace"]])) == []


async def _existing_schemas(names: list[str]) -> list[str]:
    conn = await asyncpg.connect(STORE_URL)
    try:
        rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname = ANY($1)", names)
        return [r["nspname"] for r in rows]
    finally:
        await conn.close()


class _StuckPeer(Peer):
    """A peer one of whose chains never finishes."""

    name = "stuck"

    async def open(self) -> None: ...

    async def start_chains(self, ids: Sequence[int]) -> None: ...

    async def count_done(self, ids: Sequence[int]) -> int:
        return len(ids) - 1

    async def cleanup(self) -> None: ...


async def test_a_chain_that_does_not_finish_fails_the_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BenchError, match="stuck: only 2 of 3 chains finished"):
        await wait_done(_StuckPeer(tmp_path, 2), range(3), timeout_s=0.2, poll_s=0.01, label=None)
