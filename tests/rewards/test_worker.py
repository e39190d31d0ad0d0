"""The rewards worker against real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

import asyncpg
import httpx
import pytest
from referral_events import (
    AttributionModel,
    Customer,
    EventDeadLettered,
    ReferralAttributed,
    ReferralRejected,
    RejectionReason,
    RewardApproved,
    RewardPending,
    derived_id,
    new_event,
    utcnow,
)
from rewards.api.app import create_app
from rewards.worker.decisions import CONSUMER as DECISIONS_CONSUMER
from rewards.worker.run import run_worker

from tests.support import eventually, serve_asgi
from tests.support.kafka import collect, of_type, publish


@pytest.fixture
async def stack(rewards_settings, admin_token):
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(rewards_settings, stop))
    async with serve_asgi(create_app(rewards_settings)) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 20)
    if worker.done() and not worker.cancelled() and worker.exception():
        raise worker.exception()


async def _programme(admin, **overrides):
    body = {"name": "Shop", "landing_url": "https://shop.example/", "currency": "EUR",
            "referrer_reward": {"kind": "cash", "amount": 1000},
            "friend_reward": {"kind": "discount", "percent": 10, "max_amount": 2000},
            **overrides}
    program = (await admin.post("/v1/programs", json=body)).json()
    referrer = (await admin.post(f"/v1/programs/{program['id']}/referrers", json={
        "external_id": "cust-ann", "email": "ann@example.com", "name": "Ann",
        "locale": "nl"})).json()
    return program, referrer


def _attributed(program, referrer, *, amount=4999, conversion_id=None):
    conversion_id = conversion_id or f"order-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    data = ReferralAttributed(
        program_id=program["id"], conversion_id=conversion_id, referrer_id=referrer["id"],
        code=referrer["code"], channel="email", attribution_model=AttributionModel.LAST_CLICK,
        customer=Customer(id="friend-1", email="friend@example.org", is_new=True),
        amount=amount, currency="EUR", converted_at=now, decided_at=now)
    return new_event(data, source="attribution",
                     id=derived_id("attribution", program["id"], conversion_id))


async def _rewards(admin, program_id, status=None):
    params = {"status": status} if status else {}
    return (await admin.get(f"/v1/programs/{program_id}/rewards", params=params)).json()


async def test_attributed_referral_becomes_pending_rewards_once(stack, kafka_bootstrap, topics):
    program, referrer = await _programme(stack)
    event = _attributed(program, referrer)
    await publish(kafka_bootstrap, topics.attributions.name, (referrer["code"], event))
    rewards = await eventually(lambda: _two(stack, program["id"]), message="no rewards")
    by_side = {r["beneficiary"]: r for r in rewards}
    assert (by_side["referrer"]["amount"], by_side["referrer"]["kind"]) == (1000, "cash")
    assert (by_side["friend"]["amount"], by_side["friend"]["kind"]) == (499, "discount")
    assert all(r["status"] == "pending" for r in rewards)
    delay = (_ts(by_side["referrer"]["available_at"]) - event.data.decided_at)
    assert abs(delay - timedelta(days=14)) < timedelta(seconds=1)

    pending = of_type(await collect(kafka_bootstrap, topics.rewards.name,
                                    until=lambda ev: len(of_type(ev, RewardPending)) >= 2),
                      RewardPending)
    mine = {p.beneficiary.value: p for p in pending}
    assert mine["referrer"].recipient.email == "ann@example.com"
    assert mine["referrer"].recipient.locale == "nl"
    assert mine["friend"].recipient.email == "friend@example.org"

    # The same event again, and a different event about the same conversion: no new reward.
    replay = _attributed(program, referrer, conversion_id=event.data.conversion_id)
    other_id = new_event(replay.data, source="attribution")
    await publish(kafka_bootstrap, topics.attributions.name, (referrer["code"], event),
                  (referrer["code"], other_id))
    marker = _attributed(program, referrer)  # processed after the duplicates: a barrier
    await publish(kafka_bootstrap, topics.attributions.name, (referrer["code"], marker))
    await eventually(lambda: _count(stack, program["id"], 4), message="marker not processed")
    assert len([r for r in await _rewards(stack, program["id"])
                if r["conversion_id"] == event.data.conversion_id]) == 2


async def test_hold_period_ends_in_approval_and_ledger_credit(stack, kafka_bootstrap, topics,
                                                              database_url):
    program, referrer = await _programme(stack, hold_period="PT2S", friend_reward=None)
    await publish(kafka_bootstrap, topics.attributions.name,
                  (referrer["code"], _attributed(program, referrer)))
    [approved] = await eventually(lambda: _rewards(stack, program["id"], "approved"),
                                  timeout=30, message="reward never approved")
    assert approved["amount"] == 1000
    details = (await stack.get(f"/v1/referrers/{referrer['id']}")).json()
    assert details["balance"] == {"cash": 1000}
    assert details["counts"]["referrals"] == 1
    approvals = of_type(await collect(kafka_bootstrap, topics.rewards.name,
                                      until=lambda ev: bool(of_type(ev, RewardApproved))),
                        RewardApproved)
    assert approvals[0].reward_id == approved["id"]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET search_path TO rewards")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE ledger_entries SET amount = 1")
    finally:
        await conn.close()


async def test_manual_review_actions(stack, kafka_bootstrap, topics):
    program, referrer = await _programme(stack, friend_reward=None)
    await publish(kafka_bootstrap, topics.attributions.name,
                  (referrer["code"], _attributed(program, referrer)))
    [reward] = await eventually(lambda: _rewards(stack, program["id"], "pending"))
    rejected = await stack.post(f"/v1/rewards/{reward['id']}/reject", json={"reason": "test order"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    again = await stack.post(f"/v1/rewards/{reward['id']}/approve")
    assert again.status_code == 409 and again.json()["field"] == "status"
    missing = await stack.post(f"/v1/rewards/{reward['id']}/reject", json={})
    assert missing.status_code == 422 and missing.json()["field"] == "reason"


async def test_rejections_are_recorded_and_poison_is_dead_lettered(stack, kafka_bootstrap,
                                                                    topics, database_url):
    program, _ = await _programme(stack)
    now = utcnow()
    rejected = new_event(ReferralRejected(
        program_id=program["id"], conversion_id="order-x", code="NOPE",
        reason=RejectionReason.UNKNOWN_CODE, detail="no such code", amount=100, currency="EUR",
        converted_at=now, decided_at=now), source="attribution")
    await publish(kafka_bootstrap, topics.attributions.name, ("NOPE", b"{not json"),
                  ("NOPE", rejected))
    dead = await collect(kafka_bootstrap, topics.attributions.dead_letter,
                         until=lambda ev: bool(ev))
    record = dead[0].data
    assert isinstance(record, EventDeadLettered)
    assert (record.error_code, record.original_value) == ("malformed", "{not json")

    async def recorded():
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(
                "SELECT reason FROM rewards.referral_decisions WHERE conversion_id = 'order-x'")
        finally:
            await conn.close()

    assert await eventually(recorded) == "unknown_code"


async def _two(admin, program_id):
    rewards = await _rewards(admin, program_id)
    return rewards if len(rewards) == 2 else None


async def _count(admin, program_id, n):
    return len(await _rewards(admin, program_id)) == n


def _ts(text):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_consumers_off_the_reward_path_fetch_less_often(rewards_settings, monkeypatch):
    """Decisions are read with KAFKA_FETCH_MAX_WAIT_MS; reversals and hourly stats, which
    no email waits for, with KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS (every fetch costs the
    embedded broker CPU)."""
    import aiokafka

    waits: dict[str, int] = {}
    real_init = aiokafka.AIOKafkaConsumer.__init__

    def spy(self, *topics, **options):
        waits[options["client_id"]] = options["fetch_max_wait_ms"]
        real_init(self, *topics, **options)

    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "__init__", spy)
    settings = rewards_settings.model_copy(update={"kafka_fetch_max_wait_ms": 41,
                                                   "kafka_background_fetch_max_wait_ms": 733})
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    try:
        await eventually(lambda: len(waits) == 3, message=f"consumers started: {waits}")
    finally:
        stop.set()
        await asyncio.wait_for(worker, 20)
    assert sorted(waits.values()) == [41, 733, 733]
    assert waits[DECISIONS_CONSUMER] == 41
