"""Reversals applied to rewards: the value lowered or cancelled during the hold, clawed back
with a negative ledger entry after approval, a ``RewardReversed`` event through the outbox;
all in the caller's transaction (see :mod:`rewards.reversal_policy` for the policy).

A reversal can arrive before its conversion's rewards exist (attribution is slower than the
refund). It is recorded anyway and applied when a reward of the conversion is created
(:func:`apply_pending_reversals`, called by the decision handler), or by the worker's sweep,
which settles every reversal still waiting once its conversion is decided: between the two, a
reversal is never lost. One advisory lock per conversion keeps them from applying the same
reversal twice at once (and each application is recorded once per reward anyway).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import structlog
from referral_events import ConversionReversed, RewardReversed, TopicRegistry, derived_id, new_event
from referral_events import utcnow as _utcnow

from .lifecycle import SOURCE, _common
from .outbox import enqueue
from .reversal_policy import ReversalEffect, RewardState, reversal_effect

log = structlog.get_logger(__name__)

_WHOLE = {"refund": "the order was refunded",
          "chargeback": "the payment was charged back",
          "cancellation": "the order was cancelled"}
_PART = {"refund": "part of the order was refunded",
         "chargeback": "part of the payment was charged back",
         "cancellation": "part of the order was cancelled"}


def explain(reason: str, *, reversed_amount: int | None, effect: ReversalEffect,
            order_amount: int) -> str:
    """The reason in plain words, as the beneficiary reads it."""
    if reversed_amount is None or effect.reversed_order_amount >= order_amount:
        return _WHOLE.get(reason, reason)
    part = _PART.get(reason, reason)
    if effect.outcome == "reversed":
        return f"{part}, and the rest is below the programme's minimum order"
    return part


async def lock_conversion(conn: asyncpg.Connection, program_id: str, conversion_id: str) -> None:
    """Serialise reversal work on one conversion until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                       f"reversal:{program_id}:{conversion_id}")


async def record_reversal(conn: asyncpg.Connection, topics: TopicRegistry, event_id: str,
                          data: ConversionReversed, *, now: datetime | None = None) -> str:
    """Record a reversal and apply it to the conversion's rewards if they exist; returns
    ``applied``, ``no_reward`` (decided without rewards), ``waiting`` or ``duplicate``."""
    now = now or _utcnow()
    await lock_conversion(conn, data.program_id, data.conversion_id)
    reversal = await conn.fetchrow(
        "INSERT INTO conversion_reversals (event_id, program_id, conversion_id, reason, amount,"
        " occurred_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING *",
        event_id, data.program_id, data.conversion_id, data.reason.value, data.amount,
        data.occurred_at)
    if reversal is None:
        return "duplicate"
    return await _settle(conn, topics, data.program_id, data.conversion_id, now=now)


async def apply_pending_reversals(conn: asyncpg.Connection, topics: TopicRegistry,
                                  reward_row: Any, *, now: datetime | None = None) -> Any:
    """Apply every reversal already recorded for the conversion of a reward just created
    (call it right after the reward's insert and its creation event, in that transaction).
    Returns the reward row as it is afterwards (unchanged when nothing was reversed)."""
    now = now or _utcnow()
    # The common case, no reversal, costs one index probe and no lock. A reversal committed
    # after this probe found no reward (ours is not committed yet) and waits: the sweep
    # applies it once this transaction has committed the decision.
    if not await conn.fetchval(
            "SELECT true FROM conversion_reversals WHERE program_id = $1 AND conversion_id = $2"
            " LIMIT 1", reward_row["program_id"], reward_row["conversion_id"]):
        return reward_row
    await lock_conversion(conn, reward_row["program_id"], reward_row["conversion_id"])
    reversals = await conn.fetch(
        "SELECT * FROM conversion_reversals WHERE program_id = $1 AND conversion_id = $2"
        " ORDER BY occurred_at, received_at, event_id",
        reward_row["program_id"], reward_row["conversion_id"])
    program = await conn.fetchrow("SELECT * FROM programs WHERE id = $1",
                                  reward_row["program_id"])
    reward = await conn.fetchrow("SELECT * FROM rewards WHERE id = $1 FOR UPDATE",
                                 reward_row["id"])
    for reversal in reversals:
        reward = await _apply(conn, topics, reversal, reward, program, now=now)
    await conn.execute(
        "UPDATE conversion_reversals SET applied_at = $3, outcome = 'applied'"
        " WHERE program_id = $1 AND conversion_id = $2 AND applied_at IS NULL",
        reward_row["program_id"], reward_row["conversion_id"], now)
    return reward


