"""The batched acks never send an ack RabbitMQ would refuse (a refused ack closes the channel and makes
every unacked delivery on it come back)."""

from __future__ import annotations

import asyncio

from framework.broker.rabbitmq import _AckBatcher


class StrictChannel:
    """Acks as RabbitMQ judges them: the named tag must be outstanding; ``multiple`` also settles all below it."""

    def __init__(self, tags: int) -> None:
        self.outstanding = set(range(1, tags + 1))
        self.frames: list[tuple[int, bool]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        if delivery_tag not in self.outstanding:
            raise RuntimeError(f"PRECONDITION_FAILED - unknown delivery tag {delivery_tag}")
        self.frames.append((delivery_tag, multiple))
        self.outstanding -= {t for t in self.outstanding if t <= delivery_tag} if multiple else {delivery_tag}


async def test_a_multiple_ack_never_names_a_tag_acked_on_its_own_before() -> None:
    channel = StrictChannel(5)
    acks = _AckBatcher(channel)  # type: ignore[arg-type]
    await acks.ack(1)
    await acks.ack(3)  # 2 still running: 3 goes alone
    acks.settled(4)  # 4 was nacked
    channel.outstanding.discard(4)
    await acks.ack(2)  # now 1..4 are settled: one multiple ack, naming 2 (3 and 4 are gone already)
    await acks.ack(5)
    assert channel.outstanding == set()
    assert channel.frames == [(1, True), (3, False), (2, True), (5, True)]


async def test_acks_of_one_pass_go_as_one_frame() -> None:
    channel = StrictChannel(50)
    acks = _AckBatcher(channel)  # type: ignore[arg-type]
    await asyncio.gather(*(acks.ack(tag) for tag in range(1, 51)))
    assert channel.frames == [(50, True)] and channel.outstanding == set()
