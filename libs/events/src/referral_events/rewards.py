"""Reward lifecycle events published by the rewards service (consumed by the notifier)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .base import Currency, EventData, Identifier, UtcDateTime
from .emails import EmailAddress


class Beneficiary(StrEnum):
    REFERRER = "referrer"
    FRIEND = "friend"


class RewardPurpose(StrEnum):
    REFERRAL = "referral"    # earned by one referred conversion
    MILESTONE = "milestone"  # one-off bonus when the referrer's successful referrals reach a tier


class RewardKind(StrEnum):
    CASH = "cash"
    CREDIT = "credit"
    DISCOUNT = "discount"
    POINTS = "points"


class FraudAction(StrEnum):
    FLAG = "flag"
    REJECT = "reject"
    EXTEND_HOLD = "extend_hold"


class FraudSignal(BaseModel):
    """One explainable fraud finding: what was measured, against what, and what it did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: str = Field(max_length=60)
    value: float | str | bool
    threshold: float | str | bool | None = None
    action: FraudAction


class Recipient(BaseModel):
    """Who the reward is for, as far as emails are concerned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: EmailAddress | None = None
    name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, max_length=20)


class RewardEvent(EventData):
    """Fields every reward event carries, so a consumer needs no lookup to act on it."""

    reward_id: Identifier
    program_id: Identifier
    program_name: str = Field(max_length=200)
    program_locale: str = Field(default="en", max_length=20)
    referrer_id: Identifier
    beneficiary: Beneficiary
    purpose: RewardPurpose = RewardPurpose.REFERRAL
    milestone: int | None = Field(default=None, ge=1, description=(
        "For a milestone bonus: the count of successful referrals it celebrates."))
    recipient: Recipient
    conversion_id: Identifier
    kind: RewardKind
    amount: int = Field(ge=0, description="Minor units for money, a count for points.")
    currency: Currency
    occurred_at: UtcDateTime

    def subject(self) -> str:
        return self.reward_id


class RewardPending(RewardEvent):
    event_type = "referral.reward.pending"

    available_at: UtcDateTime


class RewardInReview(RewardEvent):
    event_type = "referral.reward.in_review"

    fraud_signals: list[FraudSignal] = Field(default_factory=list)


class RewardApproved(RewardEvent):
    event_type = "referral.reward.approved"

    expires_at: UtcDateTime | None = None


class RewardRejected(RewardEvent):
    event_type = "referral.reward.rejected"

    reason: str = Field(max_length=500)
    fraud_signals: list[FraudSignal] = Field(default_factory=list)


class RewardReversed(RewardEvent):
    event_type = "referral.reward.reversed"

    reason: str = Field(max_length=500)
    clawback_amount: int = Field(default=0, ge=0, description="Taken back from a paid reward.")
