"""The worker process: what each of the N worker containers runs (``python -m workers``)."""

from workers.main import run_worker

__all__ = ["run_worker"]
