"""The chaos suite (``make chaos``, :mod:`chaos`) in short: the same seven scenarios with small numbers.

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


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_chaos_scenario(scenario, servers_reachable: None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if scenario.name == "restarts" and (servers.missing_tools() or not LOCAL):
        pytest.skip("restarting the servers needs rabbitmqctl and pg_ctlcluster, and servers on 127.0.0.1")
    result = await run_scenario(scenario, TEST, tmp_path, random.Random(f"{SEED}/{scenario.name}"))
    context = f"seed={SEED}\n" + json.dumps(result.summary(), indent=1, default=str)
    assert result.started > 0, context
    assert result.lost == 0, context
    assert result.applied_twice == 0, context
    assert result.problems == [], context
