"""The chaos suite (``make chaos``, :mod:`chaos`) in short: its seven scenarios on the tests' servers, with small
numbers. (Its two cluster scenarios, a RabbitMQ node killed and a PostgreSQL failover, start servers of their
own; ``tests/test_rabbit_cluster.py`` and ``tests/test_pg_failover.py`` run the same faults in the suite.)

Each scenario runs on its own schema and queue prefix with its own worker and services subprocesses: random
worker SIGKILLs, a RabbitMQ connection drop and a PostgreSQL restart (``-m immediate``), a frozen worker whose
late writes are refused, duplicated/stale messages, poison messages, malformed and tampered messages, an
attacker on the broker and the gateway. Nothing may be lost or applied twice (witnessed by the ledger trigger
and the effects table), and each scenario's own expectations must hold. The restart scenario stops and starts
the local PostgreSQL, so it needs ``pg_ctlcluster``/``rabbitmqctl`` and servers on this machine.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from chaos import servers
from chaos.scenarios import SCENARIOS, TEST, run_scenario
from tests.conftest import BROKER_URL, STORE_URL

pytestmark = [pytest.mark.fault, pytest.mark.integration]

SEED = int(os.environ.get("STAGEFLOW_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
LOCAL = all("127.0.0.1" in url or "localhost" in url for url in (BROKER_URL, STORE_URL))


ON_TEST_SERVERS = [s for s in SCENARIOS if s.servers is None]


@pytest.mark.parametrize("scenario", ON_TEST_SERVERS, ids=[s.name for s in ON_TEST_SERVERS])
async def test_chaos_scenario(scenario, servers_reachable: None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if scenario.name == "restarts" and (servers.missing_tools() or not LOCAL):
        pytest.skip("restarting the servers needs rabbitmqctl and pg_ctlcluster, and servers on 127.0.0.1")
    result = await run_scenario(scenario, TEST, tmp_path, random.Random(f"{SEED}/{scenario.name}"))
    context = f"seed={SEED}\n" + json.dumps(result.summary(), indent=1, default=str)
    assert result.started > 0, context
    assert result.lost == 0, context
    assert result.applied_twice == 0, context
    assert result.problems == [], context
