"""The edges of a PostgreSQL failover that the failover run hits only sometimes, each forced here.

* A start whose create committed while its answer was lost (the primary died mid-commit): the client retries
  with its key and must get the first message sent, not left for the relay's grace (a run of
  ``tests/test_pg_failover.py`` once stalled 58.7 s on the relay's 60 s).
* A listed host that accepts TCP but never answers (a primary that died with its machine): asyncpg's connect
  timeout is one budget for all hosts, so the pool never reached the next one; each host now has its own limit.
* No listed host takes writes yet (between the primary's death and the promotion): a transient store error.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import asyncpg
import pytest

from framework import Settings, Stageflow
from framework.store.sql.pg_connection import CONNECT_TIMEOUT_PER_HOST_S, TRANSIENT_ERRORS, _hosts, connect
from tests.conftest import STORE_URL
from tests.support.cases import CASES, FiveCalls
from tests.support.ledger import queue_depth


def test_the_hosts_of_a_multi_host_url_are_read_in_order() -> None:
    assert _hosts("postgresql://app:pw@pg-1:5432,pg-2:6432/db?target_session_attrs=read-write") == [
        ("pg-1", 5432), ("pg-2", 6432)]
    assert _hosts("postgresql://app@[::1]:5441,pg-2,[fe80::2]/db") == [("::1", 5441), ("pg-2", None), ("fe80::2", None)]
    assert _hosts("postgresql://app@pg-1:5432/db") == []  # one host: asyncpg's own connect


def test_no_host_taking_writes_is_a_transient_error() -> None:
    assert issubclass(asyncpg.exceptions.TargetServerAttributeNotMatched, TRANSIENT_ERRORS)


@pytest.mark.integration
async def test_a_retried_start_sends_the_first_message_of_a_process_that_has_not_moved(settings: Settings) -> None:
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        engine = flow.engine
        # The first try: the document is committed, then the answer is lost (no publish happened).
        plan = engine.planner.start(FiveCalls.name, {"n": 1}, now=time.time(), client_key="order-1")
        _, created = await flow.store.create(plan.doc, plan.entry, due_at=plan.doc.due_at(settings.relay_grace_s))
        assert created
        inner = f"{settings.queue_prefix}.inner"
        assert await queue_depth(settings.broker_url, inner) == 0

        doc = await flow.start(FiveCalls, {"n": 1}, client_key="order-1")  # the client's retry
        assert doc.process_id == plan.doc.process_id and doc.version == 1
        assert await queue_depth(settings.broker_url, inner) == 1, "the first message was left for the relay"


@pytest.fixture
def silent_host() -> Iterator[int]:
    """A port that completes the TCP handshake (the kernel's backlog) and then never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.integration
async def test_a_host_that_never_answers_does_not_hold_up_the_next_one(
    servers_reachable: None, silent_host: int
) -> None:
    real = STORE_URL.split("://", 1)[1].split("@", 1)
    user, rest = (real[0], real[1]) if len(real) == 2 else ("postgres", real[0])
    address, _, tail = rest.partition("/")
    dsn = f"postgresql://{user}@127.0.0.1:{silent_host},{address}/{tail}"
    began = time.monotonic()
    conn = await asyncio.wait_for(connect(dsn), CONNECT_TIMEOUT_PER_HOST_S + 10)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    assert time.monotonic() - began >= CONNECT_TIMEOUT_PER_HOST_S - 0.5  # the silent host was tried first
