"""Settings of the rewards service (API and worker): platform-wide ones unprefixed, its own
under ``REWARDS_``."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from referral_kit.settings import DatabaseSettings, PlatformSettings

DEFAULT_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105 - the documented local default, refused in production


class RewardsSettings(PlatformSettings, DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="REWARDS_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(8002, ge=1, le=65535)
    admin_token: SecretStr = Field(SecretStr(DEFAULT_ADMIN_TOKEN), validation_alias="ADMIN_TOKEN")
    tracker_public_url: str = Field("http://127.0.0.1:8001",
                                    description="Base of referral links: {url}/r/{code}.")
    relay_interval_seconds: float = Field(0.5, gt=0, description="Outbox poll when not notified.")
    scheduler_interval_seconds: float = Field(
        1.0, gt=0, description="How often due rewards are looked for; a hold end the worker "
        "decided itself, within 5 minutes, is also approved as it passes.")
    outbox_retention_hours: float = Field(168, gt=0,
                                          description="Published outbox rows kept this long.")
    dashboard_session_hours: float = Field(
        12, gt=0, le=24 * 30, description="How long a dashboard login lasts (signed cookie).")
    pool_min_size: int = Field(1, ge=1)
    pool_max_size: int = Field(10, ge=1)
    reversal_sweep_seconds: float = Field(
        5.0, gt=0, description="How often reversals that arrived before their conversion's "
                               "decision are settled (the decision applies them at once too).")
    stats_batch_size: int = Field(1000, ge=1, le=100_000,
                                  description="Hourly stats records stored per transaction.")
    decision_batch_size: int = Field(
        500, ge=1, le=10_000, description="Attribution events decided per transaction (at most "
                                          "one poll of the decision consumer).")

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> RewardsSettings:
        if (self.environment == "production"
                and self.admin_token.get_secret_value() == DEFAULT_ADMIN_TOKEN):
            raise ValueError("ADMIN_TOKEN still has its development default; set a long random "
                             "secret in production.")
        if self.environment == "production" and self.uses_default_ip_hash_salt:
            raise ValueError("IP_HASH_SALT still has its development default; set the same long "
                             "random secret as the tracker's in production.")
        return self
