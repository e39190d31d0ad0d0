"""Settings of the notifier: platform-wide ones unprefixed (SMTP_HOST, SMTP_PORT, ...), its
own under ``NOTIFIER_``."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from referral_kit.settings import DatabaseSettings, PlatformSettings

DEFAULT_UNSUBSCRIBE_SECRET = "dev-unsubscribe-secret"


class NotifierSettings(PlatformSettings, DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(8003, ge=1, le=65535)
    smtp_host: str = Field("127.0.0.1", validation_alias="SMTP_HOST")
    smtp_port: int = Field(1025, ge=1, le=65535, validation_alias="SMTP_PORT")
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    from_email: str = "referrals@localhost"
    from_name: str = "Referrals"
    public_url: str = Field("http://127.0.0.1:8003", description="Base of links in emails.")
    unsubscribe_secret: SecretStr = SecretStr(DEFAULT_UNSUBSCRIBE_SECRET)
    retry_max_backoff_seconds: float = Field(30.0, gt=0,
                                             description="Longest wait between SMTP retries.")

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> NotifierSettings:
        if (self.environment == "production"
                and self.unsubscribe_secret.get_secret_value() == DEFAULT_UNSUBSCRIBE_SECRET):
            raise ValueError("NOTIFIER_UNSUBSCRIBE_SECRET still has its development default; "
                             "set a long random secret in production.")
        return self
