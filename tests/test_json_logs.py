"""JSON logs of a real worker subprocess, line by line: every line parses, and every line about a transition
says which process, case, case version, stage and transition it is about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework import Settings, Stageflow, Status
from tests.support.cluster import CASE_MODULES, Cluster, wait_finished
from tests.support.observe_cases import CASES

pytestmark = pytest.mark.integration

TRANSITION_KEYS = {"process_id", "case", "case_version", "stage", "transition"}


async def test_every_line_is_json_and_transition_lines_say_whose(settings: Settings, tmp_path: Path) -> None:
    cluster = Cluster(settings, tmp_path, workers=1, cases=f"{CASE_MODULES},tests.support.observe_cases",
                      STAGEFLOW_LOG_JSON="true", STAGEFLOW_LOG_LEVEL="debug")
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        await cluster.start()
        try:
            doc = await flow.start("metered", {"items": 3})
            [done] = await wait_finished(flow, [doc.process_id], timeout_s=60)
            assert done.status is Status.COMPLETED, cluster.logs()
        finally:
            assert cluster.stop()["worker-0"] == 0, cluster.logs()
    lines = cluster.workers[0].log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line, the libraries' too
    assert all({"event", "level", "timestamp"} <= r.keys() for r in records), lines
    ours = [r for r in records if r.get("process_id") == doc.process_id]
    events = [(r["event"], r.get("outcome")) for r in ours]
    assert ("stage failed", None) in events  # the first attempt's warning
    assert [o for e, o in events if e == "transition"] == ["retry", "fan_out", "completed"]
    for record in ours:
        assert record.keys() >= TRANSITION_KEYS, record
        assert (record["case"], record["case_version"]) == ("metered", 1)
    failed = next(r for r in ours if r["event"] == "stage failed")
    assert (failed["stage"], failed["transition"], failed["level"]) == ("spread", 1, "warning")
