"""Stageflow: processes of :class:`bench.cases.BenchChain` run by ``python -m workers`` subprocesses.

Every hop is a durable transition: the process document committed (version-checked, with its outbox and
history row), the next message published with a confirm, the delivery acked. Workers run with Stageflow's
defaults (prefetch, store pool); ``STAGEFLOW_*`` variables in the environment reach them, so a setting
can be compared by running the benchmark twice. The driver starts processes with ``Stageflow.start``
(document created + first message confirmed), ``PREFETCH`` at a time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg

from bench.cases import CASES, BenchChain
from bench.peers.base import BROKER_URL, PREFETCH, STORE_URL, Peer, delete_broker_objects, drop_schema
from framework import Settings, Stageflow
from framework.logs import configure_logging

SECRET = "bench-secret-key-0123456789-abcdefghijklmnop"  # 32 bytes at least
QUEUE_SUFFIXES = ("inner", "service", "parked", "command.http")  # command.http: each worker serves the http API


class StageflowPeer(Peer):
    name = "stageflow"

    def __init__(self, log_dir: Path, workers: int, *, broker_url: str = BROKER_URL) -> None:
        super().__init__(log_dir, workers)
        self.broker_url = broker_url  # one node, or every node of a cluster
        self.settings = Settings(
            broker_url=broker_url,
            store_url=STORE_URL,
            store_schema=self.namespace,
            queue_prefix=self.namespace,
            secret_keys=[SECRET],
            cases=["bench.cases"],
            log_level="WARNING",
        )
        self.process_ids: dict[int, str] = {}
        self._stack = AsyncExitStack()
        self.flow: Stageflow | None = None
        self.conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        configure_logging("WARNING")
        # Opening the driver's Stageflow creates the schema and queues before the workers start.
        self.flow = await self._stack.enter_async_context(
            Stageflow.from_settings(self.settings, cases=CASES, connection_name="stageflow-bench")
        )
        self.conn = await asyncpg.connect(STORE_URL)
        self._stack.push_async_callback(self.conn.close)
        self.spawn(
            "workers",
            [],
            {
                "STAGEFLOW_BROKER_URL": self.broker_url,
                "STAGEFLOW_STORE_URL": STORE_URL,
                "STAGEFLOW_STORE_SCHEMA": self.namespace,
                "STAGEFLOW_QUEUE_PREFIX": self.namespace,
                "STAGEFLOW_SECRET_KEYS": SECRET,
                "STAGEFLOW_CASES": "bench.cases",
                "STAGEFLOW_LOG_LEVEL": os.environ.get("STAGEFLOW_LOG_LEVEL", "WARNING"),
            },
        )
        await self.wait_consumers(f"{self.namespace}.inner")

    async def start_one(self, chain: int) -> str:
        if self.flow is None:
            raise RuntimeError("open() first")
        process_id = (await self.flow.start(BenchChain, {"n": chain})).process_id
        self.process_ids[chain] = process_id
        return process_id

    async def start_chains(self, ids: Sequence[int]) -> None:
        limit = asyncio.Semaphore(PREFETCH)

        async def start(chain: int) -> None:
            async with limit:
                await self.start_one(chain)

        await asyncio.gather(*(start(i) for i in ids))

    async def count_done(self, ids: Sequence[int]) -> int:
        if self.conn is None:
            raise RuntimeError("open() first")
        started = [self.process_ids[i] for i in ids if i in self.process_ids]
        if not started:
            return 0
        return await self.conn.fetchval(
            f"SELECT count(*) FROM {self.namespace}.processes WHERE process_id = ANY($1) AND status = 'completed'",
            started,
        )

    async def cleanup(self) -> None:
        try:
            await self._stack.aclose()
        finally:
            await drop_schema(self.namespace)
            await delete_broker_objects([f"{self.namespace}.{suffix}" for suffix in QUEUE_SUFFIXES], [self.namespace],
                                        broker_url=self.broker_url)


class StageflowClusterPeer(StageflowPeer):
    """The same, on a RabbitMQ cluster (``bench/cluster.py``): quorum queues with a replica on every node."""

    name = "stageflow_cluster"
