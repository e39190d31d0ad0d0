"""Decisions of the attribution processor: who gets credit for a conversion, or why nobody."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import Currency, EventData, Identifier, MinorUnits, ReferralCode, UtcDateTime
from .tracking import Customer


class AttributionModel(StrEnum):
    LAST_CLICK = "last_click"
    FIRST_CLICK = "first_click"


class RejectionReason(StrEnum):
    UNKNOWN_CODE = "unknown_code"
    INACTIVE_CODE = "inactive_code"
    OUTSIDE_WINDOW = "outside_window"
    SELF_REFERRAL = "self_referral"
    EXISTING_CUSTOMER = "existing_customer"
    DUPLICATE = "duplicate"


class ReferralAttributed(EventData):
    """A conversion is credited to a referrer."""

    event_type = "referral.referral.attributed"

    program_id: Identifier
    conversion_id: Identifier
    referrer_id: Identifier
    code: ReferralCode
    click_id: Identifier | None = None
    channel: str = Field(max_length=40)
    attribution_model: AttributionModel
    customer: Customer
    amount: MinorUnits
    currency: Currency
    ip_hash: str | None = None
    device_id: str | None = None
    clicked_at: UtcDateTime | None = None
    converted_at: UtcDateTime
    click_to_conversion_seconds: float | None = Field(default=None, ge=0)
    decided_at: UtcDateTime

    def subject(self) -> str:
        return self.conversion_id


class ReferralRejected(EventData):
    """A conversion is credited to nobody, with the reason."""

    event_type = "referral.referral.rejected"

    program_id: Identifier
    conversion_id: Identifier
    code: ReferralCode | None = None
    referrer_id: Identifier | None = None
    reason: RejectionReason
    detail: str = Field(max_length=500)
    channel: str | None = Field(default=None, max_length=40)
    amount: MinorUnits
    currency: Currency
    converted_at: UtcDateTime
    decided_at: UtcDateTime

    def subject(self) -> str:
        return self.conversion_id


class AttributionGraceExpired(EventData):
    """Attribution's own control event, on the conversions topic under the code's key: the
    grace period of conversions waiting for a late click is over, decide them now. Emitted
    by a timer so the decision is made inside the partition's stream, like every other."""

    event_type = "referral.attribution.grace_expired"

    program_id: Identifier
    code: ReferralCode
    conversion_ids: list[Identifier] = Field(min_length=1, max_length=1000)
    expired_at: UtcDateTime

    def subject(self) -> str:
        return self.code


class ReferralStatsCounted(EventData):
    """Running counts of one programme, code, channel and hour, for the dashboard's stats.

    Absolute counts, not increments: a later ``version`` (the number of events counted so
    far) replaces an earlier one, so a replay, a re-send or a reordering changes nothing.
    ``hour`` is the event-time hour (clicks: when clicked; conversions: when ordered).
    Conversions are counted under their attributed channel; rejected ones under ``none``.
    """

    event_type = "referral.stats.counted"

    program_id: Identifier
    code: ReferralCode
    channel: str = Field(max_length=40)
    hour: UtcDateTime
    clicks: int = Field(default=0, ge=0)
    conversions: int = Field(default=0, ge=0)
    attributed: int = Field(default=0, ge=0)
    rejected: dict[RejectionReason, int] = Field(default_factory=dict)
    revenue: MinorUnits = Field(default=0, description="Sum of attributed order amounts.")
    version: int = Field(ge=1)

    def subject(self) -> str:
        return f"{self.program_id}:{self.code}:{self.channel}:{self.hour.isoformat()}"
