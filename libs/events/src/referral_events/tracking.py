"""Events the tracker records: clicks, conversions, reversals."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .base import Currency, EventData, Identifier, MinorUnits, ReferralCode, UtcDateTime
from .emails import EmailAddress


class CodeSource(StrEnum):
    CLICK_ID = "click_id"
    CODE = "code"


class ReversalReason(StrEnum):
    REFUND = "refund"
    CHARGEBACK = "chargeback"
    CANCELLATION = "cancellation"


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


CountryCode = Annotated[
    str,
    BeforeValidator(_upper),
    Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code, e.g. NL."),
]


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    email: EmailAddress | None = None
    is_new: bool | None = None
    country: CountryCode | None = Field(
        default=None, description="Where the customer is (billing country); fraud checks use it."
    )


class ClickRecorded(EventData):
    """A person opened a referral link (bots are filtered before this is emitted)."""

    event_type = "referral.click.recorded"

    click_id: Identifier
    program_id: Identifier
    code: ReferralCode
    channel: str = Field(default="link", max_length=40)
    utm: dict[str, str] = Field(default_factory=dict, max_length=10)
    visitor_hash: str | None = Field(default=None, max_length=64)
    ip_hash: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=256)
    occurred_at: UtcDateTime

    def subject(self) -> str:
        return self.click_id


class ConversionRecorded(EventData):
    """The platform's checkout reported an order that may be a referred one."""

    event_type = "referral.conversion.recorded"

    program_id: Identifier
    conversion_id: Identifier
    code: ReferralCode
    code_source: CodeSource
    click_id: Identifier | None = None
    customer: Customer
    amount: MinorUnits
    currency: Currency
    ip_hash: str | None = Field(default=None, max_length=64)
    device_id: str | None = Field(default=None, max_length=200)
    occurred_at: UtcDateTime

    def subject(self) -> str:
        return self.conversion_id


class ConversionReversed(EventData):
    """A refund, chargeback or cancellation of an earlier conversion."""

    event_type = "referral.conversion.reversed"

    program_id: Identifier
    conversion_id: Identifier
    reason: ReversalReason
    amount: MinorUnits | None = None
    occurred_at: UtcDateTime

    def subject(self) -> str:
        return self.conversion_id
