"""Settings of the notifier: platform-wide ones unprefixed (SMTP_HOST, SMTP_PORT, ...), its
own under ``NOTIFIER_``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from referral_kit.settings import DatabaseSettings, PlatformSettings

DEFAULT_UNSUBSCRIBE_SECRET = "dev-unsubscribe-secret"  # noqa: S105 - refused in production


class NotifierSettings(PlatformSettings, DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(8003, ge=1, le=65535)
    smtp_host: str = Field("127.0.0.1", validation_alias="SMTP_HOST")
    smtp_port: int = Field(1025, ge=1, le=65535, validation_alias="SMTP_PORT")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP session with STARTTLS.")
    smtp_username: str | None = Field(None, description="SMTP AUTH user; none: no AUTH.")
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    concurrency: int = Field(
        8, ge=1, le=64,
        description="Emails in flight at once: events are handled concurrently, "
                    "one referrer's (one record key's) in order; also the number of SMTP "
                    "sessions kept open. The database pool gets this many connections + 2, "
                    "plus one per 16 for the connections that claim emails in batches.")
    from_email: str = "referrals@localhost"
    from_name: str = Field("Referrals", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$",
                           description="Display name of the sender (no control characters).")
    public_url: str = Field("http://127.0.0.1:8003", description="Base of links in emails.")
    unsubscribe_secret: SecretStr = SecretStr(DEFAULT_UNSUBSCRIBE_SECRET)
    unsubscribe_token_days: int = Field(
        180, ge=1, le=3650, description="How long an unsubscribe link keeps working.")
    digest_period: Literal["daily", "weekly", "off"] = Field(
        "daily", description="How often marketers get their programme's digest.")
    digest_delay_seconds: float = Field(
        300.0, ge=0, description="Wait after a period ends before its digest (stats settle).")
    digest_check_seconds: float = Field(60.0, gt=0, description="How often the digest "
                                        "scheduler looks for a period to report.")
    rewards_url: str = Field("http://127.0.0.1:8002",
                             description="The rewards admin API the digest reads stats from.")
    dashboard_url: str | None = Field(None, description="Link in the digest; default: "
                                      "<rewards_url>/dashboard.")
    admin_token: SecretStr = Field(SecretStr("dev-admin-token"), validation_alias="ADMIN_TOKEN")
    retry_initial_backoff_seconds: float = Field(
        0.2, gt=0, description="First wait after a transient SMTP failure (then doubling).")
    retry_max_backoff_seconds: float = Field(
        30.0, gt=0, description="Longest wait between SMTP retries.")
    retry_window_seconds: float = Field(
        120.0, gt=0, description="How long one email is retried in place before the consumer "
                                 "takes over retrying (it never skips the event).")

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> NotifierSettings:
        if (self.environment == "production"
                and self.unsubscribe_secret.get_secret_value() == DEFAULT_UNSUBSCRIBE_SECRET):
            raise ValueError("NOTIFIER_UNSUBSCRIBE_SECRET still has its development default; "
                             "set a long random secret in production.")
        return self

    @property
    def dashboard(self) -> str:
        return self.dashboard_url or f"{self.rewards_url.rstrip('/')}/dashboard"

    @property
    def message_id_domain(self) -> str:
        """Right-hand side of our Message-IDs: the sender's domain."""
        return self.from_email.rpartition("@")[2] or "localhost"
