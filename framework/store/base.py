"""The store contract (``protocols``) and the data it speaks in (``records``), importable from one place."""

from framework.store.protocols import (
    DeployStore,
    DocumentStore,
    FanOutStore,
    JobStore,
    Lifecycle,
    PoisonLedger,
    ProcessQueries,
    ProcessStore,
    ScheduleStore,
)
from framework.store.records import RETRYING, Job, PageKey, ProcessFilter, ScheduleRow, summary

__all__ = [
    "ProcessStore", "Lifecycle", "DocumentStore", "FanOutStore", "ScheduleStore", "JobStore", "ProcessQueries",
    "PoisonLedger", "DeployStore", "ProcessFilter", "RETRYING", "PageKey", "Job", "ScheduleRow", "summary",
]
