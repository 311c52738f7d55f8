"""The built-in HTTP adapter (service api ``http``): API calls from stages and blueprints, with idempotency keys,
taskId checks and an address policy."""

from framework.http.adapter import HttpAdapter, env_secrets, idempotency_key
from framework.http.hosting import hosted_http_adapter, http_service
from framework.http.policy import AddressPolicy, RequestRefused
from framework.http.transport import GuardedTransport

__all__ = ["HttpAdapter", "hosted_http_adapter", "http_service", "idempotency_key", "env_secrets",
           "AddressPolicy", "RequestRefused", "GuardedTransport"]
