"""The RabbitMQ and PostgreSQL that the tests, the benchmark and the fault runs use (default: the local ones;
``STAGEFLOW_TEST_BROKER_URL`` / ``STAGEFLOW_TEST_STORE_URL`` point them elsewhere), and what all three need of
them: whether they answer, a plain connection to RabbitMQ (one node, or the first live node of a cluster's
list, as ``STAGEFLOW_BROKER_URL`` gives it), and dropping what one run created."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable

import aio_pika
import asyncpg
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

from framework.broker.nodes import BrokerNodes, NodeRotation

BROKER_URL = os.environ.get("STAGEFLOW_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
STORE_URL = os.environ.get("STAGEFLOW_TEST_STORE_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def unreachable() -> str | None:
    """Why PostgreSQL or RabbitMQ cannot be used, or None if both answer."""
    try:
        conn = await asyncio.wait_for(asyncpg.connect(STORE_URL), 10)
        await conn.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL at {STORE_URL} is not reachable ({exc})"
    try:
        amqp = await asyncio.wait_for(aio_pika.connect(BROKER_URL), 10)
        await amqp.close()
    except Exception as exc:  # noqa: BLE001
        return f"RabbitMQ at {BROKER_URL} is not reachable ({exc})"
    return None


async def connect_broker(broker_url: str = BROKER_URL) -> aio_pika.abc.AbstractConnection:
    """A plain (not robust) connection to ``broker_url``: one node's URL, or the first node of a cluster's
    comma-separated list that answers (the framework's own node order and per-node time limit)."""
    nodes = BrokerNodes.parse(broker_url)
    first = URL(nodes.url)

    async def open_one(host: str, port: int) -> aio_pika.abc.AbstractConnection:
        try:
            return await aio_pika.connect(str(first.with_host(host).with_port(port)))
        except AMQPConnectionError as exc:  # a node that is down: try the next one
            raise OSError(*exc.args) from exc

    return await NodeRotation(nodes.addresses).first_reachable(open_one)


async def drop_namespace(
    namespace: str, queue_suffixes: Iterable[str], *, broker_url: str = BROKER_URL, store_url: str = STORE_URL
) -> None:
    """Drop a run's PostgreSQL schema, its queues ``<namespace>.<suffix>`` and its exchange ``<namespace>``."""
    conn = await asyncpg.connect(store_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {namespace} CASCADE")
    finally:
        await conn.close()
    amqp = await connect_broker(broker_url)
    try:
        channel = await amqp.channel()
        for suffix in queue_suffixes:
            await channel.queue_delete(f"{namespace}.{suffix}")
        await channel.exchange_delete(namespace)  # the topic exchange every publish goes through
    finally:
        await amqp.close()
