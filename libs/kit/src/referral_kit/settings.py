"""Settings every service shares. Each service subclasses with its own env prefix;
these platform-wide fields keep their unprefixed names (``KAFKA_BOOTSTRAP_SERVERS``...)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from referral_events import TopicRegistry

DEFAULT_IP_HASH_SALT = "local-dev-salt"


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    environment: Literal["local", "test", "production"] = Field(
        "local", validation_alias="ENVIRONMENT"
    )
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092",
                                         validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_enable_idempotence: bool = Field(
        False,
        validation_alias="KAFKA_ENABLE_IDEMPOTENCE",
        description="Idempotent producer; true on Apache Kafka, false on the embedded broker.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        500, ge=1, le=30_000,
        validation_alias="KAFKA_FETCH_MAX_WAIT_MS",
        description="How long a consumer's fetch may wait at the broker for new records. "
                    "Apache Kafka answers as soon as records arrive, so its default (500) "
                    "costs no latency there; the embedded broker holds every fetch for the "
                    "whole wait, so run it with 50.",
    )
    kafka_background_fetch_max_wait_ms: int = Field(
        500, ge=1, le=30_000,
        validation_alias="KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS",
        description="The fetch wait of the consumers off a conversion's way to its email: "
                    "the tracker's view of the registry, the rewards worker's reversals and "
                    "stats. On the embedded broker every fetch costs it ~1 ms of CPU, so "
                    "these fetch ten times less often than the others (they see a record up "
                    "to this much later there); on Apache Kafka it changes nothing.",
    )
    topic_prefix: str = Field("", validation_alias="TOPIC_PREFIX")
    topic_partitions: int = Field(4, ge=1, le=256, validation_alias="TOPIC_PARTITIONS")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: Literal["console", "json"] = Field("console", validation_alias="LOG_FORMAT")
    ip_hash_salt: SecretStr = Field(
        SecretStr(DEFAULT_IP_HASH_SALT),
        # TRACKER_IP_HASH_SALT is the older, tracker-only name: still honoured everywhere, so
        # the tracker's and the rewards' hashes of one IP stay equal.
        validation_alias=AliasChoices("IP_HASH_SALT", "TRACKER_IP_HASH_SALT"),
        description="Salt of IP hashes (tracker: buyers and clickers; rewards: referrers).",
    )

    @property
    def uses_default_ip_hash_salt(self) -> bool:
        return self.ip_hash_salt.get_secret_value() == DEFAULT_IP_HASH_SALT

    def topic_registry(self) -> TopicRegistry:
        return TopicRegistry(self.topic_prefix, self.topic_partitions)


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/referrals", validation_alias="DATABASE_URL"
    )
