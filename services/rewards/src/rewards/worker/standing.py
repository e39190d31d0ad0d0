"""What the rules and fraud checks need to know about a referral, read inside its decision
transaction. The caller holds the referrer's row lock, so the referrer's totals read here
cannot change before the rewards are written; the programme budget is locked here too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
from referral_events import ReferralAttributed

from ..fraud import FraudSettings, Observation
from ..rules import ProgramRules, Standing


def periods(at: datetime) -> tuple[str, str]:
    """Keys of the referrer_totals rows of ``at``'s UTC day and month (as the trigger writes)."""
    return f"d:{at:%Y-%m-%d}", f"m:{at:%Y-%m}"


async def load_standing(conn: asyncpg.Connection, rules: ProgramRules, *, program_id: str,
                        referrer_id: str, decided_at: datetime) -> Standing:
    """The referrer's successful referrals and granted totals, and the programme's spend."""
    if not rules.needs_standing:
        return Standing()
    day, month = periods(decided_at)
    totals = {r["period"]: r for r in await conn.fetch(
        "SELECT period, amount, successful FROM referrer_totals"
        " WHERE referrer_id = $1 AND period = ANY($2::text[])",
        referrer_id, ["all", day, month])}
    spent = 0
    if rules.caps.program_budget is not None:
        # Locks the budget row until commit: deciders of other referrers queue here, so
        # the budget is exact with any number of workers.
        spent = await conn.fetchval(
            "INSERT INTO program_budgets AS b (program_id) VALUES ($1) ON CONFLICT (program_id)"
            " DO UPDATE SET spent = b.spent RETURNING spent", program_id)
    granted: frozenset[int] = frozenset()
    if rules.has_milestones:
        granted = frozenset(r["milestone"] for r in await conn.fetch(
            "SELECT milestone FROM rewards WHERE referrer_id = $1 AND purpose = 'milestone'"
            " AND status IN ('pending', 'in_review', 'approved')", referrer_id))
    lifetime = totals.get("all")
    return Standing(
        successful_referrals=lifetime["successful"] if lifetime else 0,
        referrer_day=_amount(totals.get(day)), referrer_month=_amount(totals.get(month)),
        referrer_lifetime=_amount(lifetime), program_spent=spent, milestones_granted=granted)


def _amount(row: Any) -> int:
    return int(row["amount"]) if row else 0


async def observe(conn: asyncpg.Connection, settings: FraudSettings, data: ReferralAttributed,
                  referrer: Any) -> Observation:
    """The facts the fraud checks judge; one query, for the checks that are on."""
    velocity = clicks = conversions = None
    rate = settings.conversion_rate
    if settings.velocity_per_hour.enabled or rate.enabled:
        hour = data.converted_at.replace(minute=0, second=0, microsecond=0)
        # The decision row of this referral is already written: velocity counts it too.
        row = await conn.fetchrow(
            "SELECT v.n AS velocity, s.clicks, s.conversions FROM"
            " (SELECT count(*) FROM referral_decisions WHERE $1::boolean AND referrer_id = $2"
            "   AND outcome = 'attributed' AND converted_at > $3 AND converted_at <= $4) v (n),"
            " (SELECT sum(clicks), sum(conversions) FROM hourly_stats WHERE $5::boolean"
            "   AND program_id = $6 AND code = $7 AND hour > $8 AND hour <= $9)"
            "   s (clicks, conversions)",
            settings.velocity_per_hour.enabled, data.referrer_id,
            data.converted_at - timedelta(hours=1), data.converted_at,
            rate.enabled, data.program_id, data.code,
            hour - timedelta(hours=rate.window_hours), hour)
        if settings.velocity_per_hour.enabled:
            velocity = row["velocity"]
        if row["clicks"] is not None:  # no stats rows: no data
            clicks, conversions = int(row["clicks"]), int(row["conversions"])
    return Observation(
        referrer_email=referrer["email"],
        friend_email=str(data.customer.email) if data.customer.email else None,
        ip_hash=data.ip_hash, device_id=data.device_id,
        referrer_ip_hashes=frozenset(referrer["ip_hashes"] or ()),
        referrer_device_ids=frozenset(referrer["device_ids"] or ()),
        country=data.customer.country, referrals_last_hour=velocity,
        code_clicks=clicks, code_conversions=conversions)
