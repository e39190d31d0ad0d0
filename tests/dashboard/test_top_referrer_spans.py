"""Top referrers read from aligned code spans (migration 0005) instead of every code-day: the
spans cover any range exactly, stay equal to the daily roll-up under replays and updates, and
rank exactly as summing the days would."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

from hypothesis import given
from hypothesis import strategies as st
from referral_events import ReferralStatsCounted
from rewards import programs
from rewards.schemas import ProgramCreate, ReferrerCreate
from rewards.stats import SPAN_DAYS, _top_referrers, covering_spans
from rewards.stats_store import store_hourly_counts

EPOCH = date(1970, 1, 1)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
       st.integers(min_value=0, max_value=365))
def test_spans_cover_a_range_exactly_with_few_pieces(start, extra):
    end = start + timedelta(days=extra)
    days, spans = covering_spans(start, end)
    covered = list(days)
    for length, first in spans:
        assert length in SPAN_DAYS and (first - EPOCH).days % length == 0
        covered += [first + timedelta(n) for n in range(length)]
    assert sorted(covered) == [start + timedelta(n) for n in range(extra + 1)]
    # aligned 3/9/27/81-day spans: at most two pieces of each size (and of single days)
    # on either side of the middle, so a range never needs more than 2 x 2 x 5 = 20 pieces
    assert len(days) + len(spans) <= 20


async def _naive_top(conn, program_id, start, end):
    rows = await conn.fetch(
        "SELECT d.code, sum(clicks) AS c, sum(attributed) AS a, sum(revenue) AS r"
        " FROM stats_daily_code d JOIN referrers f ON f.code = d.code AND f.program_id = $1"
        " WHERE d.program_id = $1 AND day BETWEEN $2 AND $3 GROUP BY d.code"
        " HAVING sum(attributed) > 0 OR sum(clicks) > 0"
        " ORDER BY a DESC, r DESC, c DESC, d.code LIMIT 10", program_id, start, end)
    return [(r["code"], int(r["c"]), int(r["a"]), int(r["r"])) for r in rows]


async def test_spans_equal_the_daily_roll_up_and_rank_exactly(pool, topics):
    rng = random.Random(20261123)
    today = datetime.now(UTC).date()
    async with pool.acquire() as conn:
        ids, codes = [], {}
        for p in range(2):
            program, _ = await programs.create_program(conn=conn, topics=topics, body=(
                ProgramCreate(name=f"P{p}", landing_url="https://shop.example/",
                              currency="EUR")))
            ids.append(program["id"])
            codes[program["id"]] = []
            for n in range(25):
                referrer, _ = await programs.enrol_referrer(
                    conn=conn, topics=topics, program_id=program["id"],
                    body=ReferrerCreate(external_id=f"c{n}", email=f"c{n}@example.com"))
                codes[program["id"]].append(referrer["code"])
        # Versioned counts of random buckets over 200 days; every bucket gets 1-4 versions,
        # sent in random batches, with replays and older versions arriving late.
        events = []
        for _ in range(600):
            pid = rng.choice(ids)
            bucket = (pid, rng.choice(codes[pid]), rng.choice(["email", "sms", "x"]),
                      datetime.combine(today - timedelta(days=rng.randrange(200)),
                                       time(rng.randrange(24)), UTC))
            clicks = conversions = attributed = revenue = 0
            for version in range(1, rng.randint(2, 5)):
                clicks += rng.randint(0, 9)
                conversions += rng.randint(0, 2)
                attributed = min(conversions, attributed + rng.randint(0, 2))
                revenue += rng.randint(0, 5000)
                events.append(ReferralStatsCounted(
                    program_id=bucket[0], code=bucket[1], channel=bucket[2], hour=bucket[3],
                    version=version, clicks=clicks, conversions=conversions,
                    attributed=attributed, revenue=revenue))
        sends = events + rng.sample(events, len(events) // 3)
        rng.shuffle(sends)
        while sends:
            size = rng.randint(1, 80)
            batch, sends = sends[:size], sends[size:]
            async with conn.transaction():
                await store_hourly_counts(conn, batch)

        mismatch = await conn.fetch(
            "WITH expected AS ("
            "  SELECT program_id, span AS span_days,"
            "    DATE '1970-01-01' + ((day - DATE '1970-01-01') / span) * span AS first_day,"
            "    code, sum(clicks) AS clicks, sum(conversions) AS conversions,"
            "    sum(attributed) AS attributed, sum(revenue) AS revenue"
            "  FROM stats_daily_code, unnest(ARRAY[3, 9, 27, 81]) AS span GROUP BY 1, 2, 3, 4)"
            " SELECT * FROM expected e FULL JOIN stats_code_spans s USING (program_id,"
            "  span_days, first_day, code)"
            " WHERE (e.clicks, e.conversions, e.attributed, e.revenue)"
            "   IS DISTINCT FROM (s.clicks, s.conversions, s.attributed, s.revenue)"
            "   AND NOT (e.clicks IS NULL AND s.clicks = 0 AND s.conversions = 0"
            "            AND s.attributed = 0 AND s.revenue = 0)")
        assert mismatch == []
        assert await conn.fetchval("SELECT count(*) FROM stats_code_spans") > 100

        for _ in range(40):
            start = today - timedelta(days=rng.randrange(220))
            end = min(today, start + timedelta(days=rng.randrange(120)))
            for pid in ids:
                got = [(t.code, t.clicks, t.attributed, t.revenue)
                       for t in await _top_referrers(conn, pid, start, end, 10)]
                assert got == await _naive_top(conn, pid, start, end), (start, end)
