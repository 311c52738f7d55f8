"""Least privilege per role, on the machine's RabbitMQ: the permissions of docs/deploy.md are enough for each
role, and what they deny is denied: a service's credentials reply on the service queue but cannot publish to
the inner queue (nor through the default exchange), nor consume it; the gateway's cannot consume at all.

The test creates a vhost and three users with ``rabbitmqctl`` and deletes them afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import aio_pika
import aiormq
import pytest

from framework.broker.base import INNER, SERVICE, Delivery, Outgoing
from framework.broker.rabbitmq import RabbitBroker
from framework.errors import BrokerError

pytestmark = pytest.mark.integration

PREFIX = "stageflow"


def role_permissions(prefix: str, apis: str) -> dict[str, tuple[str, str, str, str]]:
    r"""(configure, write, read, topic write) per role, exactly as docs/deploy.md lists them (topic read, which
    RabbitMQ checks on a binding's key, is ``^<prefix>\..+$`` for all: each role binds the queues it declares)."""
    p = prefix.replace(".", r"\.")
    return {
        # read on every queue: declaring a queue with a dead-letter exchange needs read on it (workers create them)
        "worker": (f"^{p}(\\..*)?$", f"^{p}(\\..*)?$", f"^{p}(\\..*)?$",
                   f"^{p}\\.(inner|service|parked|command\\..+)$"),
        "service": (f"^{p}(\\..*)?$", f"^{p}(\\..*)?$", f"^{p}(\\.command\\.({apis}))?$",
                    f"^{p}\\.(service|parked)$"),
        "gateway": (f"^{p}(\\..*)?$", f"^{p}(\\..*)?$", f"^{p}$", f"^{p}\\.inner$"),
    }


@dataclass
class Vhost:
    name: str
    passwords: dict[str, str]

    def url(self, role: str) -> str:
        return f"amqp://{self.name}-{role}:{self.passwords[role]}@127.0.0.1:5672/{self.name}"


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost() -> Iterator[Vhost]:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    name = f"sfperm-{uuid.uuid4().hex[:8]}"
    roles = role_permissions(PREFIX, "effects")
    created = Vhost(name, {role: uuid.uuid4().hex for role in roles})
    _ctl("add_vhost", name)
    try:
        for role, (configure, write, read, topic_write) in roles.items():
            user = f"{name}-{role}"
            _ctl("add_user", user, created.passwords[role])
            _ctl("set_permissions", "-p", name, user, configure, write, read)
            _ctl("set_topic_permissions", "-p", name, user, PREFIX, topic_write, f"^{PREFIX}\\..+$")
        yield created
    finally:
        for role in roles:
            subprocess.run(["rabbitmqctl", "delete_user", f"{name}-{role}"], capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=60)


async def test_each_role_can_do_its_job_and_a_service_cannot_reach_the_inner_queue(vhost: Vhost) -> None:
    worker = RabbitBroker(vhost.url("worker"), prefix=PREFIX)
    service = RabbitBroker(vhost.url("service"), prefix=PREFIX)
    gateway = RabbitBroker(vhost.url("gateway"), prefix=PREFIX)
    await worker.connect()
    await service.connect()
    await gateway.connect()
    try:
        received: asyncio.Queue[Delivery] = asyncio.Queue()

        async def keep(delivery: Delivery) -> None:
            await received.put(delivery)
            await delivery.ack()

        # the worker: consumes inner and service, publishes stages and commands
        await worker.consume(INNER, keep, prefetch=10)
        await worker.consume(SERVICE, keep, prefetch=10)
        await worker.publish([Outgoing(INNER, "w-1", b"{}"), Outgoing("command:effects", "w-2", b"{}")])
        # the service: consumes its command queue, replies on the service queue
        await service.consume("command:effects", keep, prefetch=10)
        await service.publish([Outgoing(SERVICE, "s-1", b"{}")])
        # the gateway: starts processes on the inner queue
        await gateway.publish([Outgoing(INNER, "g-1", b"{}")])
        ids = set()
        async with asyncio.timeout(10):
            while len(ids) < 4:
                ids.add((await received.get()).message_id)
        assert ids == {"w-1", "w-2", "s-1", "g-1"}

        with pytest.raises(BrokerError, match="refused"):  # a service cannot put a stage on the inner queue
            await service.publish([Outgoing(INNER, "forged", b"{}")])
        with pytest.raises(BrokerError, match="refused"):
            await service.consume(INNER, keep, prefetch=10)
        with pytest.raises(BrokerError, match="refused"):
            await gateway.consume(SERVICE, keep, prefetch=10)
        with pytest.raises(BrokerError, match="refused"):  # nor a command, whatever the service
            await gateway.publish([Outgoing("command:effects", "g-2", b"{}")])
    finally:
        for broker in (worker, service, gateway):
            await broker.close()

    # nor around Stageflow: straight to the default exchange, with the service's credentials
    connection = await aio_pika.connect(vhost.url("service"))
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=f"{PREFIX}.inner")
    finally:
        await connection.close()
    await asyncio.sleep(0.5)
    assert received.empty(), "a refused message arrived"
