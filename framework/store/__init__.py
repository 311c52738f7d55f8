"""Process stores: the contract (narrow protocols, see ``protocols``) and its implementations (PostgreSQL
for production, SQLite embedded), which share their SQL through ``framework.store.sql``."""

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

__all__ = [
    "ProcessStore", "Lifecycle", "DocumentStore", "FanOutStore", "ScheduleStore", "JobStore", "ProcessQueries",
    "PoisonLedger", "DeployStore",
]
