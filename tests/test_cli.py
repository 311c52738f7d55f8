"""The ``stageflow`` command on the embedded store: start, show, list, cancel, retry, reprocess, cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from framework.cli import cli


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("STAGEFLOW_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("STAGEFLOW_BROKER_URL", "memory://")
    monkeypatch.setenv("STAGEFLOW_CASES", "business_cases")
    return CliRunner()


def test_start_show_cancel_retry_reprocess(runner: CliRunner) -> None:
    order = json.dumps({"order_id": "A-1", "desired_date": "2026-12-01"})
    started = runner.invoke(cli, ["start", "ecommerce_order", "--input", order, "--client-key", "A-1"])
    assert started.exit_code == 0, started.output
    process_id = started.stdout.strip()
    again = runner.invoke(cli, ["start", "ecommerce_order", "--input", order, "--client-key", "A-1"])
    assert again.stdout.strip() == process_id

    shown = json.loads(runner.invoke(cli, ["show", process_id]).stdout)
    assert shown["status"] == "running" and shown["history"][0]["event"] == "started"

    assert runner.invoke(cli, ["cancel", process_id]).stdout.strip() == f"{process_id} cancelled"
    twice = runner.invoke(cli, ["cancel", process_id])
    assert twice.exit_code == 2 and "already cancelled" in twice.stderr and "Traceback" not in twice.output

    bad = runner.invoke(cli, ["retry", process_id, "--input", json.dumps({"order_id": ""})])
    assert bad.exit_code == 2 and "order_id" in bad.stderr
    assert json.loads(runner.invoke(cli, ["show", process_id]).stdout)["status"] == "cancelled"

    counts = runner.invoke(cli, ["reprocess", "--status", "cancelled", "--case", "ecommerce_order"])
    assert counts.exit_code == 0, counts.output
    job = json.loads(counts.stdout)
    assert {k: job[k] for k in ("status", "total", "retried", "skipped")} == {
        "status": "completed", "total": 1, "retried": 1, "skipped": 0}
    assert f"{job['job_id']}: 1/1 (100 %) handled, 1 retried, 0 not" in counts.stderr  # progress as it goes
    assert json.loads(runner.invoke(cli, ["show", process_id]).stdout)["status"] == "running"
    listed = runner.invoke(cli, ["jobs"]).stdout.split()
    assert listed[:4] == [job["job_id"], "reprocess", "completed", "1/1"]
    again = runner.invoke(cli, ["reprocess", "--resume", job["job_id"]])
    assert again.exit_code == 2 and "is completed" in again.stderr  # only interrupted jobs resume
    bad = runner.invoke(cli, ["reprocess", "--status", "running"])
    assert bad.exit_code == 2 and "running" in bad.output


def test_list_filters_and_limits(runner: CliRunner) -> None:
    ids = []
    for i in range(3):
        order = json.dumps({"order_id": f"L-{i}", "desired_date": "2026-12-01"})
        ids.append(runner.invoke(cli, ["start", "ecommerce_order", "--input", order]).stdout.strip())
    assert runner.invoke(cli, ["cancel", ids[0]]).exit_code == 0

    listed = runner.invoke(cli, ["list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(reversed(ids))  # newest first
    process_id, case, status, stage, progress, day, time = lines[0].split()
    assert (process_id, case, status, stage, progress) == (ids[2], "ecommerce_order", "running", "get_schedule", "0/4")
    assert len(day) == 10 and len(time) == 8

    cancelled = runner.invoke(cli, ["list", "--status", "cancelled", "--case", "ecommerce_order"]).stdout.splitlines()
    assert [line.split()[:3] for line in cancelled] == [[ids[0], "ecommerce_order", "cancelled"]]
    assert len(runner.invoke(cli, ["list", "--limit", "2"]).stdout.splitlines()) == 2
    none = runner.invoke(cli, ["list", "--failed-stage", "create_job"])
    assert none.exit_code == 0 and none.stdout == "" and "no process matches" in none.stderr
    bad = runner.invoke(cli, ["list", "--status", "sleeping"])
    assert bad.exit_code == 2 and "sleeping" in bad.output


def test_errors_are_one_clear_line_not_a_traceback(runner: CliRunner) -> None:
    unknown = runner.invoke(cli, ["start", "no_such_case"])
    assert unknown.exit_code == 2
    assert "unknown case 'no_such_case'" in unknown.stderr and "registered cases: ecommerce_order" in unknown.stderr
    missing = runner.invoke(cli, ["show", "nope"])
    assert missing.exit_code == 2 and "no process 'nope'" in missing.stderr
    listed = runner.invoke(cli, ["cases"])
    assert listed.stdout.strip() == "ecommerce_order v1: get_schedule -> create_job -> keep_job_id -> finish"


def test_gateway_refuses_to_start_without_api_keys(runner: CliRunner) -> None:
    refused = runner.invoke(cli, ["gateway", "--port", "0"])
    assert refused.exit_code == 2 and "no API keys" in refused.stderr
    assert "STAGEFLOW_GATEWAY_INSECURE=true" in refused.stderr and "Traceback" not in refused.output


def test_a_setting_that_does_not_parse_is_one_clear_line_not_a_traceback() -> None:
    env = {**os.environ, "STAGEFLOW_PREFETCH": "0"}
    done = subprocess.run(
        [sys.executable, "-c", "from framework.cli import main; main()", "worker"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "error: STAGEFLOW_PREFETCH: Input should be greater than or equal to 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_cases_is_a_clear_error_for_the_cli_the_worker_and_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library names no default cases: with neither STAGEFLOW_CASES nor STAGEFLOW_BLUEPRINTS set, each
    entry point refuses to start and says which setting to set."""
    for name in ("STAGEFLOW_CASES", "STAGEFLOW_BLUEPRINTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STAGEFLOW_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("STAGEFLOW_BROKER_URL", "memory://")
    runner = CliRunner()
    for args in (["cases"], ["start", "ecommerce_order"], ["list"]):
        refused = runner.invoke(cli, args)
        assert refused.exit_code == 2, (args, refused.output)
        assert "no cases" in refused.stderr and "set STAGEFLOW_CASES" in refused.stderr, args
        assert "Traceback" not in refused.output

    # Real processes: a worker (on a broker it never reaches: the settings are refused before any connection)
    # and a gateway (refused when its app is built, before the server starts).
    env = {key: value for key, value in os.environ.items() if key not in ("STAGEFLOW_CASES", "STAGEFLOW_BLUEPRINTS")}
    worker_env = {**env, "STAGEFLOW_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/", "STAGEFLOW_SECRET_KEYS": "k" * 32}
    gateway_env = {**env, "STAGEFLOW_GATEWAY_INSECURE": "true"}
    for command, command_env in ((["worker"], worker_env), (["gateway", "--port", "0"], gateway_env)):
        done = subprocess.run(
            [sys.executable, "-c", "from framework.cli import main; main()", *command],
            env=command_env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert "no cases" in done.stderr and "set STAGEFLOW_CASES" in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr
