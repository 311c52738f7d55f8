"""The worker process body lives in the library (:mod:`framework.hosting`); this app re-exports it."""

from __future__ import annotations

from framework.hosting import run_worker

__all__ = ["run_worker"]
