"""The ``notify`` service: webhook, email and log notifications, each sent once per taskId.

The service runs with a database inbox: a notification's taskId and reply are recorded in the same
transaction that is open while it is sent, so a redelivered command (a lost reply, a restarted service)
gets the recorded reply and nothing is sent again. One window stays open, as for any effect outside a
database: a crash after the SMTP server or the webhook accepted and before the inbox row commits sends it
once more. Both carry a key derived from the taskId for that case: the webhook the HTTP adapter's
``Idempotency-Key``, the email a ``Message-ID`` that mail clients use to drop a duplicate.

A command's payload (built by the blueprint compiler, templates already rendered)::

    {"channel": "webhook", "request": {...an http command's request...}}
    {"channel": "email", "to": ["a@example.com"], "cc": [], "subject": "...", "body": "..."}
    {"channel": "log", "level": "info", "message": "...", "fields": {...}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import aiosmtplib
import structlog

from framework.errors import ServiceError
from framework.http.adapter import HttpAdapter, idempotency_key
from framework.messages import ServiceCommand
from framework.notify.settings import SmtpSettings
from framework.service.inbox import ServiceTransaction

NOTIFY_API = "notify"
CHANNELS = ("webhook", "email", "log")
LOG_LEVELS = ("info", "warning", "error")
_MAX_RECIPIENTS = 100

log = structlog.get_logger("stageflow.notify")


class Notifier:
    """The handler of ``notify``. ``http`` sends webhooks (its command path: the request's checks, the
    idempotency key, which statuses are retried); ``smtp`` says where email goes."""

    def __init__(self, *, http: HttpAdapter, smtp: SmtpSettings) -> None:
        self._http = http
        self._smtp = smtp

    async def handle(self, command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
        payload = command.payload
        channel = payload.get("channel") if isinstance(payload, Mapping) else None
        if channel == "webhook":
            return await self._http.send(command.task_id, payload.get("request"))
        if channel == "email":
            return await self._email(command.task_id, payload)
        if channel == "log":
            return _log(payload)
        raise ServiceError(f"a notify command needs channel {', '.join(repr(c) for c in CHANNELS)}, got {channel!r}")

    async def _email(self, task_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        smtp = self._smtp
        if not smtp.host or not smtp.from_address:
            raise ServiceError("email is not configured where the notify service runs: set STAGEFLOW_SMTP_HOST "
                               "and STAGEFLOW_SMTP_FROM (and STAGEFLOW_SMTP_PORT, _USER, _PASSWORD, _STARTTLS)")
        to, cc = _addresses(payload.get("to"), "to"), _addresses(payload.get("cc") or [], "cc")
        if not to:
            raise ServiceError("an email notification needs at least one address in 'to'")
        message = EmailMessage()
        message_id = f"<{idempotency_key(task_id)}@stageflow>"
        try:
            message["From"] = smtp.from_address
            message["To"] = ", ".join(to)
            if cc:
                message["Cc"] = ", ".join(cc)
            message["Subject"] = _text(payload.get("subject"), "subject")
            message["Message-ID"] = message_id
            message.set_content(_text(payload.get("body"), "body"))
        except ValueError as exc:  # a line break in a header: refused, never folded into a new header
            raise ServiceError(f"email notification: {exc}") from None
        password = smtp.password.get_secret_value() if smtp.password else None
        try:
            refused, _ = await aiosmtplib.send(
                message, hostname=smtp.host, port=smtp.port, username=smtp.user, password=password,
                start_tls=smtp.starttls and not smtp.tls, use_tls=smtp.tls, timeout=smtp.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise ServiceError(f"email refused for every recipient: {exc}") from None
        except aiosmtplib.SMTPResponseException as exc:  # 4xx: try later; 5xx: the server will not take it
            raise ServiceError(f"SMTP {exc.code}: {exc.message}", retryable=exc.code < 500) from None
        except (aiosmtplib.SMTPException, OSError) as exc:  # refused connection, timeout, TLS: try later
            raise ServiceError(f"SMTP server {smtp.host}:{smtp.port}: {type(exc).__name__}: {exc}",
                               retryable=True) from None
        accepted = [a for a in (*to, *cc) if a not in refused]
        return {"channel": "email", "message_id": message_id, "accepted": accepted, "refused": sorted(refused)}


def _log(payload: Mapping[str, Any]) -> dict[str, Any]:
    level = payload.get("level") or "info"
    if level not in LOG_LEVELS:
        raise ServiceError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    fields = payload.get("fields") or {}
    if not isinstance(fields, Mapping):
        raise ServiceError("log fields must be an object")
    message = _text(payload.get("message"), "message")
    getattr(log, level)("notification", message=message, fields=dict(fields))
    return {"channel": "log", "level": level, "logged": True}


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ServiceError(f"a notification's {field} must be a string, got {type(value).__name__}")
    return value


def _addresses(value: Any, field: str) -> list[str]:
    items: Sequence[Any] = [value] if isinstance(value, str) else value if isinstance(value, list) else [None]
    if len(items) > _MAX_RECIPIENTS:
        raise ServiceError(f"email {field}: {len(items)} addresses; at most {_MAX_RECIPIENTS}")
    out = []
    for item in items:
        if not isinstance(item, str) or "@" not in parseaddr(item)[1] or any(c in item for c in "\r\n"):
            raise ServiceError(f"email {field}: {item!r} is not an email address")
        out.append(item)
    return out
