"""Reversals against real PostgreSQL: cancel during the hold, claw back after approval,
partial reversals, reversals that beat their reward, exactly-once; and through the broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import pytest
from referral_events import (
    AttributionModel,
    Customer,
    ReferralAttributed,
    ReferralRejected,
    RejectionReason,
    RewardReversed,
    decode,
    derived_id,
    new_event,
    utcnow,
)
from rewards import lifecycle
from rewards.api.app import create_app
from rewards.programs import referrer_summary
from rewards.reversals import apply_pending_reversals
from rewards.worker.decisions import DecisionHandler
from rewards.worker.reversals import ReversalHandler, ReversalSweeper
from rewards.worker.run import run_worker

from tests.rewards.builders import (
    make_program,
    make_referrer,
    make_reward,
    migrated_pool,
    reversal,
)
from tests.support import eventually, serve_asgi
from tests.support.kafka import collect, of_type, publish


@pytest.fixture
async def pool(database_url):
    pool = await migrated_pool(database_url)
    yield pool
    await pool.close()


async def _reversed_events(conn) -> list[RewardReversed]:
    rows = await conn.fetch("SELECT value FROM outbox ORDER BY id")
    return [e.data for e in map(decode, (r["value"] for r in rows))
            if isinstance(e.data, RewardReversed)]


async def _reward(conn, reward_id):
    return await conn.fetchrow("SELECT * FROM rewards WHERE id = $1", reward_id)


async def _ledger(conn, reward_id):
    return [(r["entry_type"], r["amount"]) for r in await conn.fetch(
        "SELECT entry_type, amount FROM ledger_entries WHERE reward_id = $1 ORDER BY id",
        reward_id)]


async def test_reversal_during_hold_cancels_once_without_ledger(pool, topics):
    handle = ReversalHandler(pool, topics)
    async with pool.acquire() as conn:
        program = await make_program(conn, topics,
                                     friend_reward={"kind": "discount", "percent": 10})
        ann = await make_referrer(conn, topics, program["id"])
        mine = await make_reward(conn, program, ann, conversion_id="order-1", amount=1000)
        friend = await make_reward(conn, program, ann, conversion_id="order-1",
                                   beneficiary="friend", kind="discount", amount=500)
        await conn.execute("UPDATE rewards SET status = 'in_review' WHERE id = $1", friend["id"])

        event = reversal(program["id"], "order-1", reason="cancellation")
        # The same event delivered twice, concurrently, and again later: one effect.
        await asyncio.gather(handle(event, None), handle(event, None))
        await handle(event, None)
        # Another full reversal of the same order finds nothing left to take.
        await handle(reversal(program["id"], "order-1"), None)

        for reward in (mine, friend):
            row = await _reward(conn, reward["id"])
            assert (row["status"], row["reason"]) == ("reversed", "the order was cancelled")
            assert await _ledger(conn, reward["id"]) == []
        events = await _reversed_events(conn)
        assert sorted((e.beneficiary.value, e.amount, e.clawback_amount) for e in events) == [
            ("friend", 500, 0), ("referrer", 1000, 0)]
        with pytest.raises(lifecycle.TransitionRefused):
            async with conn.transaction():
                await lifecycle.approve(conn, topics, mine["id"])
        assert await conn.fetchval("SELECT count(*) FROM processed_events") == 2


async def test_reversal_after_approval_claws_back_to_a_zero_balance(pool, topics):
    async with pool.acquire() as conn:
        program = await make_program(conn, topics)
        ann = await make_referrer(conn, topics, program["id"])
        reward = await make_reward(conn, program, ann, conversion_id="order-2", amount=1000)
        async with conn.transaction():
            await lifecycle.approve(conn, topics, reward["id"])
        assert (await referrer_summary(conn=conn, referrer_id=ann["id"]))[2] == {"cash": 1000}

        event = reversal(program["id"], "order-2", reason="chargeback")
        await ReversalHandler(pool, topics)(event, None)

        assert (await _reward(conn, reward["id"]))["status"] == "reversed"
        assert await _ledger(conn, reward["id"]) == [("credit", 1000), ("clawback", -1000)]
        assert await conn.fetchval(
            "SELECT source_event_id FROM ledger_entries WHERE entry_type = 'clawback'") == event.id
        assert (await referrer_summary(conn=conn, referrer_id=ann["id"]))[2] == {"cash": 0}
        [announced] = await _reversed_events(conn)
        assert (announced.amount, announced.clawback_amount, announced.reason) == (
            1000, 1000, "the payment was charged back")


async def test_partial_reversals_follow_the_policy(pool, topics):
    """Percent rewards shrink with the order, flat ones stay until the rest of the order falls
    below the minimum; after approval each reduction is its own clawback entry."""
    async with pool.acquire() as conn:
        program = await make_program(conn, topics, min_order_amount=2000,
                                     referrer_reward={"kind": "cash", "percent": 10},
                                     friend_reward={"kind": "credit", "amount": 500})
        ann = await make_referrer(conn, topics, program["id"])
        mine = await make_reward(conn, program, ann, conversion_id="order-3", amount=1000,
                                 order_amount=10_000)
        friend = await make_reward(conn, program, ann, conversion_id="order-3",
                                   beneficiary="friend", kind="credit", amount=500,
                                   order_amount=10_000)
        assert (mine["reward_basis"], friend["reward_basis"]) == ("percent", "flat")
        handle = ReversalHandler(pool, topics)

        await handle(reversal(program["id"], "order-3", amount=2500), None)  # 7500 left
        assert (await _reward(conn, mine["id"]))["amount"] == 750
        assert (await _reward(conn, mine["id"]))["status"] == "pending"
        assert (await _reward(conn, friend["id"]))["amount"] == 500
        async with conn.transaction():
            await lifecycle.approve(conn, topics, mine["id"])
            await lifecycle.approve(conn, topics, friend["id"])

        await handle(reversal(program["id"], "order-3", amount=2500), None)  # 5000 left
        assert await _ledger(conn, mine["id"]) == [("credit", 750), ("clawback", -250)]
        assert await _ledger(conn, friend["id"]) == [("credit", 500)]

        await handle(reversal(program["id"], "order-3", amount=3500), None)  # 1500 < 2000
        assert await _ledger(conn, mine["id"]) == [
            ("credit", 750), ("clawback", -250), ("clawback", -500)]
        assert await _ledger(conn, friend["id"]) == [("credit", 500), ("clawback", -500)]
        for reward in (mine, friend):
            row = await _reward(conn, reward["id"])
            assert (row["status"], row["reversed_order_amount"]) == ("reversed", 8500)
        assert (await _reward(conn, friend["id"]))["reason"] == (
            "part of the order was refunded, and the rest is below the programme's minimum order")
        trail = await conn.fetch(
            "SELECT outcome, amount_before, amount_after, clawback FROM reward_reversals"
            " WHERE reward_id = $1 ORDER BY applied_at", mine["id"])
        assert [tuple(r) for r in trail] == [("reduced", 1000, 750, 0), ("reduced", 750, 500, 250),
                                             ("reversed", 500, 0, 500)]
        assert (await referrer_summary(conn=conn, referrer_id=ann["id"]))[2] == {"cash": 0}


async def test_reversal_before_its_reward_is_applied_when_the_reward_appears(pool, topics):
    handle = ReversalHandler(pool, topics)
    async with pool.acquire() as conn:
        program = await make_program(conn, topics)
        ann = await make_referrer(conn, topics, program["id"])

        # 1. The decision handler's hook applies it in the transaction creating the reward.
        await handle(reversal(program["id"], "early-1"), None)
        assert await conn.fetchval("SELECT count(*) FROM pending_reversals") == 1
        async with conn.transaction():
            reward = await make_reward(conn, program, ann, conversion_id="early-1")
            after = await apply_pending_reversals(conn, topics, reward)
        assert after["status"] == "reversed"
        assert await conn.fetchval("SELECT count(*) FROM pending_reversals") == 0

        # 1b. The same through the decision handler itself.
        await handle(reversal(program["id"], "early-0", amount=None), None)
        await DecisionHandler(pool, topics)(_attributed(program, ann, "early-0"), None)
        [decided] = await conn.fetch("SELECT * FROM rewards WHERE conversion_id = 'early-0'")
        assert decided["status"] == "reversed"

        # 2. Without the hook, the sweep settles it once the conversion is decided.
        await handle(reversal(program["id"], "early-2", amount=5000), None)
        other = await make_reward(conn, program, ann, conversion_id="early-2")
        # 3. A conversion decided without any reward: the reversal is settled as such.
        await handle(reversal(program["id"], "early-3"), None)
        await conn.execute(
            "INSERT INTO referral_decisions (program_id, conversion_id, outcome, reason,"
            " order_amount, currency, converted_at, decided_at, event_id)"
            " VALUES ($1, 'early-3', 'rejected', 'self_referral', 100, 'EUR', now(), now(), 'e')",
            program["id"])
        # 4. Not decided yet: keeps waiting.
        await handle(reversal(program["id"], "early-4"), None)
        assert await ReversalSweeper(pool, topics, interval=1).sweep() == 2
        assert (await _reward(conn, other["id"]))["status"] == "reversed"
        waiting = await conn.fetch("SELECT conversion_id FROM pending_reversals")
        assert [r["conversion_id"] for r in waiting] == ["early-4"]
        assert await conn.fetchval(
            "SELECT outcome FROM conversion_reversals WHERE conversion_id = 'early-3'"
        ) == "no_reward"
        assert len(await _reversed_events(conn)) == 3


async def test_expired_credits_leave_the_balance(pool, topics):
    async with pool.acquire() as conn:
        program = await make_program(conn, topics)
        ann = await make_referrer(conn, topics, program["id"])
        for amount, expires in ((300, "now() - interval '1 day'"),
                                (700, "now() + interval '1 day'"), (50, "NULL")):
            reward = await make_reward(conn, program, ann, kind="credit", amount=amount,
                                       status="approved")
            await conn.execute(
                "INSERT INTO ledger_entries (reward_id, program_id, referrer_id, beneficiary,"
                " entry_type, kind, amount, currency, expires_at)"
                f" VALUES ($1, $2, $3, 'referrer', 'credit', 'credit', $4, 'EUR', {expires})",
                reward["id"], program["id"], ann["id"], amount)
        assert (await referrer_summary(conn=conn, referrer_id=ann["id"]))[2] == {"credit": 750}


# -- through the broker, with the worker -------------------------------------------------

@pytest.fixture
async def stack(rewards_settings, admin_token):
    settings = rewards_settings.model_copy(update={"reversal_sweep_seconds": 0.2})
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    async with serve_asgi(create_app(settings)) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 20)


def _attributed(program, referrer, conversion_id, amount=5000):
    now = utcnow()
    return new_event(ReferralAttributed(
        program_id=program["id"], conversion_id=conversion_id, referrer_id=referrer["id"],
        code=referrer["code"], channel="email", attribution_model=AttributionModel.LAST_CLICK,
        customer=Customer(id="friend-1", email="friend@example.org", is_new=True),
        amount=amount, currency="EUR", converted_at=now, decided_at=now),
        source="attribution", id=derived_id("attribution", program["id"], conversion_id))


async def test_worker_reverses_rewards_from_the_reversals_topic(stack, kafka_bootstrap, topics):
    program = (await stack.post("/v1/programs", json={
        "name": "Shop", "landing_url": "https://shop.example/", "currency": "EUR",
        "referrer_reward": {"kind": "cash", "amount": 1000}})).json()
    ann = (await stack.post(f"/v1/programs/{program['id']}/referrers", json={
        "external_id": "ann", "email": "ann@example.com"})).json()
    held, early = f"o-{uuid.uuid4().hex[:6]}", f"o-{uuid.uuid4().hex[:6]}"

    async def status_of(conversion_id):
        rewards = (await stack.get(f"/v1/programs/{program['id']}/rewards")).json()
        return next((r["status"] for r in rewards if r["conversion_id"] == conversion_id), None)

    await publish(kafka_bootstrap, topics.attributions.name,
                  (ann["code"], _attributed(program, ann, held)))
    assert await eventually(lambda: status_of(held)) == "pending"
    # A refund during the hold; and one whose conversion is decided only afterwards.
    await publish(kafka_bootstrap, topics.reversals.name,
                  (f"{program['id']}:{held}", reversal(program["id"], held)),
                  (f"{program['id']}:{early}", reversal(program["id"], early)))
    await eventually(lambda: _is(status_of(held), "reversed"), message="held not reversed")
    await publish(kafka_bootstrap, topics.attributions.name,
                  (ann["code"], _attributed(program, ann, early)))
    await eventually(lambda: _is(status_of(early), "reversed"), message="early not reversed")

    events = await collect(kafka_bootstrap, topics.rewards.name,
                           until=lambda ev: len(of_type(ev, RewardReversed)) >= 2)
    assert {e.conversion_id for e in of_type(events, RewardReversed)} == {held, early}
    balance = (await stack.get(f"/v1/referrers/{ann['id']}")).json()["balance"]
    assert balance == {}


async def _is(value, expected):
    return (await value) == expected


async def test_rejected_conversions_settle_their_reversals(pool, topics):
    """A reversal of a conversion attribution rejected is kept, and settled as 'no_reward'."""
    async with pool.acquire() as conn:
        program = await make_program(conn, topics)
    now = utcnow()
    rejected = new_event(ReferralRejected(
        program_id=program["id"], conversion_id="order-r", code="NOPE",
        reason=RejectionReason.UNKNOWN_CODE, detail="no such code", amount=100, currency="EUR",
        converted_at=now, decided_at=now), source="attribution")
    await ReversalHandler(pool, topics)(reversal(program["id"], "order-r"), None)
    await DecisionHandler(pool, topics)(rejected, None)
    await ReversalSweeper(pool, topics, interval=1).sweep()
    async with pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT outcome FROM conversion_reversals WHERE conversion_id = 'order-r'"
        ) == "no_reward"


def test_new_settings_are_listed_in_env_example():
    from pathlib import Path

    from rewards.config import RewardsSettings

    listed = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    defaults = RewardsSettings.model_fields
    assert f"REWARDS_REVERSAL_SWEEP_SECONDS={defaults['reversal_sweep_seconds'].default:g}" \
        in listed
    assert f"REWARDS_STATS_BATCH_SIZE={defaults['stats_batch_size'].default}" in listed
    assert f"REWARDS_DECISION_BATCH_SIZE={defaults['decision_batch_size'].default}" in listed
