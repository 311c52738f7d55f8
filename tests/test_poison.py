"""A message that kills every worker that handles it is parked after a bounded number of deliveries,
its process is marked failed, and the queues keep flowing. Real worker subprocesses, really killed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from framework import Settings, Stageflow, Status
from framework.broker.base import REASON_HEADER
from tests.support.cases import CASES, FiveCalls
from tests.support.cluster import Cluster, wait_finished
from tests.support.failure_cases import CASES as FAILURE_CASES
from tests.test_bad_messages import parked_messages

pytestmark = pytest.mark.integration

POISON_AFTER = 3


async def test_poison_message_is_parked_and_its_process_failed(settings: Settings, tmp_path: Path) -> None:
    async with Stageflow.from_settings(settings, cases=[*CASES, *FAILURE_CASES]) as flow:
        cluster = Cluster(settings, tmp_path, workers=2, STAGEFLOW_POISON_AFTER=str(POISON_AFTER))
        await cluster.start()
        restarts = 0
        try:
            # Healthy work in flight beside the poison: its messages are redelivered with it after each
            # kill, and must not be mistaken for poison.
            healthy = [await flow.start(FiveCalls, {"n": n}) for n in range(100)]
            poison = await flow.start("killer")
            deadline = time.monotonic() + 90
            while not (await flow.get(poison.process_id)).status.finished:
                assert time.monotonic() < deadline, cluster.logs()
                for worker in cluster.workers:  # a supervisor would restart them; so do we
                    if not worker.alive:
                        worker.start()
                        restarts += 1
                await asyncio.sleep(0.1)
            failed = await flow.get(poison.process_id)
            assert failed.status is Status.FAILED and failed.error.poison is True
            assert failed.error.stage == "die"
            assert f"killed its worker {POISON_AFTER} times when run on its own" in failed.error.reason
            kills = restarts + sum(not w.alive for w in cluster.workers)
            assert kills >= POISON_AFTER + 1  # the first run, then each isolated run, killed a worker
            [parked] = await parked_messages(settings, expected=1)
            assert parked[REASON_HEADER].startswith("poison message")
            for worker in cluster.workers:
                if not worker.alive:
                    worker.start()
            done = await wait_finished(flow, [d.process_id for d in healthy], timeout_s=60)
            assert {d.status for d in done} == {Status.COMPLETED}, cluster.logs()
        finally:
            cluster.stop()
