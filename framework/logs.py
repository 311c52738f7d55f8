"""Structured logs (structlog): console lines for people, JSON lines for machines.

Configured once by the entry points (worker, demo, CLI), never at import.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.contextvars import bind_contextvars

from framework.document import ProcessDocument


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    if json:  # the libraries' lines (aio-pika, asyncpg, uvicorn) are JSON too: every line parses
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                               structlog.processors.TimeStamper(fmt="iso", utc=True)],
        ))
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)


def bind_transition(doc: ProcessDocument, stage: str) -> None:
    """Every log line of this transition (the engine's and the stage's own) carries who it is about. Bound in
    the delivery's task (each delivery has its own), so it cannot leak into another message's lines (~2 us)."""
    bind_contextvars(process_id=doc.process_id, case=doc.case, case_version=doc.case_version, stage=stage,
                     transition=doc.version)
