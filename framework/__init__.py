"""Stageflow: long-running business processes as ordered stages on RabbitMQ.

Declare a case, run workers, start processes::

    from framework import BusinessCase, stage, Stageflow, Settings
"""

from framework.app import Stageflow
from framework.case import BusinessCase, stage
from framework.clock import Clock, FakeClock, SystemClock
from framework.context import ServiceReply, StageContext
from framework.document import ProcessDocument, Status
from framework.engine import Engine
from framework.errors import (
    BrokerError,
    CaseDefinitionError,
    ConfigurationError,
    InfrastructureError,
    InvalidInputError,
    MessageError,
    NonRetryableError,
    ProcessConflictError,
    ProcessNotFoundError,
    ProcessStateError,
    ScheduleNotFoundError,
    ServiceError,
    StageError,
    StageflowError,
    StoreError,
    TaskIdError,
    UnknownCaseError,
)
from framework.fanout import FanIn, FanItem
from framework.observers import Observer
from framework.operations import Operations
from framework.policies import Retry
from framework.schedules import Schedule
from framework.settings import Settings
from framework.state import Failure
from framework.store.base import ProcessFilter
from framework.taskid import TaskIdSigner, TaskRef
from framework.worker import Worker

__all__ = [
    # declaring cases
    "BusinessCase",
    "stage",
    "Retry",
    "Schedule",
    "StageContext",
    "ServiceReply",
    "FanItem",
    "FanIn",
    "Failure",
    # running them
    "Stageflow",
    "Settings",
    "Worker",
    "Engine",
    "Operations",
    "Observer",
    "ProcessFilter",
    "ProcessDocument",
    "Status",
    "TaskIdSigner",
    "TaskRef",
    "Clock",
    "SystemClock",
    "FakeClock",
    # errors
    "StageflowError",
    "NonRetryableError",
    "ProcessStateError",
    "ConfigurationError",
    "CaseDefinitionError",
    "UnknownCaseError",
    "InvalidInputError",
    "ProcessConflictError",
    "ProcessNotFoundError",
    "ScheduleNotFoundError",
    "MessageError",
    "TaskIdError",
    "StageError",
    "ServiceError",
    "InfrastructureError",
    "BrokerError",
    "StoreError",
]
