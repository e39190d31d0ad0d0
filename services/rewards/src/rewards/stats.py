"""A programme's figures for a date range, read from the roll-ups only (never raw rewards,
decisions or events), so the answer costs the same with a thousand referrals or millions.

Definitions (days are UTC dates, both ends included):

* clicks, conversions, attributed, revenue, rejections: attribution's hourly counts by the
  hour of the click or order. ``revenue`` is the attributed order amounts (gross of refunds).
* ``conversion_rate`` = attributed / clicks (null without clicks; above 1 when coupon codes
  attribute without clicks).
* rewards by the day they were created. ``reward_cost`` = the current value of the standing
  (pending, in review, approved) rewards of money kinds (cash, credit, discount), in minor
  units of the programme's currency; ``reward_points`` likewise for points. Rejected and
  reversed rewards cost nothing; a partial reversal lowers the value.
* ``rewarded`` = conversions with at least one standing reward (each counted once).
* ``roi`` = (revenue - reward_cost) / reward_cost (null when nothing was spent).
* ``ledger``: money actually credited and clawed back on those days.
"""

from __future__ import annotations

import datetime as dt
from datetime import date, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

STANDING = ("pending", "in_review", "approved")
STATUSES = ("pending", "in_review", "approved", "rejected", "reversed")


class Counts(BaseModel):
    clicks: int = 0
    conversions: int = 0
    attributed: int = 0
    revenue: int = Field(0, description="Attributed order amounts, minor units.")


class ChannelStats(Counts):
    channel: str = Field(description="Click channel; `none` holds rejected conversions.")


class DayStats(Counts):
    date: dt.date
    rewarded: int = 0
    reward_cost: int = 0


class TopReferrer(BaseModel):
    referrer_id: str
    external_id: str
    name: str | None
    email: str
    code: str
    clicks: int
    attributed: int
    revenue: int
    reward_cost: int = Field(description="Standing money rewards of their referrals "
                                         "(both sides), minor units.")


class FunnelStage(BaseModel):
    stage: Literal["clicks", "conversions", "attributed", "rewarded"]
    count: int


class LedgerMovements(BaseModel):
    credited: int = Field(0, description="Money made payable, minor units.")
    clawed_back: int = Field(0, description="Money taken back by reversals, minor units.")


class ProgramStats(Counts):
    model_config = ConfigDict(populate_by_name=True)

    program_id: str
    currency: str
    from_: date = Field(alias="from")
    to: date
    conversion_rate: float | None = Field(description="attributed / clicks; null without "
                                                      "clicks.")
    rewarded: int
    reward_cost: int
    reward_points: int
    roi: float | None = Field(description="(revenue - reward_cost) / reward_cost; null when "
                                          "reward_cost is 0.")
    rewards_by_status: dict[str, int]
    rejected_by_reason: dict[str, int]
    ledger: LedgerMovements
    funnel: list[FunnelStage]
    by_channel: list[ChannelStats]
    daily: list[DayStats]
    top_referrers: list[TopReferrer]


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


async def program_stats(conn: asyncpg.Connection, program: Any, start: date, end: date,
                        *, top: int = 10) -> ProgramStats:
    """The figures of ``program`` (its row) from ``start`` to ``end`` inclusive."""
    pid = program["id"]
    days = {start + timedelta(n): DayStats(date=start + timedelta(n))
            for n in range((end - start).days + 1)}
    channels: dict[str, ChannelStats] = {}
    for row in await conn.fetch(
            "SELECT day, channel, sum(clicks) AS clicks, sum(conversions) AS conversions,"
            " sum(attributed) AS attributed, sum(revenue) AS revenue"
            " FROM stats_daily_channel WHERE program_id = $1 AND day BETWEEN $2 AND $3"
            " GROUP BY day, channel", pid, start, end):
        for bucket in (days[row["day"]],
                       channels.setdefault(row["channel"], ChannelStats(channel=row["channel"]))):
            for field in ("clicks", "conversions", "attributed", "revenue"):
                setattr(bucket, field, getattr(bucket, field) + int(row[field]))
    rejected = {row["reason"]: int(row["n"]) for row in await conn.fetch(
        "SELECT reason, sum(rejected) AS n FROM stats_daily_rejections"
        " WHERE program_id = $1 AND day BETWEEN $2 AND $3 GROUP BY reason"
        " HAVING sum(rejected) <> 0 ORDER BY reason", pid, start, end)}

    by_status = dict.fromkeys(STATUSES, 0)
    points = 0
    for row in await conn.fetch(
            "SELECT day, status, kind = 'points' AS is_points, sum(rewards) AS n,"
            " sum(amount) AS amount FROM reward_daily"
            " WHERE program_id = $1 AND day BETWEEN $2 AND $3 GROUP BY 1, 2, 3", pid, start, end):
        by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["n"])
        if row["status"] in STANDING:
            if row["is_points"]:
                points += int(row["amount"])
            else:
                days[row["day"]].reward_cost += int(row["amount"])
    for row in await conn.fetch(
            "SELECT day, sum(conversions) AS n FROM rewarded_daily"
            " WHERE program_id = $1 AND day BETWEEN $2 AND $3 GROUP BY day", pid, start, end):
        days[row["day"]].rewarded = int(row["n"])
    ledger = await conn.fetchrow(
        "SELECT coalesce(sum(amount) FILTER (WHERE entry_type = 'credit'), 0) AS credited,"
        " coalesce(-sum(amount) FILTER (WHERE entry_type = 'clawback'), 0) AS clawed_back"
        " FROM ledger_daily WHERE program_id = $1 AND day BETWEEN $2 AND $3"
        " AND kind <> 'points'", pid, start, end)

    daily = list(days.values())
    totals = Counts(**{f: sum(getattr(d, f) for d in daily)
                       for f in ("clicks", "conversions", "attributed", "revenue")})
    rewarded = sum(d.rewarded for d in daily)
    cost = sum(d.reward_cost for d in daily)
    return ProgramStats(
        program_id=pid, currency=program["currency"].strip(), from_=start, to=end,
        **totals.model_dump(), conversion_rate=_ratio(totals.attributed, totals.clicks),
        rewarded=rewarded, reward_cost=cost, reward_points=points,
        roi=_ratio(totals.revenue - cost, cost), rewards_by_status=by_status,
        rejected_by_reason=rejected,
        ledger=LedgerMovements(credited=int(ledger["credited"]),
                               clawed_back=int(ledger["clawed_back"])),
        funnel=[FunnelStage(stage="clicks", count=totals.clicks),
                FunnelStage(stage="conversions", count=totals.conversions),
                FunnelStage(stage="attributed", count=totals.attributed),
                FunnelStage(stage="rewarded", count=rewarded)],
        by_channel=sorted(channels.values(), key=lambda c: (-c.attributed, -c.clicks, c.channel)),
        daily=daily,
        top_referrers=await _top_referrers(conn, pid, start, end, top))


