"""The built-in HTTP adapter (service api ``http``): API calls from stages and blueprints, with idempotency keys."""

from framework.http.adapter import HttpAdapter, env_secrets, idempotency_key
from framework.http.hosting import hosted_http_adapter

__all__ = ["HttpAdapter", "hosted_http_adapter", "idempotency_key", "env_secrets"]
