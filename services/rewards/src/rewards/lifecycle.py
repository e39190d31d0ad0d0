"""Reward state changes, each with its ledger entry and its event in one transaction.

pending ─┬─ hold elapsed / approve ─► approved (ledger credit)
         ├─ reject ─────────────────► rejected
in_review┘
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from referral_events import (
    Envelope,
    FraudSignal,
    Recipient,
    RewardApproved,
    RewardInReview,
    RewardPending,
    RewardRejected,
    TopicRegistry,
    derived_id,
    new_event,
    utcnow,
)

from .holds import add_duration
from .outbox import enqueue

SOURCE = "rewards"
OPEN = ("pending", "in_review")


class TransitionRefused(Exception):
    """The reward is not in a state that allows the change."""

    def __init__(self, reward_id: str, status: str, action: str) -> None:
        super().__init__(f"reward {reward_id} is {status}; it cannot be {action}")
        self.status = status


def _common(reward: Any, program: Any) -> dict[str, Any]:
    return dict(
        reward_id=reward["id"], program_id=reward["program_id"], program_name=program["name"],
        program_locale=program["locale"], referrer_id=reward["referrer_id"],
        beneficiary=reward["beneficiary"], purpose=reward.get("purpose") or "referral",
        milestone=reward.get("milestone"),
        # Checked when stored (the enrolment, the attributed event): not parsed again, as
        # email validation is the costliest part of building a reward event.
        recipient=Recipient.model_construct(email=reward["recipient_email"],
                                            name=reward["recipient_name"],
                                            locale=reward["recipient_locale"]),
        conversion_id=reward["conversion_id"], kind=reward["kind"], amount=reward["amount"],
        currency=reward["currency"],
    )


def creation_event(reward: Any, program: Any) -> Envelope[Any]:
    """Event for a reward just created: pending, in review (flagged by a fraud check), or
    rejected (by the rules, a cap or a fraud check), with the fraud signals that fired.
    Published under the reward's referrer id (:func:`announce_created`)."""
    signals = [FraudSignal(**s) for s in reward.get("fraud_signals") or ()]
    if reward["status"] == "pending":
        data: Any = RewardPending(**_common(reward, program), occurred_at=reward["created_at"],
                                  available_at=reward["available_at"])
    elif reward["status"] == "in_review":
        data = RewardInReview(**_common(reward, program), occurred_at=reward["created_at"],
                              fraud_signals=signals)
    else:
        data = RewardRejected(**_common(reward, program), occurred_at=reward["created_at"],
                              reason=reward["reason"] or "rejected", fraud_signals=signals)
    return new_event(data, source=SOURCE, id=derived_id("reward", reward["id"], reward["status"]))


async def announce_created(conn: asyncpg.Connection, topics: TopicRegistry, reward: Any,
                           program: Any) -> None:
    """Enqueue :func:`creation_event` in the caller's transaction."""
    await enqueue(conn, topics.rewards, key=reward["referrer_id"],
                  envelope=creation_event(reward, program))


async def approve(conn: asyncpg.Connection, topics: TopicRegistry, reward_id: str, *,
                  now: datetime | None = None) -> Any:
    """Make a pending or in-review reward payable: status, ledger credit, event."""
    now = now or utcnow()
    reward = await _lock(conn, reward_id)
    if reward["status"] not in OPEN:
        raise TransitionRefused(reward_id, reward["status"], "approved")
    expires_at = add_duration(now, reward["expires_after"]) if reward["expires_after"] else None
    updated = await conn.fetchrow(
        "UPDATE rewards SET status = 'approved', updated_at = $2 WHERE id = $1 RETURNING *",
        reward_id, now)
    await conn.execute(
        "INSERT INTO ledger_entries (reward_id, program_id, referrer_id, beneficiary, entry_type,"
        " kind, amount, currency, expires_at) VALUES ($1, $2, $3, $4, 'credit', $5, $6, $7, $8)",
        reward_id, reward["program_id"], reward["referrer_id"], reward["beneficiary"],
        reward["kind"], reward["amount"], reward["currency"], expires_at)
    program = await conn.fetchrow("SELECT * FROM programs WHERE id = $1", reward["program_id"])
    event = RewardApproved(**_common(updated, program), occurred_at=now, expires_at=expires_at)
    await enqueue(conn, topics.rewards, key=reward["referrer_id"], envelope=new_event(
        event, source=SOURCE, id=derived_id("reward", reward_id, "approved")))
    return updated


async def reject(conn: asyncpg.Connection, topics: TopicRegistry, reward_id: str, *,
                 reason: str, now: datetime | None = None) -> Any:
    """Refuse a pending or in-review reward, with the reason given to the beneficiary."""
    now = now or utcnow()
    reward = await _lock(conn, reward_id)
    if reward["status"] not in OPEN:
        raise TransitionRefused(reward_id, reward["status"], "rejected")
    updated = await conn.fetchrow(
        "UPDATE rewards SET status = 'rejected', reason = $2, updated_at = $3 WHERE id = $1 "
        "RETURNING *", reward_id, reason, now)
    program = await conn.fetchrow("SELECT * FROM programs WHERE id = $1", reward["program_id"])
    event = RewardRejected(**_common(updated, program), occurred_at=now, reason=reason)
    await enqueue(conn, topics.rewards, key=reward["referrer_id"], envelope=new_event(
        event, source=SOURCE, id=derived_id("reward", reward_id, "rejected")))
    return updated


class RewardNotFound(Exception):
    pass


async def _lock(conn: asyncpg.Connection, reward_id: str) -> Any:
    reward = await conn.fetchrow("SELECT * FROM rewards WHERE id = $1 FOR UPDATE", reward_id)
    if reward is None:
        raise RewardNotFound(reward_id)
    return reward
