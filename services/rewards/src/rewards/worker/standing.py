"""What the rules and fraud checks need to know about the referrals of a batch, read inside
its decision transaction in two queries, and kept up to date in memory while the batch's
rewards are decided one referral after another.

The caller holds the row locks of the batch's referrers and of its programmes' budgets, so
nothing read here can grow behind its back: only this transaction adds rewards for these
referrers or spends these budgets, and :meth:`Standings.add` counts each reward it decides
exactly as the triggers of migration 0003 count it once inserted (``reward_granted_amount``,
``reward_success``). A reviewer's rejection committed meanwhile can only give room back: the
batch then sees a little less room than there is, never more, as a single transaction did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import asyncpg

from ..rules import CAP_REACHED, Standing

GRANTED = ("pending", "in_review", "approved")  # statuses whose amount counts against caps


def periods(at: datetime) -> tuple[str, str]:
    """Keys of the referrer_totals rows of ``at``'s UTC day and month (as the trigger writes)."""
    return _periods(at.date())


@lru_cache(maxsize=4096)
def _periods(day: date) -> tuple[str, str]:
    return f"d:{day:%Y-%m-%d}", f"m:{day:%Y-%m}"


class Standings:
    """The referrers' granted totals and successful referrals, their standing milestone
    bonuses, and the programmes' spend, as this transaction sees them."""

    def __init__(self) -> None:
        self.spent: defaultdict[str, int] = defaultdict(int)
        self.amounts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.successful: defaultdict[str, int] = defaultdict(int)
        self.milestones: defaultdict[str, set[int]] = defaultdict(set)

    @classmethod
    async def load(cls, conn: asyncpg.Connection, *, program_ids: Iterable[str],
                   referrer_ids: Iterable[str], at: Iterable[datetime],
                   milestone_referrers: Iterable[str]) -> Standings:
        keys = {"all"}
        for moment in at:
            keys.update(periods(moment))
        loaded = cls()
        for row in await conn.fetch(
                "SELECT 'budget' AS k, program_id AS owner, NULL::text AS period,"
                "       spent AS amount, 0 AS successful, NULL::int AS milestone"
                " FROM program_budgets WHERE program_id = ANY($1::text[])"
                " UNION ALL"
                " SELECT 'total', referrer_id, period, amount, successful, NULL"
                " FROM referrer_totals"
                " WHERE referrer_id = ANY($2::text[]) AND period = ANY($3::text[])"
                " UNION ALL"
                " SELECT 'milestone', referrer_id, NULL, 0, 0, milestone FROM rewards"
                " WHERE referrer_id = ANY($4::text[]) AND purpose = 'milestone'"
                "   AND status IN ('pending', 'in_review', 'approved')",
                sorted(set(program_ids)), sorted(set(referrer_ids)), sorted(keys),
                sorted(set(milestone_referrers))):
            if row["k"] == "budget":
                loaded.spent[row["owner"]] = int(row["amount"])
            elif row["k"] == "total":
                loaded.amounts[(row["owner"], row["period"])] = int(row["amount"])
                if row["period"] == "all":
                    loaded.successful[row["owner"]] = row["successful"]
            else:
                loaded.milestones[row["owner"]].add(row["milestone"])
        return loaded

    def copy(self) -> Standings:
        other = Standings()
        other.spent.update(self.spent)
        other.amounts.update(self.amounts)
        other.successful.update(self.successful)
        other.milestones.update((k, set(v)) for k, v in self.milestones.items())
        return other

    def standing(self, program_id: str, referrer_id: str, decided_at: datetime) -> Standing:
        day, month = periods(decided_at)
        return Standing(
            successful_referrals=self.successful[referrer_id],
            referrer_day=self.amounts[(referrer_id, day)],
            referrer_month=self.amounts[(referrer_id, month)],
            referrer_lifetime=self.amounts[(referrer_id, "all")],
            program_spent=self.spent[program_id],
            milestones_granted=frozenset(self.milestones[referrer_id]))

    def add(self, *, program_id: str, referrer_id: str, beneficiary: str, purpose: str,
            status: str, reason: str | None, amount: int, milestone: int | None,
            created_at: datetime) -> None:
        """Count a reward about to be inserted, as the totals trigger will."""
        granted = amount if status in GRANTED else 0
        self.spent[program_id] += granted
        if beneficiary == "referrer":
            day, month = periods(created_at)
            for key in ("all", day, month):
                self.amounts[(referrer_id, key)] += granted
            if purpose == "referral" and (status in GRANTED or (
                    status == "rejected" and (reason or "").split(":", 1)[0] == CAP_REACHED)):
                self.successful[referrer_id] += 1
        if purpose == "milestone" and status in GRANTED and milestone is not None:
            self.milestones[referrer_id].add(milestone)


@dataclass(frozen=True)
class Probe:
    """What the velocity and conversion-rate checks of one referral look up."""

    velocity: bool
    referrer_id: str
    converted_at: datetime
    rate: bool
    program_id: str
    code: str
    window_hours: int


@dataclass(frozen=True)
class Seen:
    """Attributed referrals of the referrer in the hour up to the conversion, among those
    decided before this batch's (``None``: check off); the code's clicks and conversions over
    the rate window (``None``: check off or no stats)."""

    velocity: int | None
    clicks: int | None
    conversions: int | None


async def observe_many(conn: asyncpg.Connection, probes: Sequence[Probe]) -> list[Seen]:
    """One query for the whole batch; call it before the batch's decision rows are written
    (the caller adds the batch's own referrals to the velocity)."""
    if not any(p.velocity or p.rate for p in probes):
        return [Seen(None, None, None) for _ in probes]
    hours = [p.converted_at.replace(minute=0, second=0, microsecond=0) for p in probes]
    rows = await conn.fetch(
        "SELECT u.i, CASE WHEN u.v THEN (SELECT count(*) FROM referral_decisions d"
        "   WHERE d.referrer_id = u.referrer_id AND d.outcome = 'attributed'"
        "     AND d.converted_at > u.since AND d.converted_at <= u.at) END AS velocity,"
        " s.clicks, s.conversions"
        " FROM unnest($1::int[], $2::boolean[], $3::text[], $4::timestamptz[],"
        "             $5::timestamptz[], $6::boolean[], $7::text[], $8::text[],"
        "             $9::timestamptz[], $10::timestamptz[])"
        "   AS u (i, v, referrer_id, since, at, r, program_id, code, lo, hi)"
        " LEFT JOIN LATERAL (SELECT sum(h.clicks) AS clicks, sum(h.conversions) AS conversions"
        "   FROM hourly_stats h WHERE u.r AND h.program_id = u.program_id AND h.code = u.code"
        "     AND h.hour > u.lo AND h.hour <= u.hi) s ON true",
        list(range(len(probes))), [p.velocity for p in probes],
        [p.referrer_id for p in probes], [p.converted_at - timedelta(hours=1) for p in probes],
        [p.converted_at for p in probes], [p.rate for p in probes],
        [p.program_id for p in probes], [p.code for p in probes],
        [h - timedelta(hours=p.window_hours) for h, p in zip(hours, probes, strict=True)], hours)
    seen: list[Seen] = [Seen(None, None, None)] * len(probes)
    for row in rows:
        clicks = row["clicks"]
        seen[row["i"]] = Seen(
            velocity=row["velocity"],
            clicks=int(clicks) if clicks is not None else None,
            conversions=int(row["conversions"]) if clicks is not None else None)
    return seen
