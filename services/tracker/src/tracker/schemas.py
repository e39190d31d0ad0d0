"""Request and response bodies of the tracker's JSON API (the contract of CONTRACT.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
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



MAX_BATCH_EVENTS = 1000


class BatchClick(ClickIn):
    """A click relayed by the platform's server: it may say whose browser clicked, and when."""

    type: Literal["click"]
    ip: IpAddress | None = Field(None, description="The visitor's IP; stored only hashed.")
    user_agent: str | None = Field(None, max_length=1000)
    occurred_at: UtcDateTime | None = None


class BatchConversion(ConversionIn):
    type: Literal["conversion"]


class BatchReversal(ReversalIn):
    type: Literal["reversal"]


BatchEvent = Annotated[BatchClick | BatchConversion | BatchReversal,
                       Field(discriminator="type")]
_EVENT_TYPES = ("click", "conversion", "reversal")


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """A batch item that failed validation; ``field`` is relative to the item."""

    field: str | None
    message: str

    @classmethod
    def from_error(cls, exc: ValidationError) -> InvalidEvent:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "union_tag_not_found":
            return cls("type", f"is required: one of {', '.join(_EVENT_TYPES)}")
        if first["type"] == "union_tag_invalid":
            return cls("type", f"must be one of {', '.join(_EVENT_TYPES)}")
        loc = [str(p) for p in first["loc"]]
        if loc and loc[0] in _EVENT_TYPES:
            loc = loc[1:]  # the discriminated union's tag, not a field
        return cls(".".join(loc) or None, str(first["msg"]))


def _keep_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # One bad item must not fail its batch: it becomes an InvalidEvent, reported by index.
    try:
        return handler(value)
    except ValidationError as exc:
        return InvalidEvent.from_error(exc)


if TYPE_CHECKING:
    BatchItem = BatchClick | BatchConversion | BatchReversal | InvalidEvent
else:
    BatchItem = Annotated[BatchEvent, WrapValidator(_keep_invalid)]


class BatchIn(BaseModel):
    """Up to 1,000 mixed events of one programme (secret key), each validated on its own."""

    events: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class ItemStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"


class ItemProblem(BaseModel):
    """Why an item was not recorded, shaped like the problem details of a single request."""

    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="e.g. events[2].amount")
    retry_after: int | None = Field(None, description="Seconds to wait before sending the "
                                                      "item again (unavailable items).")


class BatchItemResult(BaseModel):
    index: int
    status: ItemStatus
    click_id: str | None = Field(None, description="For clicks accepted or deduplicated.")
    error: ItemProblem | None = None


class BatchAnswer(BaseModel):
    counts: dict[ItemStatus, int]
    results: list[BatchItemResult]
