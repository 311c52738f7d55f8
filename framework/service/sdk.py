"""Writing a service: consume commands, apply each effect at most once per taskId, reply.

    async def create_job(command, tx):
        job_id = await tx.fetchval("INSERT INTO jobs (order_id) VALUES ($1) RETURNING id", ...)
        return {"job_id": job_id}

    service = Service("jobs", create_job, broker=broker, inbox=PostgresInbox(dsn))
    await service.start()

The handler runs inside the inbox's transaction: its writes and the taskId's inbox row commit together,
so however often a command is delivered, its effect is applied once and the same reply is sent each time.
Raise ``ServiceError`` to answer with a business error (recorded like a result, so it is final), or
``ServiceError(..., retryable=True)`` for a temporary one (nothing is recorded; the caller's retry policy
may send the same command again). Raise ``MessageError`` for a command that must not be acted on at all: it is
parked with the reason. Any other exception rolls back and the command is redelivered.

A service that holds the secret keys (the ``http`` adapter workers host) is given the ``signer``: it then
acts only on commands whose taskId we signed, so broker access alone cannot make it send a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from framework.broker.base import SERVICE, Broker, Consumer, Delivery, Outgoing, command_queue
from framework.errors import InfrastructureError, MessageError, ServiceError
from framework.messages import DEFAULT_MAX_MESSAGE_BYTES, ServiceCommand, ServiceReplyMessage
from framework.service.inbox import Inbox, ServiceTransaction
from framework.taskid import TaskIdSigner, TaskRef
from framework.telemetry import publish_headers

if TYPE_CHECKING:
    from framework.service.metrics import ServiceMetrics
    from framework.tracing import Tracing

log = structlog.get_logger("stageflow.service")

CommandHandler = Callable[[ServiceCommand, ServiceTransaction], Awaitable[Any]]
# Runs after a command's effect and inbox row committed, before its reply is published (the fault tests pause
# a service subprocess there, then SIGKILL it: the redelivered command must find the recorded reply).
AfterCommit = Callable[[ServiceCommand], Awaitable[None]]


class _Rejected(Exception):
    def __init__(self, error: ServiceError) -> None:
        self.error = error


class Service:
    def __init__(
        self,
        api: str,
        handler: CommandHandler,
        *,
        broker: Broker,
        inbox: Inbox,
        prefetch: int = 32,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        retry_delay_s: float = 1.0,
        metrics: ServiceMetrics | None = None,
        tracing: Tracing | None = None,
        signer: TaskIdSigner | None = None,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.tracing = tracing  # continues the trace of each command (its ``traceparent`` header)
        self.handler = handler
        self.broker = broker
        self.inbox = inbox
        self.prefetch = prefetch
        self.max_message_bytes = max_message_bytes
        self.retry_delay_s = retry_delay_s
        self.signer = signer  # given (the engine's own services): a command runs only if its taskId verifies
        self.after_commit = after_commit
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._consumer: Consumer | None = None

    async def start(self) -> None:
        self._consumer = await self.broker.consume(command_queue(self.api), self._on_command, prefetch=self.prefetch)
        log.info("service started", api=self.api)

    async def stop(self, *, timeout_s: float = 30.0) -> None:
        if self._consumer is not None:
            await self._consumer.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout_s)

    async def _on_command(self, delivery: Delivery) -> None:
        task = asyncio.current_task()  # brokers run each delivery in a task of its own: never None
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._handle(delivery)
        finally:
            self._in_flight.discard(task)

    async def _handle(self, delivery: Delivery) -> None:
        ref: TaskRef | None = None
        try:
            command = ServiceCommand.parse(delivery.body, self.max_message_bytes)
            if command.api != self.api:
                raise MessageError(f"command for api {command.api!r} reached service {self.api!r}")
            if self.signer is not None:
                ref = self.signer.verify(command.task_id)
                if ref.api != self.api:
                    raise MessageError(f"command's taskId is for another api than {self.api!r}")
        except MessageError as exc:
            await self._park(delivery, exc)
            return
        started = time.perf_counter()
        try:
            if self.tracing is None:
                await self._answer_and_reply(command)
            else:
                verified = ref is not None  # else the taskId only names the span: nothing is decided on it
                labels = ref or TaskIdSigner.read_unverified(command.task_id)
                attributes = self.tracing.command_attributes(self.api, labels, delivery.headers, verified=verified)
                with self.tracing.span(f"service {self.api}", delivery.headers, attributes):
                    await self._answer_and_reply(command)
            await delivery.ack()
            if self.metrics is not None:
                self.metrics.command(self.api, "answered", time.perf_counter() - started)
        except MessageError as exc:  # the handler found the command unacceptable (the http adapter's taskId check)
            await self._park(delivery, exc)
        except InfrastructureError as exc:
            if self.metrics is not None:
                self.metrics.command(self.api, "redelivered")
            log.warning("command not answered, will be redelivered", api=self.api, error=str(exc))
            await asyncio.sleep(self.retry_delay_s)
            with contextlib.suppress(InfrastructureError):
                await delivery.nack(requeue=True)
        except Exception:
            if self.metrics is not None:
                self.metrics.command(self.api, "redelivered")
            log.exception("service handler failed; the command will be redelivered", api=self.api)
            with contextlib.suppress(InfrastructureError):
                await delivery.nack(requeue=True)

    async def _park(self, delivery: Delivery, exc: MessageError) -> None:
        log.warning("command parked", api=self.api, reason=str(exc))
        await self.broker.park(delivery, str(exc))
        if self.metrics is not None:
            self.metrics.command(self.api, "parked")

    async def _answer_and_reply(self, command: ServiceCommand) -> None:
        reply = await self._answer(command)
        headers = publish_headers() if self.metrics is not None or self.tracing is not None else {}
        if self.tracing is not None:
            self.tracing.publishing(headers)  # the reply continues the trace to the next stage
        await self.broker.publish([Outgoing(SERVICE, f"reply/{command.task_id[:200]}", reply.encode(), headers)])

    async def _answer(self, command: ServiceCommand) -> str:
        """The reply to ``command``: recorded earlier, or made now with the effect, in one transaction."""
        try:
            async with self.inbox.transaction() as tx:
                recorded = await tx.claim(command.task_id)
                if recorded is not None:
                    return recorded
                try:
                    data = await self.handler(command, tx)
                except ServiceError as exc:
                    raise _Rejected(exc) from exc  # roll back the handler's writes, then record the error
                reply = ServiceReplyMessage(command.task_id, ok=True, data=data).to_json().decode()
                if len(reply.encode()) > self.max_message_bytes:
                    # A reply the engine would refuse must not be sent: undo the effect, answer with an error.
                    too_big = ServiceError(f"the reply of {len(reply.encode())} bytes is over the "
                                           f"{self.max_message_bytes}-byte message limit; return ids, not data")
                    raise _Rejected(too_big)
                await tx.record(command.task_id, reply)
            if self.after_commit is not None:
                await self.after_commit(command)
            return reply
        except _Rejected as rejected:
            if rejected.error.retryable:  # nothing recorded: a later delivery of this taskId tries afresh
                retry = ServiceReplyMessage(command.task_id, ok=False, error=rejected.error.message, retryable=True)
                return retry.to_json().decode()
            async with self.inbox.transaction() as tx:
                recorded = await tx.claim(command.task_id)
                if recorded is not None:
                    return recorded
                error = ServiceReplyMessage(command.task_id, ok=False, error=rejected.error.message)
                encoded = error.to_json().decode()
                await tx.record(command.task_id, encoded)
                return encoded
