"""The stats store (hourly counts, highest version wins), its consumer, the stats endpoint's
exact figures from the roll-ups, and the CSV export."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, time, timedelta

import httpx
import pytest
from referral_events import EventDeadLettered, ReferralStatsCounted, new_event
from referral_kit.kafka import make_producer
from rewards import lifecycle
from rewards.api.app import create_app
from rewards.stats_store import store_hourly_counts
from rewards.worker.reversals import ReversalHandler
from rewards.worker.stats_consumer import StatsConsumer

from tests.rewards.builders import (
    make_program,
    make_referrer,
    make_reward,
    migrated_pool,
    reversal,
)
from tests.support import eventually, serve_asgi
from tests.support.kafka import collect, publish

TODAY = datetime.now(UTC).date()
D0, D1, D2 = (TODAY - timedelta(days=n) for n in (11, 10, 9))


def _at(day, hour=12):
    return datetime.combine(day, time(hour), UTC)


def _counts(program_id, code, channel, at, version, **counts):
    return ReferralStatsCounted(program_id=program_id, code=code, channel=channel, hour=at,
                                version=version, **counts)


@pytest.fixture
async def pool(database_url):
    pool = await migrated_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture
async def admin(rewards_settings, admin_token, pool):
    async with serve_asgi(create_app(rewards_settings)) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client


async def test_store_keeps_the_highest_version_under_replays_and_reordering(pool):
    rng = random.Random(7)
    buckets = [("prg_a", code, channel, _at(D1, hour)) for code in ("C1", "C2")
               for channel in ("email", "sms") for hour in (9, 10)]
    events = []
    for program_id, code, channel, hour in buckets:
        for version in range(1, 6):  # counts grow with the version, as attribution counts
            events.append(_counts(program_id, code, channel, hour, version, clicks=version * 2,
                                  conversions=version, attributed=version - 1,
                                  rejected={"duplicate": version // 2}, revenue=version * 100))
    for _ in range(5):  # replays and reorderings, in batches of random sizes
        shuffled = events[:]
        rng.shuffle(shuffled)
        while shuffled:
            size = rng.randint(1, 12)
            batch, shuffled = shuffled[:size], shuffled[size:]
            async with pool.acquire() as conn, conn.transaction():
                await store_hourly_counts(conn, batch)
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM hourly_stats")
        assert len(rows) == len(buckets)
        assert {(r["version"], r["clicks"], r["attributed"], r["revenue"]) for r in rows} == {
            (5, 10, 4, 500)}
        assert all(r["rejected"] == {"duplicate": 2} for r in rows)
        # The daily roll-ups equal the sums of the stored rows: nothing counted twice.
        daily = await conn.fetchrow(
            "SELECT sum(clicks) AS clicks, sum(conversions) AS conversions,"
            " sum(revenue) AS revenue FROM stats_daily_channel")
        assert tuple(daily) == (80, 40, 4000)
        assert await conn.fetchval("SELECT sum(clicks) FROM stats_daily_code") == 80
        assert await conn.fetchval("SELECT sum(rejected) FROM stats_daily_rejections") == 16


async def test_worker_stats_consumer_stores_the_topic(pool, rewards_settings, kafka_bootstrap,
                                                      topics):
    producer = make_producer(rewards_settings, client_id="test")
    await producer.start()
    consumer = StatsConsumer(settings=rewards_settings, topic=topics.stats,
                             group_id=f"{topics.prefix}stats-test", pool=pool,
                             producer=producer)
    await consumer.start()
    try:
        key = "prg_b|CODE|email|x"
        newer = _counts("prg_b", "CODE", "email", _at(D1), 3, clicks=3, attributed=1,
                        conversions=1, revenue=700)
        older = _counts("prg_b", "CODE", "email", _at(D1), 2, clicks=2)
        await publish(kafka_bootstrap, topics.stats.name, (key, new_event(newer, source="t")),
                      (key, b"not an event"), (key, new_event(older, source="t")))

        async def stored():
            async with pool.acquire() as conn:
                return await conn.fetchrow("SELECT clicks, attributed, revenue, version"
                                           " FROM hourly_stats WHERE program_id = 'prg_b'")

        await eventually(stored)
        [dead] = await collect(kafka_bootstrap, topics.stats.dead_letter, until=bool)
        assert isinstance(dead.data, EventDeadLettered) and dead.data.consumer == "rewards-stats"
        # The poison record sat between the two: both neighbours were handled.
        await eventually(lambda: _committed(consumer))
        assert tuple(await stored()) == (3, 1, 700, 3)
    finally:
        await consumer.stop()
        await producer.stop()


async def _committed(consumer) -> bool:
    client = consumer._consumer
    positions = [await client.committed(tp) or 0 for tp in client.assignment()]
    return sum(positions) == 3


async def _seed(pool, topics):
    """Known hourly counts and rewards; see the expected figures in the test below."""
    async with pool.acquire() as conn:
        program = await make_program(conn, topics, friend_reward={"kind": "discount",
                                                                  "amount": 500})
        ann = await make_referrer(conn, topics, program["id"], "Ann")
        bob = await make_referrer(conn, topics, program["id"], "Bob")
        pid = program["id"]
        async with conn.transaction():
            await store_hourly_counts(conn, [
                _counts(pid, ann["code"], "email", _at(D1, 10), 5, clicks=10, conversions=3,
                        attributed=2, revenue=9000),
                _counts(pid, ann["code"], "email", _at(D1, 10), 3, clicks=7),  # older: ignored
                _counts(pid, ann["code"], "whatsapp", _at(D2, 9), 2, clicks=5, conversions=1,
                        attributed=1, revenue=4000),
                _counts(pid, bob["code"], "email", _at(D2, 23), 1, clicks=4, conversions=1,
                        attributed=1, revenue=1000),
                _counts(pid, "UNKNOWN", "none", _at(D1, 12), 2, conversions=2,
                        rejected={"unknown_code": 2}),
                _counts(pid, bob["code"], "none", _at(D2, 11), 1, conversions=1,
                        rejected={"self_referral": 1}),
                _counts(pid, ann["code"], "email", _at(D0, 23), 1, clicks=100),  # before D1
            ])
        a1 = await make_reward(conn, program, ann, conversion_id="a1", created_at=_at(D1))
        await make_reward(conn, program, ann, conversion_id="a1", beneficiary="friend",
                          kind="discount", amount=500, created_at=_at(D1))
        a2 = await make_reward(conn, program, ann, conversion_id="a2", created_at=_at(D1))
        await make_reward(conn, program, ann, conversion_id="a3", kind="points", amount=50,
                          created_at=_at(D2))
        await make_reward(conn, program, bob, conversion_id="b1", amount=700, status="in_review",
                          created_at=_at(D2))
        b1f = await make_reward(conn, program, bob, conversion_id="b1", beneficiary="friend",
                                amount=300, created_at=_at(D2))
        await make_reward(conn, program, ann, conversion_id="a0", amount=9999, created_at=_at(D0))
        async with conn.transaction():
            await lifecycle.approve(conn, topics, a1["id"])
            await lifecycle.approve(conn, topics, a2["id"])
            await lifecycle.reject(conn, topics, b1f["id"], reason="test order")
    await ReversalHandler(pool, topics)(reversal(pid, "a2"), None)
    return program, ann, bob


async def test_stats_are_exactly_the_stored_figures(admin, pool, topics):
    program, ann, bob = await _seed(pool, topics)
    response = await admin.get(f"/v1/programs/{program['id']}/stats",
                               params={"from": D1.isoformat(), "to": D2.isoformat()})
    assert response.status_code == 200, response.text
    stats = response.json()
    assert (stats["from"], stats["to"], stats["currency"]) == (D1.isoformat(), D2.isoformat(),
                                                               "EUR")
    assert {k: stats[k] for k in ("clicks", "conversions", "attributed", "revenue", "rewarded",
                                  "reward_cost", "reward_points")} == {
        "clicks": 19, "conversions": 8, "attributed": 4, "revenue": 14000, "rewarded": 3,
        "reward_cost": 2200, "reward_points": 50}
    assert stats["conversion_rate"] == round(4 / 19, 4)
    assert stats["roi"] == round((14000 - 2200) / 2200, 4)
    assert stats["rewards_by_status"] == {"pending": 2, "in_review": 1, "approved": 1,
                                          "rejected": 1, "reversed": 1}
    assert stats["rejected_by_reason"] == {"self_referral": 1, "unknown_code": 2}
    assert stats["funnel"] == [{"stage": "clicks", "count": 19},
                               {"stage": "conversions", "count": 8},
                               {"stage": "attributed", "count": 4},
                               {"stage": "rewarded", "count": 3}]
    assert stats["by_channel"] == [
        {"channel": "email", "clicks": 14, "conversions": 4, "attributed": 3, "revenue": 10000},
        {"channel": "whatsapp", "clicks": 5, "conversions": 1, "attributed": 1, "revenue": 4000},
        {"channel": "none", "clicks": 0, "conversions": 3, "attributed": 0, "revenue": 0}]
    assert stats["daily"] == [
        {"date": D1.isoformat(), "clicks": 10, "conversions": 5, "attributed": 2,
         "revenue": 9000, "rewarded": 1, "reward_cost": 1500},
        {"date": D2.isoformat(), "clicks": 9, "conversions": 3, "attributed": 2,
         "revenue": 5000, "rewarded": 2, "reward_cost": 700}]
    assert stats["top_referrers"] == [
        {"referrer_id": ann["id"], "external_id": "cust-ann", "name": "Ann",
         "email": "ann@example.com", "code": ann["code"], "clicks": 15, "attributed": 3,
         "revenue": 13000, "reward_cost": 1500},
        {"referrer_id": bob["id"], "external_id": "cust-bob", "name": "Bob",
         "email": "bob@example.com", "code": bob["code"], "clicks": 4, "attributed": 1,
         "revenue": 1000, "reward_cost": 700}]
    # Money moved today: two credits of 1000, one clawed back.
    today = (await admin.get(f"/v1/programs/{program['id']}/stats",
                             params={"from": TODAY.isoformat(), "to": TODAY.isoformat()})).json()
    assert today["ledger"] == {"credited": 2000, "clawed_back": 1000}
    assert today["roi"] is None and today["conversion_rate"] is None

    default = (await admin.get(f"/v1/programs/{program['id']}/stats")).json()
    assert (default["from"], default["to"]) == ((TODAY - timedelta(days=29)).isoformat(),
                                                TODAY.isoformat())
    assert len(default["daily"]) == 30 and default["clicks"] == 119
    assert default["reward_cost"] == 2200 + 9999


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "2026-01-10", "to": "2026-01-01"}, "to"),
    ({"from": "2024-01-01", "to": "2026-01-01"}, "from"),
    ({"from": "2026-13-01"}, "from"),
    ({"to": "01/02/2026"}, "to"),
])
async def test_stats_date_range_is_validated(admin, pool, topics, params, field):
    async with pool.acquire() as conn:
        program = await make_program(conn, topics)
    response = await admin.get(f"/v1/programs/{program['id']}/stats", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == field and field in response.json()["detail"]


async def test_stats_edges(admin, pool, topics):
    async with pool.acquire() as conn:
        program = await make_program(conn, topics)
    year = await admin.get(f"/v1/programs/{program['id']}/stats",
                           params={"from": "2025-01-01", "to": "2025-12-31"})
    assert year.status_code == 200 and len(year.json()["daily"]) == 365
    assert (await admin.get("/v1/programs/prg_nope/stats")).status_code == 404
    assert (await admin.get("/v1/programs/prg_nope/rewards.csv")).status_code == 404


async def test_rewards_csv_rows_and_formula_escaping(admin, pool, topics):
    async with pool.acquire() as conn:
        program = await make_program(conn, topics)
        ann = await make_referrer(conn, topics, program["id"])
        first = await make_reward(conn, program, ann, conversion_id="=HYPERLINK(\"x\")",
                                  channel="-email", created_at=_at(D1), fraud_signals=[
                                      {"signal": "velocity", "value": 12, "threshold": 10,
                                       "action": "flag"},
                                      {"signal": "disposable_email", "value": True,
                                       "action": "reject"}])
        await make_reward(conn, program, ann, conversion_id="@SUM(A1)", status="rejected",
                          reason="+cmd|' /C calc'!A0", created_at=_at(D2),
                          recipient_id="\tfriend")
        await make_reward(conn, program, ann, conversion_id="old", created_at=_at(D0))

    response = await admin.get(f"/v1/programs/{program['id']}/rewards.csv",
                               params={"from": D1.isoformat()})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["conversion_id"] for r in rows] == ["'=HYPERLINK(\"x\")", "'@SUM(A1)"]
    one, two = rows
    assert (one["id"], one["status"], one["beneficiary"], one["referrer_id"],
            one["referrer_code"], one["referrer_email"], one["kind"], one["amount"],
            one["currency"], one["order_amount"], one["channel"]) == (
        first["id"], "pending", "referrer", ann["id"], ann["code"], "ann@example.com", "cash",
        "1000", "EUR", "5000", "'-email")
    assert one["created_at"] == _at(D1).isoformat().replace("+00:00", "Z")
    assert one["fraud_signals"] == ("velocity=12 (threshold 10) -> flag; "
                                    "disposable_email=true -> reject")
    assert (two["reason"], two["recipient_id"], two["status"]) == (
        "'+cmd|' /C calc'!A0", "'\tfriend", "rejected")

    only = await admin.get(f"/v1/programs/{program['id']}/rewards.csv",
                           params={"status": "rejected"})
    assert len(list(csv.DictReader(io.StringIO(only.text)))) == 1
    until = await admin.get(f"/v1/programs/{program['id']}/rewards.csv",
                            params={"to": D0.isoformat()})
    assert [r["conversion_id"] for r in csv.DictReader(io.StringIO(until.text))] == ["old"]
    bad = await admin.get(f"/v1/programs/{program['id']}/rewards.csv", params={"from": "x"})
    assert bad.status_code == 422 and bad.json()["field"] == "from"


async def test_new_endpoints_require_the_admin_token(rewards_settings, pool, topics):
    async with pool.acquire() as conn:
        program = await make_program(conn, topics)
        ann = await make_referrer(conn, topics, program["id"])
    paths = [f"/v1/programs/{program['id']}/stats", f"/v1/programs/{program['id']}/rewards.csv",
             f"/v1/referrers/{ann['id']}"]
    async with serve_asgi(create_app(rewards_settings)) as url, httpx.AsyncClient(
            base_url=url) as client:
        for path in paths:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                response = await client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.json()["field"] == "Authorization"
        spec = (await client.get("/openapi.json")).json()
        for path in paths[:2]:
            operation = spec["paths"][path.replace(program["id"], "{program_id}")]["get"]
            assert operation["security"] and {"401", "404", "422"} <= set(operation["responses"])
