"""The built-in ``notify`` service: webhook, email (SMTP) and log notifications, each sent once per taskId."""

from framework.notify.hosting import hosted_notifier
from framework.notify.service import CHANNELS, NOTIFY_API, Notifier
from framework.notify.settings import NotifySettings, SmtpSettings

__all__ = ["Notifier", "hosted_notifier", "NotifySettings", "SmtpSettings", "NOTIFY_API", "CHANNELS"]
