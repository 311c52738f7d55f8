"""Building the parts from settings: store and broker from their URLs, cases from module names and blueprints.

Nothing here connects: it only constructs. ``Stageflow`` (in ``app.py``) opens the connections.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from framework.broker.base import Broker
from framework.case import BusinessCase
from framework.clock import Clock
from framework.errors import ConfigurationError
from framework.registry import CaseRegistry
from framework.settings import Settings
from framework.store.base import ProcessStore
from framework.store.protocols import WorkflowStore

if TYPE_CHECKING:
    from framework.workflows import Workflows


def store_from_settings(settings: Settings) -> ProcessStore:
    url = settings.store_url
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        from framework.store.postgres import PostgresStore

        return PostgresStore(
            url, schema=settings.store_schema, min_size=1, max_size=settings.store_pool_size
        )
    if scheme == "sqlite":
        from framework.store.sqlite import SqliteStore

        path = url.removeprefix("sqlite://").removeprefix("/") or "stageflow.db"
        return SqliteStore(path)
    raise ConfigurationError(
        f"unsupported store URL {url!r}", hint="use postgresql://user@host/db or sqlite:///path/to/file.db"
    )


def broker_from_settings(settings: Settings, *, connection_name: str = "stageflow") -> Broker:
    url = settings.broker_url
    scheme = urlsplit(url).scheme
    if scheme in ("amqp", "amqps"):
        from framework.broker.rabbitmq import RabbitBroker

        return RabbitBroker(
            url, prefix=settings.queue_prefix, delivery_limit=settings.delivery_limit,
            connection_name=connection_name, quorum_group_size=settings.quorum_group_size,
        )
    if scheme == "memory":
        from framework.broker.memory import MemoryBroker

        return MemoryBroker(delivery_limit=settings.delivery_limit)
    raise ConfigurationError(
        f"unsupported broker URL {url!r}",
        hint="use amqp://user:pass@host:5672/ (the nodes of a cluster comma-separated) or memory://",
    )


def load_cases(specs: Iterable[str]) -> list[type[BusinessCase]]:
    """Import cases from ``module`` (every case it exposes, or its ``CASES`` list) or ``module:Name``."""
    cases: list[type[BusinessCase]] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import cases from {module_name!r}: {exc}") from exc
        candidates: list[object]
        if attr:
            candidates = [getattr(module, attr, None)]
        elif hasattr(module, "CASES"):
            candidates = list(module.CASES)
        else:
            candidates = list(vars(module).values())
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BusinessCase) and c.stages]
        if not found:
            raise ConfigurationError(f"no business cases found in {spec!r}", hint="name a module that defines cases")
        cases.extend(c for c in found if c not in cases)
    return cases


def cases_from_settings(settings: Settings) -> list[type[BusinessCase]]:
    """The Python cases of ``STAGEFLOW_CASES`` and the blueprints of ``STAGEFLOW_BLUEPRINTS``; at least one
    of the two must be set (a worker, gateway or CLI with no case to run is a mistake, not an idle process)."""
    if not settings.cases and not settings.blueprints:
        raise ConfigurationError(
            "no cases: STAGEFLOW_CASES and STAGEFLOW_BLUEPRINTS are both empty",
            hint="set STAGEFLOW_CASES to the modules that define your cases, comma-separated "
            "(e.g. STAGEFLOW_CASES=my_app.cases, or STAGEFLOW_CASES=business_cases for the examples), "
            "or STAGEFLOW_BLUEPRINTS to blueprint files",
        )
    cases = load_cases(settings.cases) if settings.cases else []
    if settings.blueprints:
        from framework.blueprint import load_api_files, load_blueprints, load_functions
        from framework.dbquery import known_connections

        functions = load_functions(settings.blueprint_functions)
        apis = load_api_files(settings.blueprint_apis, functions=functions)
        cases += load_blueprints(settings.blueprints, functions=functions, constants=settings.blueprint_constants,
                                 apis=apis, connections=known_connections())  # checked where STAGEFLOW_DB_* exist
    return cases


def workflows_from_settings(
    settings: Settings, store: WorkflowStore, cases: CaseRegistry, *, clock: Clock,
    on_added: Callable[[list[type[BusinessCase]]], None] | None = None,
) -> Workflows:
    """The stored workflows of a deployment, compiled with its blueprint functions, constants and API
    definitions (as its blueprint files are)."""
    from framework.blueprint import load_api_files, load_functions
    from framework.workflows import Workflows

    functions = load_functions(settings.blueprint_functions)
    apis = load_api_files(settings.blueprint_apis, functions=functions) if settings.blueprint_apis else None
    return Workflows(store, cases, clock=clock, functions=functions or None, constants=settings.blueprint_constants,
                     apis=apis, on_added=on_added)
