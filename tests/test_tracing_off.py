"""Tracing off costs nothing: without OTEL_TRACES_EXPORTER the worker, the services and the gateway never
import OpenTelemetry's SDK or ``framework.tracing``, and an unknown exporter name is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT

PROBE = """
import sys
import framework, framework.hosting, framework.cli, framework.worker, framework.service.sdk, gateway.app
from framework.telemetry import tracing_from_environment
assert tracing_from_environment("probe") is None
print(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk") or m == "framework.tracing"))
"""


def test_nothing_of_opentelemetry_is_imported_when_tracing_is_off() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    for exporter in (None, "none"):
        if exporter is not None:
            env["OTEL_TRACES_EXPORTER"] = exporter
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=60, check=True).stdout
        assert out.strip() == "[]"


def test_an_exporter_that_is_not_installed_is_a_clear_error() -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin_nowhere"}
    probe = ("from framework.errors import ConfigurationError\n"
             "from framework.telemetry import tracing_from_environment\n"
             "try:\n    tracing_from_environment('probe')\nexcept ConfigurationError as exc:\n"
             "    print(exc.message, '|', exc.hint)\n")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "OTEL_TRACES_EXPORTER names 'zipkin_nowhere', which is not installed" in out and "console" in out