async def settle_waiting(conn: asyncpg.Connection, topics: TopicRegistry, program_id: str,
                         conversion_id: str, *, now: datetime | None = None) -> str:
    """Apply the waiting reversals of a conversion that has since been decided (the sweep)."""
    await lock_conversion(conn, program_id, conversion_id)
    return await _settle(conn, topics, program_id, conversion_id, now=now or _utcnow())


async def _settle(conn: asyncpg.Connection, topics: TopicRegistry, program_id: str,
                  conversion_id: str, *, now: datetime) -> str:
    """Apply the conversion's reversals to each of its rewards that has not seen them yet.
    Caller holds the conversion lock."""
    rewards = await conn.fetch(
        "SELECT * FROM rewards WHERE program_id = $1 AND conversion_id = $2"
        " ORDER BY beneficiary FOR UPDATE", program_id, conversion_id)
    if rewards:
        outcome = "applied"
        program = await conn.fetchrow("SELECT * FROM programs WHERE id = $1", program_id)
        reversals = await conn.fetch(
            "SELECT * FROM conversion_reversals WHERE program_id = $1 AND conversion_id = $2"
            " ORDER BY occurred_at, received_at, event_id", program_id, conversion_id)
        for reward in rewards:
            current = reward
            for reversal in reversals:
                current = await _apply(conn, topics, reversal, current, program, now=now)
    elif await conn.fetchval(
            "SELECT true FROM referral_decisions WHERE program_id = $1 AND conversion_id = $2",
            program_id, conversion_id):
        outcome = "no_reward"  # rejected, or attributed without a reward: nothing to take back
    else:
        return "waiting"
    await conn.execute(
        "UPDATE conversion_reversals SET applied_at = $3, outcome = $4"
        " WHERE program_id = $1 AND conversion_id = $2 AND applied_at IS NULL",
        program_id, conversion_id, now, outcome)
    return outcome


async def _apply(conn: asyncpg.Connection, topics: TopicRegistry, reversal: Any, reward: Any,
                 program: Any, *, now: datetime) -> Any:
    """One reversal on one (locked) reward, once: returns the reward row afterwards."""
    effect = reversal_effect(
        RewardState(status=reward["status"], amount=reward["amount"],
                    original_amount=reward["original_amount"] or reward["amount"],
                    basis=reward["reward_basis"] or "flat", order_amount=reward["order_amount"],
                    reversed_order_amount=reward["reversed_order_amount"]),
        reversed_amount=reversal["amount"], min_order_amount=program["min_order_amount"])
    first_time = await conn.fetchval(
        "INSERT INTO reward_reversals (reward_id, reversal_event_id, reversed_order_amount,"
        " amount_before, amount_after, clawback, outcome, applied_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING true",
        reward["id"], reversal["event_id"], effect.reversed_order_amount, reward["amount"],
        effect.amount if effect.outcome != "reversed" else 0, effect.clawback, effect.outcome,
        now)
    if not first_time or effect.outcome == "ignored":
        return reward
    why = explain(reversal["reason"], reversed_amount=reversal["amount"], effect=effect,
                  order_amount=reward["order_amount"])
    updated = await conn.fetchrow(
        "UPDATE rewards SET status = $2, amount = $3, reversed_order_amount = $4,"
        " reason = CASE WHEN $2 = 'reversed' THEN $5 ELSE reason END, updated_at = $6"
        " WHERE id = $1 RETURNING *",
        reward["id"], effect.status, effect.amount, effect.reversed_order_amount, why, now)
    if effect.clawback:
        await conn.execute(
            "INSERT INTO ledger_entries (reward_id, program_id, referrer_id, beneficiary,"
            " entry_type, kind, amount, currency, expires_at, source_event_id)"
            " SELECT id, program_id, referrer_id, beneficiary, 'clawback', kind, $2, currency,"
            "        (SELECT expires_at FROM ledger_entries"
            "          WHERE reward_id = $1 AND entry_type = 'credit'), $3"
            " FROM rewards WHERE id = $1",
            reward["id"], -effect.clawback, reversal["event_id"])
    if effect.taken:
        event = RewardReversed(**{**_common(updated, program), "amount": effect.taken},
                               occurred_at=now, reason=why, clawback_amount=effect.clawback)
        await enqueue(conn, topics.rewards, key=reward["referrer_id"], envelope=new_event(
            event, source=SOURCE,
            id=derived_id("reward", reward["id"], "reversed", reversal["event_id"])))
    log.info("reversal applied", reward_id=reward["id"], reversal=reversal["event_id"],
             outcome=effect.outcome, taken=effect.taken, clawback=effect.clawback)
    return updated
