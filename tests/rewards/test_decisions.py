"""The decision handler against real PostgreSQL: rules, caps, tiers, milestones and fraud
checks in one transaction per attributed event, exact under concurrency. The handler is
called directly on a real pool (the Kafka path is covered by test_worker.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referral_events import (
    AttributionModel,
    Customer,
    ReferralAttributed,
    RewardApproved,
    RewardInReview,
    RewardPending,
    RewardRejected,
    TopicRegistry,
    decode,
    derived_id,
    new_event,
    utcnow,
)
from referral_events.identity import ip_hash
from referral_kit.migrations import migrate
from rewards import lifecycle, programs
from rewards.db import SCHEMA, create_pool
from rewards.schemas import ProgramCreate, ReferrerCreate
from rewards.worker.decisions import DecisionHandler
from rewards.worker.holds import HoldScheduler

from tests.support import eventually

SALT = "test-salt"
QUIET = {"velocity_per_hour": {"enabled": False}, "conversion_rate": {"enabled": False}}
REGISTRY = TopicRegistry("t-decisions.")
NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)  # one UTC day for tests of day caps


@pytest.fixture
async def pool(database_url: str):
    await migrate(database_url, schema=SCHEMA, package="rewards")
    pool = await create_pool(database_url, min_size=2, max_size=12)
    yield pool
    await pool.close()


@pytest.fixture
def handler(pool) -> DecisionHandler:
    return DecisionHandler(pool, REGISTRY)


async def _programme(pool, **fields: Any) -> Any:
    body = {"name": "Shop", "landing_url": "https://shop.example/", "currency": "EUR",
            "referrer_reward": {"kind": "cash", "amount": 1000}, "fraud": QUIET, **fields}
    async with pool.acquire() as conn:
        row, _ = await programs.create_program(conn=conn, topics=REGISTRY,
                                               body=ProgramCreate.model_validate(body))
    return row


async def _referrer(pool, program: Any, name: str = "ann", **extra: Any) -> Any:
    async with pool.acquire() as conn:
        row, _ = await programs.enrol_referrer(
            conn=conn, topics=REGISTRY, program_id=program["id"], ip_hash_salt=SALT,
            body=ReferrerCreate(external_id=f"cust-{name}", email=f"{name}@example.com",
                                **extra))
    return row


def _event(program: Any, referrer: Any, *, amount: int = 5000, conversion_id: str | None = None,
           at: datetime | None = None, email: str | None = "friend@example.org",
           **extra: Any):
    conversion_id = conversion_id or f"order-{uuid.uuid4().hex[:10]}"
    at = at or utcnow()
    country = extra.pop("country", None)
    data = ReferralAttributed(
        program_id=program["id"], conversion_id=conversion_id, referrer_id=referrer["id"],
        code=referrer["code"], channel="email", attribution_model=AttributionModel.LAST_CLICK,
        customer=Customer(id=f"friend-{conversion_id}", email=email, is_new=True,
                          country=country),
        amount=amount, currency="EUR", converted_at=at, decided_at=at, **extra)
    return new_event(data, source="attribution",
                     id=derived_id("attribution", program["id"], conversion_id))


async def _rewards(pool, program: Any, **where: Any) -> list[Any]:
    clauses = " AND ".join(f"{k} = ${i + 2}" for i, k in enumerate(where))
    async with pool.acquire() as conn:
        return await conn.fetch(
            f"SELECT * FROM rewards WHERE program_id = $1 {'AND ' + clauses if where else ''}"
            " ORDER BY created_at, purpose DESC, beneficiary DESC, id", program["id"],
            *where.values())


async def _events(pool) -> list[Any]:
    async with pool.acquire() as conn:
        return [decode(r["value"]).data
                for r in await conn.fetch("SELECT value FROM outbox ORDER BY id")]


async def test_fifty_concurrent_referrals_fill_a_lifetime_cap_exactly(pool, handler) -> None:
    """50 attributed events for one referrer at once, lifetime cap of ten rewards: exactly
    ten granted, forty refused with cap_reached, whatever the interleaving."""
    program = await _programme(pool, caps={"per_referrer_lifetime": 10_000})
    referrer = await _referrer(pool, program)
    await asyncio.gather(*(handler(_event(program, referrer), None) for _ in range(50)))
    rewards = await _rewards(pool, program)
    assert len(rewards) == 50
    granted = [r for r in rewards if r["status"] == "pending"]
    assert len(granted) == 10 and sum(r["amount"] for r in granted) == 10_000
    refused = [r for r in rewards if r["status"] == "rejected"]
    assert all(r["reason"].startswith("cap_reached: the per_referrer_lifetime cap") for r in
               refused)
    async with pool.acquire() as conn:
        totals = await conn.fetchrow(
            "SELECT amount, successful FROM referrer_totals WHERE referrer_id = $1 AND "
            "period = 'all'", referrer["id"])
    assert (totals["amount"], totals["successful"]) == (10_000, 50)


async def test_programme_budget_is_exact_across_referrers(pool, handler) -> None:
    """Concurrent referrals of several referrers share one budget: the last reward that
    fits is reduced to what is left, the rest refused; the spend equals the budget."""
    program = await _programme(pool, caps={"program_budget": 12_500},
                               friend_reward={"kind": "discount", "amount": 500})
    referrers = [await _referrer(pool, program, name) for name in ("ann", "bo", "cy")]
    await asyncio.gather(*(handler(_event(program, r), None) for r in referrers
                           for _ in range(8)))
    rewards = await _rewards(pool, program)
    granted = [r for r in rewards if r["status"] == "pending"]
    assert sum(r["amount"] for r in granted) == 12_500
    assert sum(1 for r in granted if r["reason"] and r["reason"].startswith("capped")) <= 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT spent FROM program_budgets WHERE program_id = $1",
                                   program["id"]) == 12_500


async def test_the_same_event_three_times_is_one_reward(pool, handler) -> None:
    program = await _programme(pool, friend_reward={"kind": "discount", "amount": 500})
    referrer = await _referrer(pool, program)
    event = _event(program, referrer)
    await asyncio.gather(handler(event, None), handler(event, None))
    await handler(event, None)
    # Another event id about the same conversion (attribution replayed): still nothing new.
    await handler(new_event(event.data, source="attribution"), None)
    rewards = await _rewards(pool, program)
    assert sorted(r["beneficiary"] for r in rewards) == ["friend", "referrer"]
    assert len([e for e in await _events(pool) if isinstance(e, RewardPending)]) == 2


async def test_flagged_rewards_wait_for_review_and_are_never_auto_approved(pool,
                                                                           handler) -> None:
    program = await _programme(pool, hold_period="PT0S")
    sneaky = await _referrer(pool, program, "ann", ip="203.0.113.7", device_id="dev-1")
    honest = await _referrer(pool, program, "bo")
    await handler(_event(program, sneaky, ip_hash=ip_hash("203.0.113.7", SALT)), None)
    await handler(_event(program, honest, ip_hash=ip_hash("203.0.113.7", SALT)), None)
    [flagged] = await _rewards(pool, program, referrer_id=sneaky["id"])
    assert flagged["status"] == "in_review"
    assert flagged["fraud_signals"] == [{"signal": "same_ip_or_device", "value": "ip_hash",
                                         "threshold": None, "action": "flag"}]
    [review] = [e for e in await _events(pool) if isinstance(e, RewardInReview)]
    assert review.reward_id == flagged["id"]
    assert review.fraud_signals[0].signal == "same_ip_or_device"

    scheduler = HoldScheduler(pool, REGISTRY, interval=60)
    assert await scheduler.approve_due() == 1  # the honest one only
    assert await scheduler.approve_due() == 0
    [still] = await _rewards(pool, program, referrer_id=sneaky["id"])
    assert still["status"] == "in_review"
    [paid] = await _rewards(pool, program, referrer_id=honest["id"])
    assert paid["status"] == "approved"


async def test_extend_hold_pushes_available_at(pool, handler) -> None:
    program = await _programme(pool, hold_period="P14D", fraud={
        **QUIET, "disposable_email": {"action": "extend_hold"}, "extend_hold_by": "P10D"})
    referrer = await _referrer(pool, program)
    late = _event(program, referrer, email="burner@mailinator.com")
    normal = _event(program, referrer)
    await handler(late, None)
    await handler(normal, None)
    by_conversion = {r["conversion_id"]: r for r in await _rewards(pool, program)}
    extended = by_conversion[late.data.conversion_id]
    assert extended["status"] == "pending"
    assert extended["available_at"] == late.data.decided_at + timedelta(days=24)
    assert extended["fraud_signals"][0]["signal"] == "disposable_email"
    assert by_conversion[normal.data.conversion_id]["available_at"] == \
        normal.data.decided_at + timedelta(days=14)


async def test_fraud_rejection_explains_itself_and_uses_no_room(pool, handler) -> None:
    program = await _programme(pool, caps={"per_referrer_lifetime": 1000},
                               friend_reward={"kind": "discount", "amount": 500})
    referrer = await _referrer(pool, program)
    await handler(_event(program, referrer, email="ann+second@example.com"), None)
    rejected = await _rewards(pool, program)
    assert {(r["beneficiary"], r["status"], r["reason"]) for r in rejected} == {
        ("referrer", "rejected", "fraud:email_alias"), ("friend", "rejected", "fraud:email_alias")}
    events = [e for e in await _events(pool) if isinstance(e, RewardRejected)]
    assert {e.reason for e in events} == {"fraud:email_alias"}
    assert events[0].fraud_signals[0].value == "plus_tag"
    # The cap is untouched: the next honest referral gets the whole 1000.
    await handler(_event(program, referrer), None)
    [ok] = await _rewards(pool, program, status="pending", beneficiary="referrer")
    assert ok["amount"] == 1000


async def test_blocked_country_and_velocity_and_conversion_rate(pool, handler) -> None:
    program = await _programme(pool, fraud={
        "velocity_per_hour": {"max_per_hour": 2},
        "conversion_rate": {"max_rate": 0.5, "min_clicks": 10},
        "blocked_countries": {"countries": ["KP"]}})
    referrer = await _referrer(pool, program)
    now = utcnow()
    await handler(_event(program, referrer, country="kp", at=now - timedelta(hours=3)), None)
    await handler(_event(program, referrer, at=now - timedelta(minutes=20)), None)
    await handler(_event(program, referrer, at=now - timedelta(minutes=10)), None)
    async with pool.acquire() as conn:  # the stats store's hourly counts of this code
        await conn.execute(
            "INSERT INTO hourly_stats (program_id, code, channel, hour, clicks, conversions,"
            " version) VALUES ($1, $2, 'email', $3, 12, 9, 1)",
            program["id"], referrer["code"], now.replace(minute=0, second=0, microsecond=0))
    await handler(_event(program, referrer, at=now), None)
    rows = await _rewards(pool, program)
    signals = [[s["signal"] for s in r["fraud_signals"]] for r in rows]
    assert signals == [["blocked_countries"], [], [], ["velocity_per_hour", "conversion_rate"]]
    assert [r["status"] for r in rows] == ["rejected", "pending", "pending", "in_review"]
    assert rows[0]["reason"] == "fraud:blocked_countries"
    assert rows[3]["fraud_signals"][0]["value"] == 3  # three in the last hour, itself included


async def test_tiers_milestones_and_review_rejections_in_the_database(pool, handler) -> None:
    program = await _programme(pool, tiers=[{"from_referral": 3, "amount": 1500,
                                              "bonus": 5000}])
    referrer = await _referrer(pool, program)
    for _ in range(4):
        await handler(_event(program, referrer), None)
    rewards = await _rewards(pool, program)
    assert [(r["purpose"], r["amount"]) for r in rewards] == [
        ("referral", 1000), ("referral", 1000), ("referral", 1500), ("milestone", 5000),
        ("referral", 1500)]
    bonus = rewards[3]
    assert (bonus["conversion_id"], bonus["milestone"]) == (rewards[2]["conversion_id"], 3)
    # A reviewer rejects two referrals: the count drops to 2, so the next is the 3rd again;
    # the standing bonus for 3 is not paid twice.
    async with pool.acquire() as conn, conn.transaction():
        for r in rewards[:2]:
            await lifecycle.reject(conn, REGISTRY, r["id"], reason="test orders")
    await handler(_event(program, referrer), None)
    latest = (await _rewards(pool, program))[-1]
    assert (latest["purpose"], latest["amount"]) == ("referral", 1500)
    assert len(await _rewards(pool, program, purpose="milestone")) == 1


async def test_day_cap_starts_afresh_each_utc_day(pool, handler) -> None:
    program = await _programme(pool, caps={"per_referrer_day": 1500, "mode": "reject"})
    referrer = await _referrer(pool, program)
    day_one = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    for at in (day_one, day_one + timedelta(minutes=30), day_one + timedelta(hours=1, minutes=1)):
        await handler(_event(program, referrer, at=at), None)
    assert [r["status"] for r in await _rewards(pool, program)] == [
        "pending", "rejected", "pending"]


async def test_a_reversal_or_rejection_gives_cap_room_back(pool, handler) -> None:
    program = await _programme(pool, caps={"per_referrer_lifetime": 1000, "program_budget": 1000})
    referrer = await _referrer(pool, program)
    await handler(_event(program, referrer), None)
    [first] = await _rewards(pool, program)
    async with pool.acquire() as conn, conn.transaction():
        await lifecycle.reject(conn, REGISTRY, first["id"], reason="test order")
    await handler(_event(program, referrer), None)
    assert [r["status"] for r in await _rewards(pool, program)] == ["rejected", "pending"]
    await _assert_totals_match(pool)


GRANTED = "status IN ('pending', 'in_review', 'approved')"


async def _assert_totals_match(pool) -> None:
    """The trigger-kept totals equal what the rewards table says (zero rows aside)."""
    async with pool.acquire() as conn:
        expected_budget = await conn.fetch(
            f"SELECT program_id, sum(amount) FILTER (WHERE {GRANTED})::bigint AS spent"
            " FROM rewards"
            " GROUP BY 1")
        budgets = await conn.fetch("SELECT program_id, spent FROM program_budgets")
        expected = await conn.fetch(
            f"SELECT referrer_id, p.period,"
            f" coalesce(sum(amount) FILTER (WHERE {GRANTED}), 0)::bigint AS amount,"
            f" CASE WHEN p.period = 'all' THEN count(*) FILTER (WHERE purpose = 'referral' AND"
            f"   ({GRANTED} OR reason LIKE 'cap_reached:%')) ELSE 0 END AS successful"
            " FROM rewards r, LATERAL (VALUES ('all'),"
            "   ('d:' || to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')),"
            "   ('m:' || to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM'))) AS p (period)"
            " WHERE beneficiary = 'referrer' GROUP BY 1, 2")
        totals = await conn.fetch(
            "SELECT referrer_id, period, amount, successful FROM referrer_totals")

    def nonzero(rows: list[Any]) -> set[tuple[Any, ...]]:
        return {tuple(r) for r in rows if r["amount"] or r["successful"]}

    assert {tuple(r) for r in expected_budget if r["spent"]} == {
        tuple(r) for r in budgets if r["spent"]}
    assert nonzero(expected) == nonzero(totals)


async def test_replays_rejections_and_concurrency_keep_the_totals_exact(pool, handler) -> None:
    """A mixed workload (concurrent referrals of three referrers, duplicates, reviewer
    rejections in between) leaves totals equal to the rewards and no cap exceeded."""
    caps = {"per_referrer_lifetime": 7000, "per_referrer_day": 4000, "program_budget": 15_000}
    program = await _programme(pool, caps=caps, tiers=[{"from_referral": 2, "percent": 20,
                                                        "bonus": 700}],
                               friend_reward={"kind": "credit", "percent": 5})
    referrers = [await _referrer(pool, program, n) for n in ("ann", "bo", "cy")]
    events = [_event(program, referrers[i % 3], amount=1000 + 997 * i, at=NOON)
              for i in range(24)]
    for batch in (events[:12], events[6:18], events[12:]):  # overlapping: replays
        await asyncio.gather(*(handler(e, None) for e in batch))
        async with pool.acquire() as conn, conn.transaction():
            for r in (await _rewards(pool, program, status="pending"))[:2]:
                await lifecycle.reject(conn, REGISTRY, r["id"], reason="review")
    rewards = await _rewards(pool, program)
    keys = [(r["conversion_id"], r["beneficiary"], r["purpose"]) for r in rewards]
    assert len(keys) == len(set(keys))
    granted = [r for r in rewards if r["status"] == "pending"]
    assert sum(r["amount"] for r in granted) <= caps["program_budget"]
    for referrer in referrers:
        mine = sum(r["amount"] for r in granted if r["referrer_id"] == referrer["id"]
                   and r["beneficiary"] == "referrer")
        assert mine <= caps["per_referrer_day"]  # all on one day, so also the lifetime cap
    await _assert_totals_match(pool)


async def test_referrer_ip_and_devices_are_kept_hashed_and_learnt(pool) -> None:
    program = await _programme(pool)
    first = await _referrer(pool, program, ip="2001:DB8::1", device_id="dev-a")
    again = await _referrer(pool, program, ip="198.51.100.9", device_id="dev-a")
    assert again["id"] == first["id"]
    assert again["ip_hashes"] == [ip_hash("2001:db8::1", SALT), ip_hash("198.51.100.9", SALT)]
    assert again["device_ids"] == ["dev-a"]
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT ip_hashes::text FROM referrers WHERE id = $1",
                                     first["id"])
    assert "198.51" not in stored and "2001" not in stored


async def test_rewards_of_one_conversion_are_unique_even_written_directly(pool) -> None:
    program = await _programme(pool)
    referrer = await _referrer(pool, program)
    row = {"program_id": program["id"], "referrer_id": referrer["id"]}
    async with pool.acquire() as conn:
        insert = ("INSERT INTO rewards (id, program_id, referrer_id, beneficiary, conversion_id,"
                  " kind, amount, currency, status, available_at, order_amount, source_event_id,"
                  " purpose, milestone) VALUES ($1, $2, $3, 'referrer', $4, 'cash', 1, 'EUR',"
                  " 'pending', now(), 1, 'e', $5, $6)")
        await conn.execute(insert, "r1", *row.values(), "o-1", "referral", None)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, "r2", *row.values(), "o-1", "referral", None)
        await conn.execute(insert, "r3", *row.values(), "o-1", "milestone", 5)
        with pytest.raises(asyncpg.UniqueViolationError):  # one standing bonus per milestone
            await conn.execute(insert, "r4", *row.values(), "o-2", "milestone", 5)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(caps=st.fixed_dictionaries({}, optional={
           "per_referrer_day": st.integers(0, 5000), "per_referrer_lifetime": st.integers(0, 9000),
           "program_budget": st.integers(0, 12_000)}),
       mode=st.sampled_from(["cap", "reject"]),
       plan=st.lists(st.tuples(st.integers(0, 1), st.integers(100, 30_000), st.booleans(),
                               st.booleans()), min_size=1, max_size=14))
async def test_any_order_of_events_keeps_caps_and_totals(pool, handler, caps, mode,
                                                         plan) -> None:
    """Property: whatever the referrals (amounts, referrers), duplicates and reviewer
    rejections, in whatever order, concurrently: no cap is exceeded, every conversion has at
    most one reward per side and purpose, and the totals equal the rewards."""
    program = await _programme(pool, caps={**caps, "mode": mode},
                               friend_reward={"kind": "credit", "percent": 3},
                               referrer_reward={"kind": "cash", "percent": 10},
                               tiers=[{"from_referral": 3, "amount": 1200, "bonus": 800}])
    referrers = [await _referrer(pool, program, n) for n in ("ann", "bo")]
    events = [_event(program, referrers[who], amount=amount, at=NOON)
              for who, amount, _, _ in plan]
    replays = [e for e, (_, _, again, _) in zip(events, plan, strict=True) if again]
    await asyncio.gather(*(handler(e, None) for e in events + replays))
    async with pool.acquire() as conn, conn.transaction():
        for reward, (_, _, _, refuse) in zip(await _rewards(pool, program, purpose="referral",
                                                            beneficiary="referrer"),
                                             plan, strict=False):
            if refuse and reward["status"] == "pending":
                await lifecycle.reject(conn, REGISTRY, reward["id"], reason="review")
    await asyncio.gather(*(handler(_event(program, r, at=NOON), None) for r in referrers))
    rewards = await _rewards(pool, program)
    keys = [(r["conversion_id"], r["beneficiary"], r["purpose"]) for r in rewards]
    assert len(keys) == len(set(keys))
    granted = [r for r in rewards if r["status"] == "pending"]
    assert sum(r["amount"] for r in granted) <= caps.get("program_budget", 10**12)
    for referrer in referrers:
        mine = sum(r["amount"] for r in granted
                   if r["referrer_id"] == referrer["id"] and r["beneficiary"] == "referrer")
        assert mine <= min(caps.get("per_referrer_day", 10**12),
                           caps.get("per_referrer_lifetime", 10**12))
    await _assert_totals_match(pool)


async def test_the_hold_scheduler_approves_a_batch_as_one_approval_at_a_time_would(
        pool, handler) -> None:
    # Due rewards of two programmes, one whose credits expire, approved in one round: each
    # gets its status, one ledger credit (amount, expiry) and one RewardApproved naming its
    # own programme, in the order they fell due; a second round finds nothing.
    expiring = await _programme(pool, name="Expiring", hold_period="PT0S",
                                referrer_reward={"kind": "credit", "amount": 700,
                                                 "expires_after": "P30D"})
    plain = await _programme(pool, name="Plain", hold_period="PT0S")
    for program, names in ((expiring, ["ann", "bo", "cy"]), (plain, ["di", "ed"])):
        for name in names:
            await handler(_event(program, await _referrer(pool, program, name)), None)
    before = {e.reward_id for e in await _events(pool) if isinstance(e, RewardPending)}
    assert len(before) == 5

    assert await HoldScheduler(pool, REGISTRY, interval=60).approve_due() == 5
    assert await HoldScheduler(pool, REGISTRY, interval=60).approve_due() == 0
    rewards = {r["id"]: r for p in (expiring, plain) for r in await _rewards(pool, p)}
    assert set(rewards) == before and {r["status"] for r in rewards.values()} == {"approved"}
    async with pool.acquire() as conn:
        ledger = await conn.fetch("SELECT * FROM ledger_entries ORDER BY id")
    assert sorted(e["reward_id"] for e in ledger) == sorted(rewards)
    approved = [e for e in await _events(pool) if isinstance(e, RewardApproved)]
    assert [e.reward_id for e in approved] == [e["reward_id"] for e in ledger]
    for entry, event in zip(ledger, approved, strict=True):
        reward = rewards[entry["reward_id"]]
        assert (entry["entry_type"], entry["amount"], entry["kind"]) == (
            "credit", reward["amount"], reward["kind"])
        if reward["program_id"] == expiring["id"]:
            assert entry["expires_at"] == reward["updated_at"] + timedelta(days=30)
            assert (event.program_name, event.amount) == ("Expiring", 700)
        else:
            assert entry["expires_at"] is None and event.program_name == "Plain"
        assert event.expires_at == entry["expires_at"]
    async with pool.acquire() as conn:
        envelopes = [decode(r["value"]) for r in await conn.fetch(
            "SELECT value FROM outbox ORDER BY id")]
    assert [e.id for e in envelopes if isinstance(e.data, RewardApproved)] == [
        derived_id("reward", e.reward_id, "approved") for e in approved]


async def test_the_handler_tells_when_the_pending_rewards_it_committed_come_due(pool) -> None:
    """Only pending rewards are for the scheduler: not one refused by a cap, and nothing
    again for a replayed event."""
    told: list[list[datetime]] = []
    handler = DecisionHandler(pool, REGISTRY, on_pending=told.append)
    program = await _programme(pool, hold_period="PT2S", caps={"per_referrer_lifetime": 1000},
                               friend_reward={"kind": "discount", "amount": 500})
    referrer = await _referrer(pool, program)
    first, second = _event(program, referrer), _event(program, referrer)
    await handler(first, None)
    assert told == [[first.data.decided_at + timedelta(seconds=2)] * 2]  # referrer, friend
    await handler(first, None)
    await handler(second, None)  # the cap is reached: the referrer's reward is refused
    assert told[1:] == [[second.data.decided_at + timedelta(seconds=2)]]  # the friend's
    statuses = sorted((r["beneficiary"], r["status"]) for r in await _rewards(pool, program))
    assert statuses == [("friend", "pending"), ("friend", "pending"),
                        ("referrer", "pending"), ("referrer", "rejected")]


async def test_a_reward_told_of_is_approved_as_its_hold_ends_not_at_the_next_round(
        pool) -> None:
    """With rounds a minute apart, a one-second hold still ends in about a second: the
    scheduler wakes for the hold end it was told of (and never before it)."""
    scheduler = HoldScheduler(pool, REGISTRY, interval=60)
    await scheduler.start()
    try:
        handler = DecisionHandler(pool, REGISTRY, on_pending=scheduler.due)
        program = await _programme(pool, hold_period="PT1S")
        event = _event(program, await _referrer(pool, program))
        await handler(event, None)
        [pending] = await _rewards(pool, program)
        assert pending["status"] == "pending"
        [approved] = await eventually(
            lambda: _rewards(pool, program, status="approved"), timeout=15,
            message="the reward was not approved when its hold ended")
    finally:
        await scheduler.stop()
    assert approved["updated_at"] >= pending["available_at"] == \
        event.data.decided_at + timedelta(seconds=1)


def test_only_hold_ends_within_the_horizon_are_waited_for() -> None:
    """A 14-day hold is left to the periodic round: telling of it wakes nothing."""
    scheduler = HoldScheduler(None, REGISTRY, interval=60)  # type: ignore[arg-type]
    now = utcnow()
    assert scheduler.due([now + timedelta(days=14)]) is False
    assert scheduler.due([now + timedelta(days=14), now + timedelta(seconds=2)]) is True
