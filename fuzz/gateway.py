"""`make fuzz`: a real gateway (uvicorn, on the local PostgreSQL and RabbitMQ, a throwaway namespace) fuzzed
by schemathesis from its own OpenAPI schema, bounded in examples and time.

Checks: no 5xx (``not_a_server_error``), every status and content type is one the schema documents
(``status_code_conformance``, ``content_type_conformance``). NUL characters are generated too. Each request
carries the operate key; the key checks themselves are covered by tests/test_gateway_hostile.py. Exits with
schemathesis's code (0: every check held).

    .fuzz-venv/bin/python -m fuzz.gateway [--max-examples 25] [--max-time 240]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.support.servers import BROKER_URL, STORE_URL, drop_namespace

KEY = "fuzz-operate-key-" + uuid.uuid4().hex  # 49 bytes, new each run
QUEUES = ("inner", "service", "parked", "command.http", "command.scheduling", "command.third_party_jobs")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=25, help="examples per operation")
    parser.add_argument("--max-time", type=int, default=240, help="seconds for the whole run")
    args = parser.parse_args()
    namespace = f"fuzz_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = {**os.environ, "STAGEFLOW_BROKER_URL": BROKER_URL, "STAGEFLOW_STORE_URL": STORE_URL,
           "STAGEFLOW_STORE_SCHEMA": namespace, "STAGEFLOW_QUEUE_PREFIX": namespace,
           "STAGEFLOW_SECRET_KEYS": "fuzz-secret-" + uuid.uuid4().hex, "STAGEFLOW_API_KEYS_OPERATE": KEY,
           "STAGEFLOW_CASES": "business_cases", "STAGEFLOW_LOG_LEVEL": "WARNING"}
    log = Path(tempfile.mkdtemp(prefix="fuzz-")) / "gateway.log"
    with log.open("w") as out:
        gateway = subprocess.Popen([sys.executable, "-m", "framework", "gateway", "--host", "127.0.0.1",
                                    "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or gateway.poll() is not None:
                print(log.read_text()[-3000:], file=sys.stderr)
                return 2
            time.sleep(0.2)
        schema = httpx.get(f"{base}/openapi.json", headers={"X-API-Key": KEY}, timeout=10).json()
        schema_file = log.with_name("openapi.json")
        schema_file.write_text(json.dumps(schema))
        code = subprocess.call([
            str(Path(sys.executable).with_name("schemathesis")), "run", str(schema_file), "--url", base,
            "-H", f"X-API-Key: {KEY}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance",
            "--max-examples", str(args.max_examples), "--max-time", str(args.max_time), "--workers", "2",
            "--generation-allow-x00", "true", "--request-timeout", "30", "--seed", "15",
            # Not "coverage": schemathesis 4.32.5 fails inside that phase with a KeyError of its own.
            "--phases", "examples,fuzzing,stateful",
            "--exclude-path", "/metrics",  # Prometheus text: no JSON schema to conform to
        ])
        errors = [line for line in log.read_text().splitlines() if "Traceback" in line or "unexpected gateway" in line]
        print(f"gateway log: {log} ({len(errors)} tracebacks or unexpected errors)")
        return code or (1 if errors else 0)
    finally:
        gateway.terminate()
        try:
            gateway.wait(20)
        except subprocess.TimeoutExpired:
            gateway.kill()
        asyncio.run(drop_namespace(namespace, QUEUES))


if __name__ == "__main__":
    sys.exit(main())
