"""Every error Stageflow raises, under one root.

Each concern has its own base (configuration, case definition, input, taskId, message, broker, store,
stage) so callers can catch what they can act on. Errors carry structured context (``case``, ``stage``,
``process_id``...) and, where there is one, a ``hint`` that says how to fix the problem.
"""

from __future__ import annotations

from typing import Any


class StageflowError(Exception):
    """Root of every Stageflow error."""

    def __init__(self, message: str, *, hint: str | None = None, **context: Any) -> None:
        self.message = message
        self.hint = hint
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ConfigurationError(StageflowError):
    """Settings or wiring that cannot work (missing secret, bad URL, unknown backend)."""


class SchemaVersionError(ConfigurationError):
    """The store's schema was migrated by a newer release than this one: this code cannot run on it."""


class CaseDefinitionError(ConfigurationError):
    """A ``BusinessCase`` subclass that is not a valid case; raised when the class is defined."""


class UnknownCaseError(StageflowError):
    """A case name (or name and version) that no registered case has."""


class CaseInactiveError(StageflowError):
    """A start of a workflow that has been deactivated (its running processes go on)."""


class WorkflowConflictError(StageflowError):
    """A workflow change that clashes: its name is taken (by a workflow, or a case in code or files), or another
    change saved the same version first."""


class UnknownTemplateError(StageflowError):
    """A workflow template name that no template has."""


class InvalidInputError(StageflowError):
    """Process input that does not validate against the case's input model."""

    def __init__(self, message: str, *, errors: list[dict[str, Any]], **context: Any) -> None:
        super().__init__(message, **context)
        self.errors = errors


class ProcessConflictError(StageflowError):
    """The client key is already taken by a process with different input."""


class ProcessNotFoundError(StageflowError):
    """No process has that id."""


class ScheduleNotFoundError(StageflowError):
    """No schedule has that name."""


class MessageError(StageflowError):
    """A message that cannot be read: bad JSON, wrong shape, oversize, unknown case or stage."""


class TaskIdError(MessageError):
    """A taskId that is forged, altered, signed with a foreign key, or otherwise unreadable."""


class StageError(StageflowError):
    """A stage used its context wrongly (no outcome, two outcomes, unknown target stage)."""


class NonRetryableError(StageflowError):
    """Raise it in a stage to fail that stage at once, whatever its retry policy says."""


class ServiceError(StageflowError):
    """Raised by a service handler to reply with an error instead of a result.

    By default the error is final: it is recorded in the service's inbox like a result, so a redelivered
    command gets the same answer, and the calling stage fails at once (then its ``on_failed`` path).
    With ``retryable=True`` nothing is recorded and the caller may send the same command (same taskId)
    again under its retry policy.
    """

    def __init__(self, message: str, *, retryable: bool = False, **context: Any) -> None:
        super().__init__(message, **context)
        self.retryable = retryable


class ProcessStateError(StageflowError):
    """An operator action that the process's status does not allow (cancel a completed process...)."""


class JobNotFoundError(StageflowError):
    """No background job has that id."""


class JobStateError(StageflowError):
    """A job action its status does not allow (resume a job that is running or completed)."""


class InfrastructureError(StageflowError):
    """The broker or the store is unreachable; the operation may succeed if tried again."""


class BrokerError(InfrastructureError):
    """RabbitMQ (or the in-memory broker) refused or lost an operation."""


class StoreError(InfrastructureError):
    """The process store refused or lost an operation."""


class UnstorableDataError(StageflowError):
    """The store refused a document for what it holds, not for being unreachable (e.g. PostgreSQL's jsonb has no
    NUL character): retrying cannot help, so it is not an ``InfrastructureError``."""


class CallbackTokenError(StageflowError):
    """A callback token that is forged, altered or unreadable, or (``expired``) whose time is up."""

    def __init__(self, message: str, *, expired: bool = False, **context: Any) -> None:
        super().__init__(message, **context)
        self.expired = expired
