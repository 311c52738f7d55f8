"""Process stores: the contract and its implementations (PostgreSQL for production, SQLite embedded)."""

from framework.store.base import ProcessStore

__all__ = ["ProcessStore"]
