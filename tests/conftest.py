"""Fixtures for the suite.

Integration tests (marked ``integration``) run on the real RabbitMQ and PostgreSQL named by
``STAGEFLOW_TEST_BROKER_URL`` / ``STAGEFLOW_TEST_STORE_URL`` (default: the local ones). Each test gets
its own PostgreSQL schema and RabbitMQ queue prefix, dropped afterwards, so tests never see each
other's messages or documents. If the servers are unreachable the run stops with instructions: these
tests are the proof of our guarantees and are never skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from framework import Settings
from tests.support.servers import BROKER_URL, STORE_URL, drop_namespace, unreachable

TEST_SECRET = "test-secret-key-0123456789-abcdefghijklmnop"  # 32 bytes at least


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.keywords or "fault" in item.keywords:
            item.add_marker(pytest.mark.integration)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real RabbitMQ and PostgreSQL")


@pytest.fixture(scope="session")
def servers_reachable(request: pytest.FixtureRequest) -> None:
    problem = asyncio.run(unreachable())
    if problem:
        pytest.exit(
            f"{problem}.\nRun `make services` (starts local RabbitMQ/PostgreSQL), or point "
            "STAGEFLOW_TEST_BROKER_URL / STAGEFLOW_TEST_STORE_URL at yours. "
            "`make test-unit` runs only the tests that need no server.",
            returncode=3,
        )


@pytest.fixture
def namespace() -> str:
    """A unique name for this test's schema and queue prefix."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(servers_reachable: None, namespace: str) -> Iterator[Settings]:
    yield Settings(
        broker_url=BROKER_URL,
        store_url=STORE_URL,
        store_schema=namespace,
        queue_prefix=namespace,
        secret_keys=[TEST_SECRET],
        relay_grace_s=2.0,
        timer_interval_s=0.2,
        log_level="WARNING",
        store_pool_size=4,  # many processes share the test server's connection limit
    )
    asyncio.run(drop_namespace(namespace, _QUEUE_SUFFIXES))


# Every queue a test may create under its namespace.
_QUEUE_SUFFIXES = ("inner", "service", "parked", "command.scheduling", "command.third_party_jobs",
                       "command.effects", "command.moody", "command.silent", "command.http", "command.lead_writer",
                   "command.dbquery.shop", "command.notify")



def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a subprocess (worker, services) use ``settings``."""
    env = dict(os.environ)
    env.update(
        STAGEFLOW_BROKER_URL=settings.broker_url,
        STAGEFLOW_STORE_URL=settings.store_url,
        STAGEFLOW_STORE_SCHEMA=settings.store_schema,
        STAGEFLOW_QUEUE_PREFIX=settings.queue_prefix,
        STAGEFLOW_SECRET_KEYS=",".join(settings.secret_keys),
        STAGEFLOW_RELAY_GRACE_S=str(settings.relay_grace_s),
        STAGEFLOW_TIMER_INTERVAL_S=str(settings.timer_interval_s),
        STAGEFLOW_LOG_LEVEL=settings.log_level,
        STAGEFLOW_STORE_POOL_SIZE=str(settings.store_pool_size),
    )
    env.update(extra)
    return env


@pytest.fixture
async def pg(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, for assertions and injected faults."""
    conn = await asyncpg.connect(STORE_URL)
    yield conn
    await conn.close()
