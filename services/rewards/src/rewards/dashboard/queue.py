"""What the dashboard reads beyond the admin API: the review queue with the referrer of each
reward (the admin API's reward list carries only ids)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from ..schemas import FraudSignalRead

QUEUE_STATUSES = ("in_review", "pending")
COUNT_UP_TO = 1000


class QueueReferrer(BaseModel):
    id: str
    name: str | None
    email: str
    code: str


class QueuedReward(BaseModel):
    id: str
    status: Literal["in_review", "pending"]
    beneficiary: Literal["referrer", "friend"]
    purpose: str = "referral"
    kind: str
    amount: int
    currency: str
    order_amount: int
    channel: str | None
    conversion_id: str
    recipient_email: str | None
    created_at: datetime
    available_at: datetime
    fraud_signals: list[FraudSignalRead]
    referrer: QueueReferrer


class QueueSection(BaseModel):
    total: int = Field(description=f"Rewards of this status, counted up to {COUNT_UP_TO}.")
    more: bool = Field(description=f"True when there are more than {COUNT_UP_TO}.")
    items: list[QueuedReward] = Field(description="The oldest first, at most `limit`.")


class ReviewQueue(BaseModel):
    in_review: QueueSection
    pending: QueueSection


def _queued(row: Any) -> QueuedReward:
    fields = dict(row)
    referrer = QueueReferrer(id=fields["referrer_id"], name=fields.pop("referrer_name"),
                             email=fields.pop("referrer_email"), code=fields.pop("referrer_code"))
    fields["currency"] = fields["currency"].strip()
    return QueuedReward(**fields, referrer=referrer)


async def review_queue(conn: asyncpg.Connection, program_id: str, *, limit: int
                       ) -> ReviewQueue:
    """The oldest ``limit`` rewards of each queue status (index ``rewards_by_program``)."""
    sections = {}
    for status in QUEUE_STATUSES:
        rows = await conn.fetch(
            "SELECT w.*, r.name AS referrer_name, r.email AS referrer_email,"
            " r.code AS referrer_code"
            " FROM rewards w JOIN referrers r ON r.id = w.referrer_id"
            " WHERE w.program_id = $1 AND w.status = $2"
            " ORDER BY w.created_at, w.id LIMIT $3", program_id, status, limit)
        total = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM rewards WHERE program_id = $1 AND status = $2"
            " LIMIT $3) AS capped", program_id, status, COUNT_UP_TO + 1)
        sections[status] = QueueSection(total=min(total, COUNT_UP_TO),
                                        more=total > COUNT_UP_TO,
                                        items=[_queued(r) for r in rows])
    return ReviewQueue(**sections)
