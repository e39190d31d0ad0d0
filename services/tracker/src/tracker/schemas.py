"""Request and response bodies of the tracker's JSON API (the contract of CONTRACT.md)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from referral_events import Customer, ReversalReason
from referral_events.base import Currency, Identifier, MinorUnits, ReferralCode, UtcDateTime

from .recent import WriteStatus


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address, e.g. 203.0.113.7") from None


LenientCurrency = Annotated[Currency, BeforeValidator(_upper)]
IpAddress = Annotated[str, Field(max_length=64), AfterValidator(_ip_address)]


class ClickIn(BaseModel):
    """A click seen by the platform's own page script (publishable key)."""

    code: ReferralCode
    visitor_id: str | None = Field(None, max_length=200,
                                   description="The page's own visitor id; stored only hashed.")
    channel: str | None = Field(None, max_length=40)
    url: str | None = Field(None, max_length=4000, description="Page URL; its utm_* are kept.")


class ClickAccepted(BaseModel):
    click_id: str


class ConversionIn(BaseModel):
    """An order reported by the platform's checkout (secret key)."""

    conversion_id: Identifier = Field(description="The platform's order id: the idempotency key.")
    code: ReferralCode | None = None
    click_id: Identifier | None = None
    customer: Customer
    amount: MinorUnits
    currency: LenientCurrency
    occurred_at: UtcDateTime | None = None
    ip: IpAddress | None = Field(None, description="The buyer's IP; stored only as a salted hash.")
    device_id: str | None = Field(None, max_length=200)


class ReversalIn(BaseModel):
    """A refund, chargeback or cancellation of an earlier conversion (secret key)."""

    conversion_id: Identifier
    reason: ReversalReason
    amount: MinorUnits | None = Field(None,
                                      description="Reversed amount; the whole order if unset.")
    reversal_id: Identifier | None = Field(
        None, description="Idempotency key of this reversal, needed only to report several "
                          "partial reversals of one order with the same reason and amount.")
    occurred_at: UtcDateTime | None = None


class WriteAccepted(BaseModel):
    status: WriteStatus

