"""Test data of the notifier tests: reward events as the rewards service publishes them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from referral_events import (
    Beneficiary,
    Envelope,
    Recipient,
    RewardEvent,
    RewardKind,
    RewardPending,
    new_event,
)

HOLD_ENDS = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
CONVERTED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def address() -> str:
    """A mailbox no other test uses."""
    return f"ann.{uuid.uuid4().hex[:8]}@example.com"


def reward(cls: type[RewardEvent] = RewardPending, *, email: str, locale: str | None = "en",
           beneficiary: Beneficiary = Beneficiary.REFERRER, name: str | None = "Ann",
           amount: int = 1000, currency: str = "EUR", program_locale: str = "en",
           **extra: Any) -> Envelope[Any]:
    """A reward event envelope as the rewards service publishes it."""
    if cls is RewardPending:
        extra.setdefault("available_at", HOLD_ENDS)
    data = cls(reward_id=f"rwd_{uuid.uuid4().hex[:8]}", program_id="prg_1",
               program_name="Demo Shop", program_locale=program_locale, referrer_id="ref_1",
               beneficiary=beneficiary, recipient=Recipient(email=email, name=name, locale=locale),
               conversion_id=f"order-{uuid.uuid4().hex[:6]}", kind=RewardKind.CASH,
               amount=amount, currency=currency, occurred_at=CONVERTED, **extra)
    return new_event(data, source="rewards")


async def notification_row(database_url: str, recipient: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchrow("SELECT * FROM notifier.notifications WHERE recipient = $1",
                                   recipient.lower())
    finally:
        await conn.close()
