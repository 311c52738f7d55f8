"""The notify service's handler against real local servers: email to an aiosmtpd SMTP server, webhooks to a
real HTTP server through the HTTP adapter, structured log lines; and once per taskId through its inbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi import FastAPI, Request

from business_cases.local_http import serve
from framework import ServiceError
from framework.broker.base import SERVICE, Outgoing, command_queue
from framework.broker.memory import MemoryBroker
from framework.http import HttpAdapter, idempotency_key
from framework.messages import ServiceCommand
from framework.notify import Notifier, SmtpSettings
from framework.service import Service, SqliteInbox
from framework.service.inbox import StatelessInbox
from framework.taskid import TaskIdSigner
from tests.conftest import TEST_SECRET
from tests.support.mail import free_port, smtp_server

SIGNER = TaskIdSigner([TEST_SECRET])  # the adapter's own checks; notify's Service verifies its taskIds itself
LOCAL = ["127.0.0.1"]  # the webhook server is on loopback, refused unless allowed


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    hits: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/hooks/{name}")
    async def hook(name: str, request: Request) -> Any:
        hits.append({"name": name, "key": request.headers.get("idempotency-key"), "body": await request.json()})
        return {"ok": True}

    with serve(app) as url:
        yield url, hits


def smtp(port: int, **overrides: Any) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, starttls=False, from_address="shop@example.com", **overrides)


def mail(task_id: str = "task-1", **fields: Any) -> ServiceCommand:
    payload = {"channel": "email", "to": ["buyer@example.com"], "cc": [], "subject": "Restock A-1", "body": "20 x A-1"}
    return ServiceCommand(task_id, "notify", {**payload, **fields})


async def test_email_webhook_and_log(hooks: tuple[str, list[dict[str, Any]]]) -> None:
    url, hits = hooks
    with smtp_server() as (port, received):
        async with HttpAdapter(signer=SIGNER, allow_networks=LOCAL) as http:
            notifier = Notifier(http=http, smtp=smtp(port))
            sent = await notifier.handle(mail(), StatelessInbox())  # type: ignore[arg-type]
            webhook = await notifier.handle(ServiceCommand("task-2", "notify", {"channel": "webhook", "request": {
                "method": "POST", "url": f"{url}/hooks/restock", "json": {"run": "r1"}}}), None)  # type: ignore[arg-type]
            with structlog.testing.capture_logs() as logs:
                logged = await notifier.handle(ServiceCommand("task-3", "notify", {
                    "channel": "log", "level": "warning", "message": "ordered A-1", "fields": {"sku": "A-1"}}), None)  # type: ignore[arg-type]
    assert sent == {"channel": "email", "message_id": f"<{idempotency_key('task-1')}@stageflow>",
                    "accepted": ["buyer@example.com"], "refused": []}
    [message] = received.messages
    assert message["Subject"] == "Restock A-1" and message["To"] == "buyer@example.com"
    assert message["From"] == "shop@example.com" and message["Message-ID"] == sent["message_id"]
    assert message.get_payload().strip() == "20 x A-1"
    assert webhook["status"] == 200 and hits == [{"name": "restock", "key": idempotency_key("task-2"),
                                                  "body": {"run": "r1"}}]
    assert logged == {"channel": "log", "level": "warning", "logged": True}
    assert logs == [{"event": "notification", "message": "ordered A-1", "fields": {"sku": "A-1"},
                     "log_level": "warning"}]


async def test_bad_notifications_are_final_and_an_unreachable_server_is_retryable() -> None:
    async with HttpAdapter(signer=SIGNER, allow_networks=LOCAL) as http:
        with smtp_server() as (port, received):
            notifier = Notifier(http=http, smtp=smtp(port))
            with pytest.raises(ServiceError, match="linefeed or carriage return") as injected:
                await notifier.handle(mail(subject="hi\r\nBcc: everyone@example.com"), None)  # type: ignore[arg-type]
            with pytest.raises(ServiceError, match="'not-an-address' is not an email address"):
                await notifier.handle(mail(to=["not-an-address"]), None)  # type: ignore[arg-type]
            with pytest.raises(ServiceError, match="needs channel 'webhook', 'email', 'log'"):
                await notifier.handle(ServiceCommand("t", "notify", {"channel": "sms"}), None)  # type: ignore[arg-type]
        assert not injected.value.retryable and received.messages == []
        down = Notifier(http=http, smtp=smtp(free_port(), timeout_s=2))
        with pytest.raises(ServiceError, match=r"SMTP server 127\.0\.0\.1") as refused:
            await down.handle(mail(), None)  # type: ignore[arg-type]
        assert refused.value.retryable
        unset = Notifier(http=http, smtp=SmtpSettings())
        with pytest.raises(ServiceError, match="set STAGEFLOW_SMTP_HOST"):
            await unset.handle(mail(), None)  # type: ignore[arg-type]


async def test_a_redelivered_notification_is_sent_once(tmp_path: Path) -> None:
    """Through the service SDK and a real inbox: the same taskId twice sends one email, two replies."""
    broker = MemoryBroker()
    with smtp_server() as (port, received):
        async with (HttpAdapter(signer=SIGNER, allow_networks=LOCAL) as http,
                    SqliteInbox(str(tmp_path / "notify.db")) as inbox, broker):
            service = Service("notify", Notifier(http=http, smtp=smtp(port)).handle, broker=broker, inbox=inbox)
            await service.start()
            command = Outgoing(command_queue("notify"), "m", mail("task-once").to_json())
            for _ in range(2):
                await broker.publish([command])
                await broker.join([command_queue("notify")])
            await service.stop()
            replies = broker.messages(SERVICE)
    assert len(received.messages) == 1
    assert len(replies) == 2 and replies[0].body == replies[1].body  # the second is the recorded reply
