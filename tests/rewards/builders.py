"""Test data for the rewards database: programmes, referrers and rewards written straight
to a migrated database (the decision path is tested in test_worker.py), and events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from referral_events import ConversionReversed, ReversalReason, new_event, utcnow
from referral_kit.migrations import migrate
from rewards import programs
from rewards.db import SCHEMA, create_pool
from rewards.schemas import ProgramCreate, ReferrerCreate


async def migrated_pool(database_url: str) -> asyncpg.Pool:
    await migrate(database_url, schema=SCHEMA, package="rewards")
    return await create_pool(database_url, min_size=1, max_size=4)


async def make_program(conn: asyncpg.Connection, topics: Any, **fields: Any) -> Any:
    body = {"name": "Shop", "landing_url": "https://shop.example/", "currency": "EUR",
            "referrer_reward": {"kind": "cash", "amount": 1000}, **fields}
    row, _ = await programs.create_program(conn=conn, topics=topics,
                                           body=ProgramCreate.model_validate(body))
    return row


async def make_referrer(conn: asyncpg.Connection, topics: Any, program_id: str,
                        name: str = "Ann") -> Any:
    row, _ = await programs.enrol_referrer(
        conn=conn, topics=topics, program_id=program_id,
        body=ReferrerCreate(external_id=f"cust-{name.lower()}",
                            email=f"{name.lower()}@example.com", name=name))
    return row


async def make_reward(conn: asyncpg.Connection, program: Any, referrer: Any, *,
                      conversion_id: str | None = None, beneficiary: str = "referrer",
                      kind: str = "cash", amount: int = 1000, order_amount: int = 5000,
                      status: str = "pending", created_at: datetime | None = None,
                      channel: str | None = "email", reason: str | None = None,
                      recipient_id: str | None = None,
                      fraud_signals: list[dict[str, Any]] | None = None) -> Any:
    """A reward as the decision handler writes it, with its attributed decision row."""
    conversion_id = conversion_id or f"order-{uuid.uuid4().hex[:8]}"
    at = created_at or utcnow()
    await conn.execute(
        "INSERT INTO referral_decisions (program_id, conversion_id, outcome, referrer_id, code,"
        " channel, order_amount, currency, converted_at, decided_at, event_id)"
        " VALUES ($1, $2, 'attributed', $3, $4, $5, $6, $7, $8, $8, $9) ON CONFLICT DO NOTHING",
        program["id"], conversion_id, referrer["id"], referrer["code"], channel or "code",
        order_amount, program["currency"], at, f"evt-{conversion_id}")
    return await conn.fetchrow(
        "INSERT INTO rewards (id, program_id, referrer_id, beneficiary, conversion_id, kind,"
        " amount, currency, status, available_at, recipient_id, recipient_email,"
        " recipient_name, order_amount, channel, reason, source_event_id, fraud_signals,"
        " created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,"
        "         $18, $10, $10) RETURNING *",
        f"rwd_{uuid.uuid4().hex[:16]}", program["id"], referrer["id"], beneficiary,
        conversion_id, kind, amount, program["currency"], status, at,
        recipient_id or (referrer["id"] if beneficiary == "referrer" else "friend-1"),
        referrer["email"] if beneficiary == "referrer" else "friend@example.org",
        referrer["name"] if beneficiary == "referrer" else None, order_amount, channel, reason,
        f"evt-{conversion_id}", fraud_signals or [])


def reversal(program_id: str, conversion_id: str, *, amount: int | None = None,
             reason: str = "refund", event_id: str | None = None) -> Any:
    data = ConversionReversed(program_id=program_id, conversion_id=conversion_id,
                              reason=ReversalReason(reason), amount=amount, occurred_at=utcnow())
    return new_event(data, source="tracker", id=event_id or str(uuid.uuid4()))
