"""Settings of the ``notify`` service: its inbox database and the SMTP server for email (read once at start)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifySettings(BaseSettings):
    """``STAGEFLOW_NOTIFY_*``."""

    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_NOTIFY_", extra="ignore")

    db_url: str | None = Field(None, description="the inbox's database (default: STAGEFLOW_STORE_URL)")
    concurrency: int = Field(16, ge=1, le=1000, description="notifications in flight at once (the inbox's pool)")


class SmtpSettings(BaseSettings):
    """``STAGEFLOW_SMTP_*``: where ``email`` notifications are sent."""

    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_SMTP_", extra="ignore", populate_by_name=True)

    host: str | None = Field(None, description="SMTP server; unset: an email notification fails with this hint")
    port: int = Field(587, ge=1, le=65535)
    user: str | None = Field(None, description="login, if the server wants one")
    password: SecretStr | None = Field(None)
    starttls: bool = Field(True, description="upgrade the connection with STARTTLS (port 587)")
    tls: bool = Field(False, description="implicit TLS from the first byte (port 465) instead of STARTTLS")
    from_address: str | None = Field(None, alias="STAGEFLOW_SMTP_FROM", description="the From: of every email")
    timeout_s: float = Field(30.0, gt=0)
