"""The demo: run many e-commerce orders through Stageflow and show progress and a summary.

On the embedded default (in-memory broker, SQLite) it runs workers and services inside this process, so
it needs no server. With ``STAGEFLOW_BROKER_URL`` pointing at RabbitMQ it only starts the orders and
watches them; run ``stageflow worker`` (N times) and ``stageflow services`` alongside.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator

import orjson

from business_cases.order import EcommerceOrder
from business_cases.order_services import HANDLERS, SETUP_SQL
from framework.app import Stageflow
from framework.logs import configure_logging
from framework.service.hosting import build_services, inbox_from_url
from framework.service.sdk import Service
from framework.settings import Settings
from framework.worker import Worker

_BAR_WIDTH = 30


async def run_demo(settings: Settings, *, count: int = 200, workers: int = 2, timeout_s: float = 300.0) -> dict:
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="stageflow-demo-") as tmp:
        if settings.embedded and settings.store_url == Settings.model_fields["store_url"].default:
            # A fresh database per demo run, so the summary counts this run only.
            settings = settings.model_copy(update={"store_url": f"sqlite:///{os.path.join(tmp, 'demo.db')}"})
        where = "embedded (in-memory broker + SQLite)" if settings.embedded else "RabbitMQ + store"
        _say(f"Stageflow demo: {count} e-commerce orders on {where}")
        async with Stageflow.from_settings(settings, cases=[EcommerceOrder]) as flow, \
                _embedded_runtime(flow, settings, workers, tmp):
            return await _drive(flow, count, timeout_s)


@contextlib.asynccontextmanager
async def _embedded_runtime(flow: Stageflow, settings: Settings, workers: int, tmp: str) -> AsyncIterator[None]:
    """With the embedded broker, workers and services must live in this process; otherwise they run apart."""
    if not settings.embedded:
        _say("expecting `stageflow worker` and `stageflow services` to be running against the same broker")
        yield
        return
    inbox = inbox_from_url(f"sqlite:///{os.path.join(tmp, 'services.db')}", setup_sql=SETUP_SQL)
    async with inbox:
        components: list[Worker | Service] = [flow.worker() for _ in range(max(1, workers))]
        components += build_services(HANDLERS, broker=flow.broker, inbox=inbox)
        for component in components:
            await component.start()
        try:
            yield
        finally:
            for component in components:
                await component.stop()


async def _drive(flow: Stageflow, count: int, timeout_s: float) -> dict:
    run_id = uuid.uuid4().hex[:6]
    started_at = time.perf_counter()
    ids = []
    for i in range(count):
        doc = await flow.start(
            EcommerceOrder, {"order_id": f"ORD-{run_id}-{i:05d}", "desired_date": "2026-12-01"},
            client_key=f"ORD-{run_id}-{i:05d}",
        )
        ids.append(doc.process_id)
    deadline = time.perf_counter() + timeout_s
    while True:
        counts = await flow.store.count_by_status(EcommerceOrder.name)
        finished = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
        _progress(finished, count, counts)
        if finished >= count or time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started_at
    sample = await flow.get(ids[0])
    summary = {
        "processes": count,
        "completed": counts.get("completed", 0),
        "failed": counts.get("failed", 0),
        "unfinished": count - finished,
        "seconds": round(elapsed, 2),
        "processes_per_s": round(count / elapsed, 1),
    }
    _say("")
    _say("sample process " + sample.process_id + ":")
    _say(orjson.dumps({"status": sample.status, "result": sample.result, "store": sample.store},
                      option=orjson.OPT_INDENT_2).decode())
    _say("summary: " + orjson.dumps(summary).decode())
    return summary


def _progress(done: int, total: int, counts: dict[str, int]) -> None:
    filled = int(_BAR_WIDTH * done / max(total, 1))
    states = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    line = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total}  {states}"
    if sys.stderr.isatty():
        print("\r" + line, end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _say(text: str) -> None:
    print(text, file=sys.stderr if text.startswith("[") else sys.stdout, flush=True)
