"""STAGEFLOW_BROKER_URL as the nodes of one cluster: parsed once, bad lists refused with a clear error, and the
order in which a new connection tries the nodes (after the one it last used). No server needed."""

from __future__ import annotations

import asyncio

import pytest

from framework.broker.nodes import BrokerNodes, NodeRotation
from framework.broker.rabbitmq import RabbitBroker
from framework.errors import ConfigurationError


def test_a_list_of_nodes_keeps_the_first_url_and_every_address() -> None:
    nodes = BrokerNodes.parse("amqp://u:p@h1:5672/v, amqp://u:p@h2:5673/v,amqp://u:p@h3/v")
    assert nodes.url == "amqp://u:p@h1:5672/v"
    assert nodes.addresses == (("h1", 5672), ("h2", 5673), ("h3", 5672))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "empty"),
        ("amqp://u:p@h1/v,http://h2/", "not an AMQP node URL"),
        ("amqp://u:p@h1/v,amqp://u:other@h2/v", "differs from the first one"),
        ("amqp://u:p@h1/v,amqp://u:p@h2/w", "differs from the first one"),
        ("amqp://u:p@h1/v,amqp://u:p@h1:5672/v", "listed twice"),
        ("amqp://u:p@h1:notaport/v", "bad port"),
    ],
)
def test_a_bad_node_list_is_refused_with_a_clear_error(value: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as caught:
        BrokerNodes.parse(value)
    assert "other" not in str(caught.value)  # a password never reaches the message


def test_the_broker_refuses_a_bad_list_before_any_io() -> None:
    with pytest.raises(ConfigurationError):
        RabbitBroker("amqp://u:p@h1/,amqp://x:p@h2/")
    with pytest.raises(ConfigurationError):
        RabbitBroker("amqp://u:p@h1/", quorum_group_size=-1)


def test_each_new_connection_starts_after_the_node_it_last_used() -> None:
    rotation = NodeRotation((("a", 1), ("b", 2), ("c", 3)))
    assert rotation.order() == [("a", 1), ("b", 2), ("c", 3)]
    rotation.connected(("a", 1))
    assert rotation.order() == [("b", 2), ("c", 3), ("a", 1)]
    rotation.connected(("c", 3))
    assert rotation.order()[0] == ("a", 1)


async def test_unreachable_nodes_are_skipped_and_all_down_is_an_error() -> None:
    rotation = NodeRotation((("a", 1), ("b", 2), ("c", 3)), connect_timeout_s=0.05)
    tried: list[str] = []

    async def open_one(host: str, port: int) -> str:
        tried.append(host)
        if host == "a":
            raise ConnectionRefusedError("refused")
        if host == "b":
            await asyncio.sleep(1)  # a host that never answers: the per-node timeout moves on
        return host

    assert await rotation.first_reachable(open_one) == "c"
    assert tried == ["a", "b", "c"] and rotation.current == ("c", 3)

    async def none_up(host: str, port: int) -> str:
        raise ConnectionRefusedError(host)

    with pytest.raises(OSError, match="no RabbitMQ node reachable"):
        await rotation.first_reachable(none_up)
