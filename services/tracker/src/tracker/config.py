"""Settings of the tracker: platform-wide ones unprefixed, its own under ``TRACKER_``."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from referral_kit.settings import DEFAULT_IP_HASH_SALT, PlatformSettings

from .rate_limits import Budget, parse_budget


class TrackerSettings(PlatformSettings):
    """Every default suits a laptop; production must set its own IP-hash salt."""

    model_config = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(8001, ge=1, le=65535)
    # ip_hash_salt is platform-wide (IP_HASH_SALT, or TRACKER_IP_HASH_SALT): see PlatformSettings.
    send_timeout_seconds: float = Field(
        5.0, gt=0, le=120,
        description="How long a request waits for the broker's ack before answering 503.",
    )
    retry_after_seconds: int = Field(
        5, ge=1, le=3600, description="Retry-After sent with a 503 when the broker is away."
    )
    fast_path: bool = Field(
        True, description="Serve plain server-to-server ingest requests (no Origin header, "
                          "declared body size) straight from their route handler, past "
                          "middleware that does nothing for them; false: the usual path.",
    )
    opentelemetry: bool = Field(
        False, description="FastAPI's own OpenTelemetry spans, metrics and logs of requests, "
                           "for a process whose OpenTelemetry SDK is configured (e.g. run "
                           "under opentelemetry-instrument). Off: the tracker's metrics are "
                           "Prometheus' at /metrics, and looking for a configured SDK costs "
                           "~2.6 µs of every request.",
    )
    producer_linger_ms: int = Field(
        0, ge=0, le=1000,
        description="Extra wait before a record batch leaves for the broker. Events arriving "
                    "while the previous batch is on its way already share the next one "
                    "(group commit), so no wait is needed for batching; each ms adds latency.",
    )
    producer_max_batch_bytes: int = Field(
        1024 * 1024, ge=16 * 1024, le=16 * 1024 * 1024,
        description="Largest record batch per partition and round trip (the broker's "
                    "message.max.bytes must allow it; Kafka's default is 1 MiB).",
    )
    registry_catch_up_seconds: float = Field(
        15.0, gt=0, description="Start-up budget to read the registry topic to its end."
    )
    cookie_domain: str | None = Field(
        None, description="Domain of the referral cookies (e.g. .shop.example); host-only if unset."
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Origins whose pages may POST /v1/clicks with a publishable key.",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Proxies trusted for X-Forwarded-For (the client IP to hash)."
    )
    recent_writes: int = Field(
        100_000, ge=0, description="Idempotency keys remembered to answer 'duplicate'."
    )
    click_dedupe_seconds: int = Field(
        3600, ge=0, description="A visitor's repeat click of one code within this time is "
                                "counted once (same click id); 0 turns this off.",
    )
    click_dedupe_capacity: int = Field(
        200_000, ge=0, description="(code, visitor) pairs remembered for click dedupe.",
    )
    rate_limit_publishable: str = Field(
        "600/second", description="Events per publishable key per replica ('N/second', "
                                  "'N/minute'…; 0 or 'unlimited' for none).",
    )
    rate_limit_secret: str = Field(
        "50000/second", description="Events per secret key per replica (a batch of 500 costs "
                                    "500); 0 or 'unlimited' for none.",
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request body of the single-event endpoints."
    )
    max_batch_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest request body of POST /v1/batch."
    )

    @field_validator("cookie_domain")
    @classmethod
    def _empty_domain_is_host_only(cls, value: str | None) -> str | None:
        # TRACKER_COOKIE_DOMAIN= (as in .env.example) means unset, not a "Domain=" attribute.
        return value.strip() or None if value is not None else None

    @field_validator("rate_limit_publishable", "rate_limit_secret")
    @classmethod
    def _budget_parses(cls, value: str) -> str:
        parse_budget(value)
        return value

    @property
    def publishable_budget(self) -> Budget | None:
        return parse_budget(self.rate_limit_publishable)

    @property
    def secret_budget(self) -> Budget | None:
        return parse_budget(self.rate_limit_secret)

    @model_validator(mode="after")
    def _refuse_default_salt_in_production(self) -> TrackerSettings:
        if (self.environment == "production"
                and self.ip_hash_salt.get_secret_value() == DEFAULT_IP_HASH_SALT):
            raise ValueError(
                "IP_HASH_SALT (or TRACKER_IP_HASH_SALT) still has its development default; set "
                "a long random secret in production (IP hashes would otherwise be reversible by "
                "anyone)."
            )
        return self