SPAN_DAYS = (81, 27, 9, 3)  # the aligned spans of stats_code_spans (migration 0005)
_EPOCH = date(1970, 1, 1)


def covering_spans(start: date, end: date) -> tuple[list[date], list[tuple[int, date]]]:
    """Cover ``start``..``end`` (inclusive) with the fewest single days and aligned spans
    (``(length, first day)``; a span of n days starts on a day number divisible by n), the
    longest that fits first: at most 10 pieces for 90 days, 16 for a year."""
    days: list[date] = []
    spans: list[tuple[int, date]] = []
    day = start
    while day <= end:
        number = (day - _EPOCH).days
        length = next((n for n in SPAN_DAYS
                       if number % n == 0 and day + timedelta(n - 1) <= end), 1)
        if length == 1:
            days.append(day)
        else:
            spans.append((length, day))
        day += timedelta(length)
    return days, spans


async def _top_referrers(conn: asyncpg.Connection, program_id: str, start: date, end: date,
                         limit: int) -> list[TopReferrer]:
    # Rank by code first, from the fewest roll-up rows that cover the range (single days and
    # aligned spans of up to 81 days); only the winners' reward cost is looked up.
    days, spans = covering_spans(start, end)
    rows = await conn.fetch(
        "WITH pieces AS ("
        "  SELECT code, clicks, attributed, revenue FROM stats_daily_code"
        "  WHERE program_id = $1 AND day = ANY($5::date[])"
        "  UNION ALL"
        "  SELECT s.code, s.clicks, s.attributed, s.revenue"
        "  FROM unnest($6::smallint[], $7::date[]) AS p(span_days, first_day)"
        "  JOIN stats_code_spans s ON s.program_id = $1 AND s.span_days = p.span_days"
        "   AND s.first_day = p.first_day),"
        " by_code AS ("
        "  SELECT code, sum(clicks) AS clicks, sum(attributed) AS attributed,"
        "         sum(revenue) AS revenue"
        "  FROM pieces GROUP BY code HAVING sum(attributed) > 0 OR sum(clicks) > 0),"
        " ranked AS ("
        "  SELECT r.id, r.external_id, r.name, r.email, r.code, c.clicks, c.attributed,"
        "         c.revenue"
        "  FROM by_code c JOIN referrers r ON r.code = c.code AND r.program_id = $1"
        "  ORDER BY c.attributed DESC, c.revenue DESC, c.clicks DESC, r.code LIMIT $4)"
        " SELECT ranked.*, (SELECT coalesce(sum(cost), 0) FROM referrer_reward_daily x"
        "   WHERE x.program_id = $1 AND x.referrer_id = ranked.id"
        "     AND x.day BETWEEN $2 AND $3) AS reward_cost"
        " FROM ranked ORDER BY attributed DESC, revenue DESC, clicks DESC, code",
        program_id, start, end, limit, days, [n for n, _ in spans], [d for _, d in spans])
    return [TopReferrer(referrer_id=r["id"], external_id=r["external_id"], name=r["name"],
                        email=r["email"], code=r["code"], clicks=int(r["clicks"]),
                        attributed=int(r["attributed"]), revenue=int(r["revenue"]),
                        reward_cost=int(r["reward_cost"])) for r in rows]
