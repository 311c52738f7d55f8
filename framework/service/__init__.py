"""The service SDK: services that apply each command's effect once and reply on the service queue."""

from framework.service.inbox import Inbox, PostgresInbox, ServiceTransaction, SqliteInbox
from framework.service.sdk import CommandHandler, Service

__all__ = ["Service", "CommandHandler", "ServiceTransaction", "Inbox", "PostgresInbox", "SqliteInbox"]
