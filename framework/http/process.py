"""The HTTP adapter as a process of its own (``stageflow http-adapter``): only the ``http`` service, no worker.

Run it where the API secrets may live, and set ``STAGEFLOW_HTTP_ADAPTER=false`` on the workers: then the
``STAGEFLOW_HTTP_SECRET_*`` values are in no worker's environment at all. It needs the broker and the signing
keys (to verify each command's taskId), not the store. On SIGTERM it stops consuming and lets the requests in
flight finish and reply; a SIGKILL mid-request leaves the command unacked, so it is redelivered and sent again
with the same ``Idempotency-Key``.
"""

from __future__ import annotations

import os

from framework.errors import ConfigurationError
from framework.http.hosting import http_service
from framework.logs import configure_logging
from framework.runner import run_until_signalled
from framework.settings import Settings
from framework.taskid import TaskIdSigner
from framework.wiring import broker_from_settings


async def run_http_adapter(settings: Settings) -> None:
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.embedded:
        raise ConfigurationError("an http adapter process needs a real broker: the in-memory one lives in one process",
                                 hint="set STAGEFLOW_BROKER_URL=amqp://...")
    keys = settings.signing_keys()
    if not keys:
        raise ConfigurationError("STAGEFLOW_SECRET_KEYS is not set",
                                 hint="the adapter verifies each command's taskId with the workers' keys")
    broker = broker_from_settings(settings, connection_name=f"stageflow-http-adapter-{os.getpid()}")
    async with broker, http_service(settings, broker, signer=TaskIdSigner(keys)) as service:
        await run_until_signalled(service.start, service.stop)
