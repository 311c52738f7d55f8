"""The lead-sync blueprint on RabbitMQ + PostgreSQL: three worker subprocesses (hosting the HTTP adapter) and
the ``lead_writer`` service as a subprocess, against the CRM stand-in on a real local HTTP server.

The blueprint's own cron schedule starts the sync (no test code starts a process); its export fans out into
one ``lead_writer`` command per lead. Mid-fan-out the service and a worker are SIGKILLed (the service is
restarted): the redelivered commands meet the service's inbox, so ``lead_writes`` (no unique key) holds
exactly one row per lead and export, and every sync completes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
import yaml

from business_cases.crm_api import CrmApi
from business_cases.lead_sync_demo import LEAD_SYNC
from business_cases.local_http import serve
from framework import Settings, Stageflow, Status
from framework.blueprint import load_blueprint
from framework.store.base import ProcessFilter
from tests.support.cluster import Cluster, wait_finished

pytestmark = pytest.mark.integration

LEADS = 400
SCHEDULE = {"name": "lead-sync", "cron": "*/2 * * * * *", "timezone": "Europe/Berlin", "input": {"segment": "b2b"}}


async def _count_writes(pg: asyncpg.Connection, schema: str) -> int:
    try:
        return await pg.fetchval(f"SELECT count(*) FROM {schema}.lead_writes")
    except asyncpg.UndefinedTableError:
        return 0


async def test_cron_started_lead_sync_writes_each_lead_once_under_sigkills(
    settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = settings.store_schema
    crm = CrmApi(count=LEADS)
    blueprint = yaml.safe_load(LEAD_SYNC.read_text())
    blueprint["schedules"] = [SCHEDULE]  # every 2 s instead of every 15 minutes in office hours
    path = tmp_path / "lead_sync.yaml"
    path.write_text(yaml.safe_dump(blueprint))
    with serve(crm.app()) as crm_url:
        constants = {"crm_api": crm_url}
        case = load_blueprint(path, constants=constants)
        async with Stageflow.from_settings(settings, cases=[case]) as flow:  # creates the schema first
            cluster = Cluster(
                settings, tmp_path, workers=3, services_modules=("business_cases.lead_services",),
                cases="business_cases", STAGEFLOW_BLUEPRINTS=str(path),
                STAGEFLOW_BLUEPRINT_CONSTANTS=json.dumps(constants),
                STAGEFLOW_HTTP_SECRET_CRM_AUTHORIZATION=f"Bearer {crm.token}",
                STAGEFLOW_HTTP_ALLOW_NETWORKS="127.0.0.1",  # the stand-in CRM listens on loopback
            )
            await cluster.start()
            killed_at = None
            try:
                deadline = time.monotonic() + 60
                while (written := await _count_writes(pg, schema)) < 60 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert written >= 60, cluster.logs()
                await flow.schedules.pause("lead-sync")  # a worker that read the row just before may start one more
                cluster.services[0].kill()  # SIGKILL mid-fan-out: its unacked commands are redelivered
                cluster.workers[0].kill()
                killed_at = await _count_writes(pg, schema)
                await asyncio.sleep(1)
                cluster.services[0].start()
                await asyncio.sleep(2)  # past the tick that may have fired with the pause
                ids = await flow.store.find_ids(ProcessFilter(case="lead_sync"))
                docs = await wait_finished(flow, ids, timeout_s=120)
            finally:
                codes = cluster.stop()
            rows = await pg.fetch(f"SELECT export_id, lead_id FROM {schema}.lead_writes")
            leads = await pg.fetchval(f"SELECT count(*) FROM {schema}.leads")

    assert ids and all(d.status is Status.COMPLETED for d in docs), [(d.status, d.error) for d in docs]
    assert all(d.client_key.startswith("schedule:lead-sync:") for d in docs)  # started by the schedule, not the test
    per_write = Counter((r["export_id"], r["lead_id"]) for r in rows)
    doubled = {k: n for k, n in per_write.items() if n > 1}
    assert not doubled, f"leads written more than once: {list(doubled.items())[:5]}"
    valid = set(crm.valid_leads())
    for doc in docs:
        assert doc.result["written"] == LEADS and doc.result["rejected"] == [LEADS, LEADS + 1]
        assert {lead for export, lead in per_write if export == doc.result["export_id"]} == valid
    assert leads == LEADS
    del codes["worker-0"]  # killed
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{cluster.logs()}"
    print(f"LEAD_SYNC workers=3 killed=worker+service syncs={len(docs)} leads_per_sync={LEADS} "
          f"lead_writes={len(rows)} doubled=0 writes_before_kill={killed_at} ticks={[d.client_key[19:] for d in docs]}")
