"""Hosting the ``notify`` service: its inbox (``stageflow_notify_inbox``), an HTTP adapter for webhooks, SMTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from framework.broker.base import Broker
from framework.http.adapter import HttpAdapter
from framework.notify.service import NOTIFY_API, Notifier
from framework.notify.settings import NotifySettings, SmtpSettings
from framework.service.hosting import inbox_from_url
from framework.service.sdk import AfterCommit, Service
from framework.settings import Settings
from framework.taskid import TaskIdSigner

INBOX_TABLE = "stageflow_notify_inbox"


@asynccontextmanager
async def hosted_notifier(
    settings: Settings, broker: Broker, *, signer: TaskIdSigner, notify: NotifySettings | None = None,
    smtp: SmtpSettings | None = None, after_commit: AfterCommit | None = None,
) -> AsyncIterator[Service]:
    """The ``notify`` service (not started) with its inbox open; both are closed when the block ends."""
    notify = notify or NotifySettings()
    inbox = inbox_from_url(notify.db_url or settings.store_url, table=INBOX_TABLE, pool_size=notify.concurrency)
    adapter = HttpAdapter(
        signer=signer, allow_networks=settings.http_allow_networks, hosts_by_secret=settings.http_hosts_by_secret,
        default_timeout_s=settings.http_timeout_s, max_body_bytes=settings.http_max_body_bytes,
        max_connections=notify.concurrency,
    )
    notifier = Notifier(http=adapter, smtp=smtp or SmtpSettings())
    async with adapter, inbox:
        yield Service(NOTIFY_API, notifier.handle, broker=broker, inbox=inbox, prefetch=notify.concurrency,
                      max_message_bytes=settings.max_message_bytes, signer=signer, after_commit=after_commit)
