"""Admin API schemas (Create / Update / Read families)."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationInfo,
    field_validator,
    model_validator,
)
from referral_events.emails import EmailAddress

from .fraud import FraudSettings
from .holds import InvalidDuration, parse_duration
from .rules import RewardKind

Duration = Annotated[str, Field(max_length=40, examples=["P14D", "PT2S"])]
Locale = Annotated[str, Field(pattern=r"^[a-z]{2}([-_][A-Za-z]{2})?$", examples=["en", "nl"])]


def _duration(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value)
        except InvalidDuration as exc:
            raise ValueError(str(exc)) from None
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _distinct_tiers(value: list[Any] | None) -> list[Any] | None:
    if value is not None:
        counts = [t.from_referral for t in value]
        if len(set(counts)) != len(counts):
            raise ValueError("each tier needs its own from_referral")
        value = sorted(value, key=lambda t: t.from_referral)
    return value


def _ip(value: str | None) -> str | None:
    # The tracker's canonical form, so equal addresses hash equal across services.
    return str(ipaddress.ip_address(value.strip())) if value is not None else None


class RewardSpec(Strict):
    """A flat ``amount`` (minor units, or points) or a ``percent`` of the order."""

    kind: RewardKind
    amount: int | None = Field(None, ge=0, le=10**12)
    percent: Decimal | None = Field(None, gt=0, le=100, max_digits=7, decimal_places=4)
    max_amount: int | None = Field(None, ge=0, le=10**12)
    expires_after: Duration | None = None

    _check_expiry = field_validator("expires_after")(_duration)

    @model_validator(mode="after")
    def _amount_or_percent(self) -> RewardSpec:
        if (self.amount is None) == (self.percent is None):
            raise ValueError("give exactly one of amount (minor units) or percent (of the order)")
        return self


class Tier(Strict):
    """From the ``from_referral``-th successful referral on, the referrer earns ``amount`` or
    ``percent`` of the order (kind, max_amount and expiry stay the referrer reward's); a
    ``bonus`` is paid once, as a separate milestone reward, when the count reaches it."""

    from_referral: int = Field(ge=1, le=10**6)
    amount: int | None = Field(None, ge=0, le=10**12)
    percent: Decimal | None = Field(None, gt=0, le=100, max_digits=7, decimal_places=4)
    bonus: int | None = Field(None, ge=0, le=10**12,
                              description="One-off milestone bonus at this count.")

    @model_validator(mode="after")
    def _something(self) -> Tier:
        if self.amount is not None and self.percent is not None:
            raise ValueError("give at most one of amount or percent")
        if self.amount is None and self.percent is None and self.bonus is None:
            raise ValueError("give amount, percent or bonus (else the tier changes nothing)")
        return self


class Caps(Strict):
    """Limits on what is granted, in reward amount (minor units): per referrer per UTC day and
    calendar month, per referrer lifetime, and the programme's budget (both sides). ``mode``:
    ``cap`` reduces a reward to what is left, ``reject`` refuses one that does not fit
    whole; either way one with nothing left is rejected with ``cap_reached``."""

    per_referrer_day: int | None = Field(None, ge=0, le=10**13)
    per_referrer_month: int | None = Field(None, ge=0, le=10**13)
    per_referrer_lifetime: int | None = Field(None, ge=0, le=10**13)
    program_budget: int | None = Field(None, ge=0, le=10**13)
    mode: Literal["cap", "reject"] = "cap"


class ProgramFields(Strict):
    attribution_window_days: int = Field(30, ge=1, le=3650)
    attribution_model: Literal["last_click", "first_click"] = "last_click"
    code_only_attribution: bool = True
    new_customers_only: bool = True
    hold_period: Duration = "P14D"
    min_order_amount: int = Field(0, ge=0, le=10**12)
    referrer_reward: RewardSpec | None = None
    friend_reward: RewardSpec | None = None
    tiers: list[Tier] = Field(default_factory=list, max_length=50)
    caps: Caps = Field(default_factory=Caps)
    fraud: FraudSettings = Field(default_factory=FraudSettings)
    marketer_emails: list[EmailAddress] = Field(default_factory=list, max_length=50)
    locale: Locale = "en"

    _check_hold = field_validator("hold_period")(_duration)
    _check_tiers = field_validator("tiers")(_distinct_tiers)


class ProgramCreate(ProgramFields):
    name: str = Field(min_length=1, max_length=200)
    landing_url: HttpUrl
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])

    @field_validator("tiers")
    @classmethod
    def _tiers_need_a_referrer_reward(cls, value: list[Tier], info: ValidationInfo
                                      ) -> list[Tier]:
        if value and "referrer_reward" in info.data and info.data["referrer_reward"] is None:
            raise ValueError("tiers change the referrer's reward: give a referrer_reward too")
        return value


class ProgramUpdate(Strict):
    """Only the fields sent are changed."""

    name: str | None = Field(None, min_length=1, max_length=200)
    landing_url: HttpUrl | None = None
    attribution_window_days: int | None = Field(None, ge=1, le=3650)
    attribution_model: Literal["last_click", "first_click"] | None = None
    code_only_attribution: bool | None = None
    new_customers_only: bool | None = None
    hold_period: Duration | None = None
    min_order_amount: int | None = Field(None, ge=0, le=10**12)
    referrer_reward: RewardSpec | None = None
    friend_reward: RewardSpec | None = None
    tiers: list[Tier] | None = None
    caps: Caps | None = None
    fraud: FraudSettings | None = None
    marketer_emails: list[EmailAddress] | None = None
    locale: Locale | None = None
    active: bool | None = None

    _check_hold = field_validator("hold_period")(_duration)
    _check_tiers = field_validator("tiers")(_distinct_tiers)

    @field_validator("name", "landing_url", "attribution_window_days", "attribution_model",
                     "code_only_attribution", "new_customers_only", "hold_period",
                     "min_order_amount", "tiers", "caps", "fraud", "marketer_emails", "locale",
                     "active", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Only the reward specs may be cleared with null; other fields are always set.
        if value is None:
            raise ValueError("may not be null; omit the field to keep its current value")
        return value


class ProgramRead(ProgramFields):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    landing_url: str
    currency: str
    active: bool
    publishable_key: str
    version: int
    created_at: datetime
    updated_at: datetime


class ProgramCreated(ProgramRead):
    secret_key: str = Field(description="Shown once: store it; only its hash is kept.")


class ReferrerCreate(Strict):
    external_id: str = Field(min_length=1, max_length=200)
    email: EmailAddress
    name: str | None = Field(None, max_length=200)
    locale: Locale | None = None
    ip: str | None = Field(None, max_length=64, description=(
        "The referrer's IP address, for the same-IP fraud check; only a salted hash is kept. "
        "Enrolling again with another one adds it."))
    device_id: str | None = Field(None, min_length=1, max_length=200, description=(
        "The referrer's device id, as the checkout sends device ids with conversions."))

    _check_ip = field_validator("ip")(_ip)


class ReferrerRead(BaseModel):
    id: str
    program_id: str
    external_id: str
    email: str
    name: str | None
    locale: str | None
    code: str
    referral_url: str
    active: bool
    created_at: datetime
    counts: dict[str, int] = Field(default_factory=dict)
    balance: dict[str, int] = Field(default_factory=dict)


class FraudSignalRead(BaseModel):
    signal: str
    value: Any
    threshold: Any = None
    action: str


class RewardRead(BaseModel):
    id: str
    program_id: str
    referrer_id: str
    beneficiary: Literal["referrer", "friend"]
    purpose: Literal["referral", "milestone"] = Field(
        "referral", description="referral: earned by the conversion; milestone: a tier's "
                                "one-off bonus reached with it.")
    milestone: int | None = Field(None, description="The successful-referral count a "
                                                    "milestone bonus was paid for.")
    conversion_id: str
    kind: RewardKind
    amount: int
    currency: str
    status: Literal["pending", "in_review", "approved", "rejected", "reversed"]
    available_at: datetime
    reason: str | None
    channel: str | None
    order_amount: int
    fraud_signals: list[FraudSignalRead]
    created_at: datetime
    updated_at: datetime


class RejectBody(Strict):
    reason: str = Field(min_length=1, max_length=500)


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of the API is answered."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = Field(description="What went wrong and how to fix it.")
    field: str | None = Field(None, description="The request field at fault, when one is.")
