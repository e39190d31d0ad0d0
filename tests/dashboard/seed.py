"""Known figures for the dashboard: a Dutch-locale programme in EUR, two referrers, attribution's
hourly counts written through the stats store (as the worker's stats consumer writes them)
and rewards inserted as the decision handler leaves them. ``EXPECTED`` is what the page must
show for the default range (the last 30 days)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
from referral_events import ReferralStatsCounted, TopicRegistry
from rewards import programs
from rewards.schemas import ProgramCreate, ReferrerCreate
from rewards.stats_store import store_hourly_counts

TODAY = datetime.now(UTC).date()
D1, D2 = TODAY - timedelta(days=3), TODAY - timedelta(days=2)
OLD = TODAY - timedelta(days=45)  # outside the default range


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), UTC)


def counts(program_id: str, code: str, channel: str, hour: datetime, version: int,
           **figures: Any) -> ReferralStatsCounted:
    return ReferralStatsCounted(program_id=program_id, code=code, channel=channel, hour=hour,
                                version=version, **figures)


@dataclass
class Seeded:
    program: Any
    ann: Any
    bob: Any
    rewards: dict[str, Any]


async def _reward(conn: asyncpg.Connection, program: Any, referrer: Any, key: str, *,
                  created: datetime, status: str = "pending", beneficiary: str = "referrer",
                  kind: str = "cash", amount: int = 1000, order_amount: int = 10000,
                  channel: str = "email", fraud_signals: list[dict[str, Any]] | None = None,
                  reason: str | None = None) -> Any:
    friend = beneficiary == "friend"
    return await conn.fetchrow(
        "INSERT INTO rewards (id, program_id, referrer_id, beneficiary, conversion_id, kind,"
        " amount, currency, status, available_at, recipient_id, recipient_email,"
        " recipient_name, order_amount, channel, reason, source_event_id, fraud_signals,"
        " created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,"
        "         $18, $19, $19) RETURNING *",
        f"rwd_{key}_{uuid.uuid4().hex[:8]}", program["id"], referrer["id"], beneficiary,
        f"order-{key}", kind, amount, program["currency"], status, created + timedelta(days=14),
        "friend-" + key if friend else referrer["id"],
        f"friend-{key}@example.org" if friend else referrer["email"],
        None if friend else referrer["name"], order_amount, channel, reason, f"evt-{key}",
        fraud_signals or [], created)


async def seed(conn: asyncpg.Connection, topics: TopicRegistry) -> Seeded:
    program, _ = await programs.create_program(conn=conn, topics=topics, body=ProgramCreate(
        name="Winkel", landing_url="https://winkel.example/", currency="EUR", locale="nl",
        referrer_reward={"kind": "cash", "amount": 1000},
        friend_reward={"kind": "discount", "amount": 500}))
    other, _ = await programs.create_program(conn=conn, topics=topics, body=ProgramCreate(
        name="Other shop", landing_url="https://other.example/", currency="USD", locale="en"))
    people = {}
    for name in ("Ann", "Bob"):
        people[name], _ = await programs.enrol_referrer(
            conn=conn, topics=topics, program_id=program["id"], body=ReferrerCreate(
                external_id=f"cust-{name.lower()}", email=f"{name.lower()}@example.com",
                name=name))
    ann, bob = people["Ann"], people["Bob"]
    pid = program["id"]
    async with conn.transaction():
        await store_hourly_counts(conn, [
            counts(pid, ann["code"], "email", at(D1, 10), 4, clicks=1200, conversions=30,
                   attributed=25, revenue=250000),
            counts(pid, ann["code"], "whatsapp", at(D2, 9), 2, clicks=300, conversions=8,
                   attributed=6, revenue=48000),
            counts(pid, bob["code"], "email", at(D2, 23), 1, clicks=34, conversions=2,
                   attributed=2, revenue=9050),
            counts(pid, "UNKNOWN1", "none", at(D1, 12), 2, conversions=3,
                   rejected={"unknown_code": 3}),
            counts(pid, bob["code"], "none", at(D2, 11), 1, conversions=1,
                   rejected={"self_referral": 1}),
            counts(pid, ann["code"], "email", at(OLD, 8), 1, clicks=999, conversions=9,
                   attributed=9, revenue=99900),
            counts(other["id"], "OTHERCODE", "email", at(D1, 8), 1, clicks=77),
        ])
    rewards = {
        "a1": await _reward(conn, program, ann, "a1", created=at(D1, 11)),
        "a1f": await _reward(conn, program, ann, "a1", created=at(D1, 11), beneficiary="friend",
                             kind="discount", amount=500),
        "a2": await _reward(conn, program, ann, "a2", created=at(D2, 10), status="in_review",
                            channel="whatsapp", fraud_signals=[
                                {"signal": "velocity", "value": 12, "threshold": 10,
                                 "action": "flag"}]),
        "b1": await _reward(conn, program, bob, "b1", created=at(D2, 23), status="approved",
                            amount=700, order_amount=4525),
        "b2": await _reward(conn, program, bob, "b2", created=at(D2, 23), status="rejected",
                            amount=700, order_amount=4525, reason="self-referral"),
    }
    return Seeded(program, ann, bob, rewards)


# What the dashboard shows for the default range with locale nl (ICU's spaces normalised to
# plain ones). Revenue 2,500.00 + 480.00 + 90.50; standing reward cost 10 + 5 + 10 + 7.
NONE = "\u2013"  # an en dash: no figure (a rate without clicks, ROI without cost)
EXPECTED_TILES = {
    "kpi-clicks": "1.534", "kpi-conversions": "44", "kpi-attributed": "33",
    "kpi-conversion-rate": "2,2%",            # 33 / 1534
    "kpi-revenue": "€ 3.070,50", "kpi-reward-cost": "€ 32,00",
    "kpi-roi": "9.495,3%",                    # (307050 - 3200) / 3200
}
EXPECTED_FUNNEL = ["Clicks 1.534", "Conversions 44 2,9% of clicks",
                   "Attributed 33 75% of conversions", "Rewarded 3 9,1% of attributed"]
EXPECTED_CHANNELS = [
    ["email", "1.234", "32", "27", "2,2%", "€ 2.590,50"],
    ["whatsapp", "300", "8", "6", "2%", "€ 480,00"],
    ["none (rejected)", "0", "4", "0", NONE, "€ 0,00"],
]
EXPECTED_REFERRERS = [
    ["Annann@example.com", "{ann}", "1.500", "31", "€ 2.980,00", "€ 25,00"],
    ["Bobbob@example.com", "{bob}", "34", "2", "€ 90,50", "€ 7,00"],
]
EXPECTED_REJECTIONS = [["Unknown code", "3"], ["Self-referral", "1"]]
EXPECTED_STATUSES = [["Pending (hold period)", "2"], ["In review", "1"], ["Approved", "1"],
                     ["Rejected", "1"], ["Reversed", "0"]]
