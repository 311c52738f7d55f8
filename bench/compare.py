"""The comparison: every system's burst, interleaved, ``repetitions`` times; Stageflow's latency; medians.

Interleaved: each repetition runs every system once, in an order rotated by one per repetition, so a
slow minute on a shared machine (or a server warming up) spreads over all systems instead of one. The row on
the 3-node RabbitMQ cluster (``bench/cluster.py``) is one of them; its cluster is started once, before.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.cluster import CLUSTER, LABEL, bench_cluster
from bench.harness import PEERS, Plan, run_burst
from bench.latency import LatencyPlan, stageflow_latency
from bench.peers.base import STAGES, say

BASELINES = ("raw_amqp", "raw_amqp_pg", "dramatiq_pg", "celery_pg")
CPU_KEYS = ("broker_cpu_s", "database_cpu_s", "python_cpu_s")


@dataclass(frozen=True)
class Comparison:
    plan: Plan
    latency: LatencyPlan | None  # None: no latency phase
    repetitions: int
    systems: tuple[str, ...] = tuple(PEERS)


async def compare(job: Comparison) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    async with bench_cluster(CLUSTER in job.systems) as cluster:
        systems = tuple(name for name in job.systems if name != CLUSTER or cluster.broker_url)
        for rep in range(job.repetitions if systems else 0):  # none left: only the cluster, and it is not up
            order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
            for name in order:
                say(f"[bench] repetition {rep + 1}/{job.repetitions}: {name}, {job.plan.chains} chains of {STAGES} "
                    "hops")
                run = await run_burst(name, job.plan, broker_url=cluster.broker_url if name == CLUSTER else None)
                run["repetition"] = rep + 1
                runs.append(run)
                say(f"[bench] {name}: {run['hops_per_s']} hops/s ({run['hops']} hops in {run['seconds']}s); CPU s "
                    f"broker {run['broker_cpu_s']}, database {run['database_cpu_s']}, python {run['python_cpu_s']}")
    medians = {name: _medians([r for r in runs if r["system"] == name]) for name in systems}
    result: dict[str, Any] = {f"{name}_tps": medians[name]["hops_per_s"] for name in systems}
    if cluster.unavailable:  # asked for, not measured: said, with why
        result[f"{CLUSTER}_tps"] = None
        result[f"{CLUSTER}_unavailable"] = cluster.unavailable
    if CLUSTER in medians and "stageflow" in medians and medians["stageflow"]["hops_per_s"]:
        # below 1: the share of the single node's rate that three replicas keep
        single = medians["stageflow"]["hops_per_s"]
        result[f"{CLUSTER}_vs_stageflow"] = round(medians[CLUSTER]["hops_per_s"] / single, 2)
    if "stageflow" in medians:
        ours = medians["stageflow"]["hops_per_s"]
        for base in BASELINES:
            if base in medians and medians[base]["hops_per_s"]:
                result[f"stageflow_vs_{base}"] = round(ours / medians[base]["hops_per_s"], 2)
        if job.latency is not None:
            result.update(await stageflow_latency(job.latency, medians["stageflow"]["hops_per_s"]))
    result["cpu_s"] = {name: {key: medians[name][key] for key in CPU_KEYS} for name in systems}
    result["medians"] = medians
    result["runs"] = runs
    return result


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    rates = [r["hops_per_s"] for r in runs]
    cpu_total = sum(median(key) or 0.0 for key in CPU_KEYS)
    hops = runs[0]["hops"]
    return {
        "hops_per_s": median("hops_per_s"),
        "min_hops_per_s": min(rates),
        "max_hops_per_s": max(rates),
        **{key: median(key) for key in CPU_KEYS},
        "cpu_ms_per_hop": round(cpu_total * 1000 / hops, 3),
    }


def table(result: dict[str, Any]) -> str:
    """The medians as a Markdown table (what docs and issue notes paste)."""
    medians: dict[str, dict[str, Any]] = result["medians"]
    stageflow = medians.get("stageflow", {}).get("hops_per_s")
    lines = [
        "| system | hops/s (median) | min-max | Stageflow is | broker CPU s | database CPU s | Python CPU s "
        "| CPU ms/hop |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in medians.items():
        ratio = f"{stageflow / m['hops_per_s']:.2f}x" if stageflow and m["hops_per_s"] else "-"
        lines.append(
            f"| {LABEL if name == CLUSTER else name} | {m['hops_per_s']:.0f} | {m['min_hops_per_s']:.0f}-"
            f"{m['max_hops_per_s']:.0f} | {ratio} | {m['broker_cpu_s']} | {m['database_cpu_s']} | {m['python_cpu_s']} "
            f"| {m['cpu_ms_per_hop']} |"
        )
    if f"{CLUSTER}_unavailable" in result:
        lines.append(f"| {LABEL} | not measured: {result[f'{CLUSTER}_unavailable']} | - | - | - | - | - | - |")
    if f"{CLUSTER}_vs_stageflow" in result:
        lines.append("")
        lines.append(f"Replication: on the 3-node cluster Stageflow runs at {result[f'{CLUSTER}_vs_stageflow']}x its "
                     "single-node rate (every message on 3 nodes; broker CPU counts all four RabbitMQ VMs)")
    if "p50_ms" in result:
        lines.append("")
        lines.append(
            f"Stageflow hop latency: unloaded p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; at half load "
            f"({result['half_load_hops_per_s']} hops/s) p50 {result['p50_half_load_ms']} ms, "
            f"p99 {result['p99_half_load_ms']} ms"
        )
    return "\n".join(lines)
