"""Settings of the attribution processor: platform-wide ones unprefixed, its own under
``ATTRIBUTION_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from referral_kit.settings import PlatformSettings


class AttributionSettings(PlatformSettings):
    model_config = SettingsConfigDict(env_prefix="ATTRIBUTION_", extra="ignore",
                                      populate_by_name=True)

    web_host: str = "127.0.0.1"
    web_port: int = Field(8004, ge=1, le=65535,
                          description="Health and metrics; Faust binds it even when unused.")
    app_id: str = Field("referral-attribution",
                        description="Faust app id: consumer group and changelog topic names.")
    store: str = Field("memory://", description="Table store; memory:// recovers from changelogs.")
    grace_seconds: float = Field(30.0, ge=0,
                                 description="How long a conversion may wait for a late click.")
    registry_catch_up_seconds: float = Field(30.0, gt=0)
    stats_flush_seconds: float = Field(
        1.0, gt=0, description="How often changed hourly counts are published for the "
                               "dashboard (its figures lag events by about this much).")
    data_dir: Path | None = Field(
        None, description="Where Faust keeps its local state; unset: a fresh temporary "
                          "directory (tables recover from their changelog topics anyway).")
    emit_retry_max_backoff_seconds: float = Field(
        5.0, gt=0, description="Longest wait between retries of an output the broker refused.")
    producer_max_batch_size: int = Field(
        256 * 1024, ge=16 * 1024, le=1_000_000,
        description="Bytes per partition batch of Faust's producer (changelogs). aiokafka "
                    "keeps one request in flight per broker and appends to a partition's "
                    "batch only until it is full: with Faust's 16 KiB default a few "
                    "click logs fill it and the agent waits a round trip per batch.")
    # Short group-join timings: Faust's defaults make the first join take ~30 s.
    broker_rebalance_timeout: float = Field(4.0, gt=0)
    broker_session_timeout: float = Field(10.0, gt=0)
    broker_heartbeat_interval: float = Field(1.0, gt=0)

    @property
    def faust_id(self) -> str:
        return f"{self.topic_prefix}{self.app_id}"
