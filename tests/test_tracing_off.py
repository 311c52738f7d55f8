"""Tracing off costs nothing: without OTEL_TRACES_EXPORTER the worker, the services and the gateway never
import OpenTelemetry's SDK or ``framework.tracing``, and an unknown exporter name is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

from framework import Observer
from framework.document import ProcessDocument, TracedDocument
from framework.observers import Observers
from framework.testing import run_cases
from tests.support.cases import TracedTimers
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


class Counting(Observer):  # an observer that is not tracing (as metrics are): no document is stamped
    def __init__(self) -> None:
        self.transitions = 0

    def transition_committed(self, doc, entry) -> None:  # type: ignore[no-untyped-def]
        self.transitions += 1


async def test_documents_are_written_without_a_trace_field_when_tracing_is_off() -> None:
    async def effects(command, tx):  # type: ignore[no-untyped-def]
        return {"ok": True}

    counting = Counting()
    assert Observers([counting]).stamping == ()  # the commit path's one test: nobody stamps
    async with run_cases([TracedTimers], services={"effects": effects}, observers=[counting]) as env:
        doc = await env.run(TracedTimers, {"wait_s": 30})  # a call, a wait, a retry, a call
        assert doc.status.value == "completed" and counting.transitions == 5
        store = env.flow.store  # the text as written, read back with SQL (load() would hide a key it ignores)
        (raw,) = await store._rows("SELECT doc FROM processes WHERE process_id = ?1", doc.process_id)  # type: ignore[attr-defined]
    assert type(doc) is ProcessDocument and not isinstance(doc, TracedDocument)
    assert '"trace"' not in raw[0] and set(orjson_keys(raw[0])) == set(ProcessDocument.__dataclass_fields__)


def orjson_keys(raw: str) -> list[str]:
    import orjson

    return list(orjson.loads(raw))
