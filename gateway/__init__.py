"""The HTTP gateway: start processes and read their status over HTTP (``stageflow gateway``)."""

from gateway.app import create_app

__all__ = ["create_app"]
