"""Decisions a poll at a time: one transaction per batch, a savepoint per event when one is
refused, referrer and budget locks in one order for concurrent workers; and the consumer
around it (dead letters, offsets, group membership through a long outage, stopping, dying).
Real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from referral_events import EventDeadLettered, TopicRegistry, decode
from referral_kit.consuming import RETRIES, EventConsumer, PoisonEvent
from referral_kit.kafka import make_producer
from rewards.worker.decisions import BATCH_RETRIES, BATCHES, CONSUMER, DecisionHandler

from tests.rewards.test_decisions import (
    NOON,
    _assert_totals_match,
    _event,
    _programme,
    _referrer,
    _rewards,
)
from tests.support import eventually
from tests.support.kafka import collect, publish

REGISTRY = TopicRegistry("t-decisions.")


@pytest.fixture
async def pool(database_url: str):
    from referral_kit.migrations import migrate
    from rewards.db import SCHEMA, create_pool

    await migrate(database_url, schema=SCHEMA, package="rewards")
    pool = await create_pool(database_url, min_size=2, max_size=12)
    yield pool
    await pool.close()


def _count(counter: Any, **labels: str) -> float:
    return (counter.labels(**labels) if labels else counter)._value.get()


async def _processed(pool, ids: list[str]) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = ANY($1)", ids)


async def _all_processed(pool, ids: list[str]) -> bool:
    return await _processed(pool, ids) == len(ids)


# -- the handler ----------------------------------------------------------------------------

async def test_a_refused_event_is_rolled_back_alone_and_the_batch_commits(pool) -> None:
    """Unknown referrer (found up front) and a programme whose stored rules cannot be applied
    (found while deciding: the batch is redone with a savepoint per event) are poison; the
    other events of the batch commit together, once, and a replay of the batch is a no-op."""
    good = await _programme(pool, friend_reward={"kind": "discount", "amount": 500})
    broken = await _programme(pool)
    ann, bo = await _referrer(pool, good, "ann"), await _referrer(pool, good, "bo")
    cy = await _referrer(pool, broken, "cy")
    async with pool.acquire() as conn:  # a stored hold the rules cannot parse
        await conn.execute("UPDATE programs SET hold_period = 'soon' WHERE id = $1",
                           broken["id"])
    stranger = {"id": "ref_nobody", "code": "NOBODY22"}
    first = _event(good, ann)
    batch = [first, _event(good, stranger), _event(good, bo), _event(broken, cy),
             _event(good, ann), first]  # the same event twice in one poll
    handler = DecisionHandler(pool, REGISTRY)
    redone = _count(BATCHES, mode="savepoints")

    outcomes = await handler.handle_batch([(e, None) for e in batch])

    assert [type(o).__name__ for o in outcomes] == [
        "NoneType", "PoisonEvent", "NoneType", "PoisonEvent", "NoneType", "NoneType"]
    assert outcomes[1].field == "data.referrer_id"
    assert "soon" in outcomes[3].reason
    assert _count(BATCHES, mode="savepoints") == redone + 1
    rewards = await _rewards(pool, good)
    assert len(rewards) == 6  # three referrals, two sides each
    assert not await _rewards(pool, broken)
    # Poison leaves no trace: after a fix, a replay of the dead letter takes effect.
    assert await _processed(pool, [e.id for e in batch]) == 3
    async with pool.acquire() as conn:
        outbox = await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1",
                                     REGISTRY.rewards.name)
    assert outbox == 6

    again = await handler.handle_batch([(e, None) for e in batch])
    assert [o is None for o in again] == [o is None for o in outcomes]
    assert len(await _rewards(pool, good)) == 6
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1",
                                   REGISTRY.rewards.name) == 6
        await conn.execute("UPDATE programs SET hold_period = 'P14D' WHERE id = $1",
                           broken["id"])
    [fixed] = await handler.handle_batch([(batch[3], None)])
    assert fixed is None and len(await _rewards(pool, broken)) == 1


async def test_concurrent_batches_over_shared_referrers_never_deadlock(pool) -> None:
    """Batches in different orders over the same referrers of three programmes (a budget
    each) run at once: no deadlock to retry, caps and budgets exact, one reward each."""
    caps = {"per_referrer_lifetime": 6000, "program_budget": 40_000}
    programmes = [await _programme(pool, caps=caps,
                                   friend_reward={"kind": "credit", "amount": 300})
                  for _ in range(3)]
    referrers = [await _referrer(pool, p, f"r{i}{n}") for i, p in enumerate(programmes)
                 for n in range(3)]
    by_programme = {p["id"]: p for p in programmes}
    events = [_event(by_programme[r["program_id"]], r, at=NOON) for r in referrers
              for _ in range(12)]
    rng = random.Random(5)
    batches = []
    for _ in range(4):
        mine = rng.sample(events, 60)
        batches.append(mine)
    retried = _count(BATCH_RETRIES)
    handler = DecisionHandler(pool, REGISTRY)
    await asyncio.gather(*(handler.handle_batch([(e, None) for e in b]) for b in batches))
    await asyncio.gather(*(handler.handle_batch([(e, None) for e in events[n::3]])
                           for n in range(3)))  # everything, again and concurrently
    assert _count(BATCH_RETRIES) == retried
    assert await _processed(pool, [e.id for e in events]) == len(events)
    for programme in programmes:
        rewards = await _rewards(pool, programme)
        keys = [(r["conversion_id"], r["beneficiary"], r["purpose"]) for r in rewards]
        assert len(keys) == len(set(keys)) == 2 * 36
        granted = [r for r in rewards if r["status"] == "pending"]
        for referrer in referrers:
            mine = sum(r["amount"] for r in granted if r["referrer_id"] == referrer["id"]
                       and r["beneficiary"] == "referrer")
            if referrer["program_id"] == programme["id"]:
                assert mine == 6000  # twelve referrals of 1000, six fit
        assert sum(r["amount"] for r in granted) <= caps["program_budget"]
    await _assert_totals_match(pool)


# -- the consumer ---------------------------------------------------------------------------

@pytest.fixture
async def producer(rewards_settings):
    producer = make_producer(rewards_settings, client_id="batch-tests")
    await producer.start()
    yield producer
    await producer.stop()


def _consumer(settings, topics, producer, handler, **options: Any) -> EventConsumer:
    return EventConsumer(settings=settings, topics=[topics.attributions],
                         group_id=f"{topics.prefix}rewards-worker", name=CONSUMER,
                         batch_handler=handler.handle_batch, producer=producer,
                         **{"max_poll_records": 50, **options})


async def _committed_to_the_end(bootstrap: str, topics, group: str) -> bool:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                              enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topics.attributions.name, p)
               for p in range(topics.attributions.partitions)]
        ends = await reader.end_offsets(tps)
        committed = [await reader.committed(tp) or 0 for tp in tps]
        return committed == [ends[tp] for tp in tps]
    finally:
        await reader.stop()


async def _committed(bootstrap: str, topics, group: str) -> int:
    """Offsets committed over all partitions of the attributions topic."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                              enable_auto_commit=False)
    await reader.start()
    try:
        return sum([await reader.committed(TopicPartition(topics.attributions.name, p)) or 0
                    for p in range(topics.attributions.partitions)])
    finally:
        await reader.stop()


async def test_consumer_dead_letters_the_poison_of_a_batch_and_moves_on(
        pool, rewards_settings, topics, kafka_bootstrap, producer) -> None:
    program = await _programme(pool)
    ann = await _referrer(pool, program, "ann")
    good = [_event(program, ann) for _ in range(7)]
    poison = _event(program, {"id": "ref_nobody", "code": "NOBODY22"})
    handler = DecisionHandler(pool, topics)
    consumer = _consumer(rewards_settings, topics, producer, handler)
    await consumer.start()
    try:
        await publish(kafka_bootstrap, topics.attributions.name,
                      *[(ann["code"], e) for e in good[:3]], ("NOPE", b"{not json"),
                      ("NOBODY22", poison), *[(ann["code"], e) for e in good[3:]])
        await eventually(lambda: _all_processed(pool, [e.id for e in good]),
                         timeout=60, message="good events not decided")
        dead = await collect(kafka_bootstrap, topics.attributions.dead_letter,
                             until=lambda ev: len(ev) >= 2)
        letters = [d.data for d in dead]
        assert all(isinstance(d, EventDeadLettered) for d in letters)
        assert sorted(d.error_code for d in letters) == ["malformed", "rejected_by_handler"]
        refused = next(d for d in letters if d.error_code == "rejected_by_handler")
        assert decode(refused.original_value.encode()).id == poison.id
        assert len(await _rewards(pool, program)) == len(good)
        await eventually(lambda: _committed_to_the_end(
            kafka_bootstrap, topics, f"{topics.prefix}rewards-worker"),
            message="offsets not committed")
    finally:
        await consumer.stop()


async def test_two_workers_share_referrers_without_deadlock_and_keep_caps_exact(
        database_url, rewards_settings, topics, kafka_bootstrap, producer, pool) -> None:
    """Two consumers in one group (each its own handler and pool, as two replicas), events
    keyed so that each referrer's referrals land on every partition: both decide the same
    referrers at once."""
    capped = await _programme(pool, caps={"per_referrer_lifetime": 10_000,
                                          "program_budget": 55_000},
                              friend_reward={"kind": "discount", "amount": 500})
    daily = await _programme(pool, caps={"per_referrer_day": 3000, "mode": "reject"})
    referrers = ([await _referrer(pool, capped, f"a{n}") for n in range(3)]
                 + [await _referrer(pool, daily, f"b{n}") for n in range(3)])
    home = {capped["id"]: capped, daily["id"]: daily}
    events = [_event(home[r["program_id"]], r, at=NOON) for r in referrers for _ in range(20)]
    random.Random(3).shuffle(events)

    from rewards.db import create_pool

    other_pool = await create_pool(database_url, min_size=1, max_size=4)
    handlers = [DecisionHandler(pool, topics), DecisionHandler(other_pool, topics)]
    handled = [0, 0]

    def counting(n: int):
        async def handle(items):
            handled[n] += 1
            await asyncio.sleep(0.05)  # long enough for the two to overlap
            return await handlers[n].handle_batch(items)
        return handle

    consumers = [EventConsumer(settings=rewards_settings, topics=[topics.attributions],
                               group_id=f"{topics.prefix}rewards-worker", name=CONSUMER,
                               batch_handler=counting(n), producer=producer,
                               max_poll_records=15) for n in range(2)]
    retried = _count(BATCH_RETRIES)
    try:
        for consumer in consumers:
            await consumer.start()
        await eventually(lambda: all(c._consumer.assignment() for c in consumers)
                         and sum(len(c._consumer.assignment()) for c in consumers) == 4,
                         timeout=60, message="the group never split the partitions")
        await publish(kafka_bootstrap, topics.attributions.name,
                      *[(str(uuid.uuid4()), e) for e in events])
        await eventually(lambda: _all_processed(pool, [e.id for e in events]),
                         timeout=90, message="not every event decided")
    finally:
        for consumer in consumers:
            await consumer.stop()
        await other_pool.close()
    assert all(handled), handled
    assert _count(BATCH_RETRIES) == retried  # no deadlock to recover from
    capped_rewards = await _rewards(pool, capped)
    keys = [(r["conversion_id"], r["beneficiary"], r["purpose"]) for r in capped_rewards]
    assert len(keys) == len(set(keys)) == 2 * 60
    granted = [r for r in capped_rewards if r["status"] == "pending"]
    assert sum(r["amount"] for r in granted) == 55_000  # up to 60,000 would fit the caps
    for referrer in referrers[:3]:
        assert sum(r["amount"] for r in granted if r["referrer_id"] == referrer["id"]
                   and r["beneficiary"] == "referrer") <= 10_000
    daily_rewards = await _rewards(pool, daily)
    assert len(daily_rewards) == 60
    for referrer in referrers[3:]:
        assert sum(1 for r in daily_rewards if r["referrer_id"] == referrer["id"]
                   and r["status"] == "pending") == 3  # 3 x 1000 fit the day cap
    await _assert_totals_match(pool)


async def test_consumer_stays_in_the_group_through_a_long_database_outage(
        pool, pg_dsn, database_url, rewards_settings, topics, kafka_bootstrap,
        producer) -> None:
    """PostgreSQL refuses connections for three times max_poll_interval: the batch is
    retried all along, the member is never evicted (no second assignment), and the event is
    decided once the database is back."""
    program = await _programme(pool)
    ann = await _referrer(pool, program, "ann")
    handler = DecisionHandler(pool, topics)
    consumer = _consumer(rewards_settings, topics, producer, handler,
                         max_poll_interval_ms=2000, max_backoff_s=0.5, unhealthy_after_s=2)
    database = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_dsn)
    await consumer.start()
    try:
        await eventually(lambda: consumer.assigned.is_set(), timeout=60,
                         message="never assigned")
        joined = consumer.rebalances
        member = _member(consumer)
        assert member
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = $1 AND pid <> pg_backend_pid()", database)
        failures = _count(RETRIES, consumer=CONSUMER)
        event = _event(program, ann)
        await publish(kafka_bootstrap, topics.attributions.name, (ann["code"], event))
        await eventually(lambda: _count(RETRIES, consumer=CONSUMER) > failures + 3,
                         timeout=30, message="the handler was never retried")
        await eventually(lambda: not consumer.healthy, timeout=10,
                         message="a consumer stuck retrying still looks healthy")
        # Outlast max_poll_interval three times over (the point of the test: a fixed time).
        await asyncio.sleep(6)
        assert consumer.running
        assert _member(consumer) == member  # an evicted member forgets its id
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
    try:
        await eventually(lambda: _all_processed(pool, [event.id]), timeout=30,
                         message="not decided after the outage")
        assert len(await _rewards(pool, program)) == 1
        assert consumer.rebalances == joined  # the same membership throughout
        assert _member(consumer) == member
        assert consumer.healthy
        await eventually(lambda: _committed_to_the_end(
            kafka_bootstrap, topics, f"{topics.prefix}rewards-worker"),
            message="offsets not committed after the outage")
    finally:
        await consumer.stop()


def _member(consumer: EventConsumer) -> str:
    """The group member id the broker gave this consumer (aiokafka keeps it privately)."""
    return consumer._consumer._coordinator.member_id


class LoopKiller(BaseException):
    """Escapes every retry (as nothing should), ending the consumer's loop."""


async def test_stop_lets_the_batch_in_flight_finish_and_a_dying_loop_shows(
        rewards_settings, topics, kafka_bootstrap, producer) -> None:
    entered, done = asyncio.Event(), []

    async def slow(items):
        entered.set()
        await asyncio.sleep(1.5)
        done.extend(envelope.id for envelope, _ in items)

    group = f"{topics.prefix}rewards-worker"
    consumer = EventConsumer(settings=rewards_settings, topics=[topics.attributions],
                             group_id=group, name=CONSUMER, batch_handler=slow,
                             producer=producer)
    await consumer.start()
    events = [_event({"id": "prg_x"}, {"id": "ref_x", "code": "CODE2222"}) for _ in range(3)]
    await publish(kafka_bootstrap, topics.attributions.name,
                  *[("CODE2222", e) for e in events])
    await asyncio.wait_for(entered.wait(), 60)
    await consumer.stop()  # while the batch is being handled
    # The batch in flight finished and was committed; nothing after it was taken.
    assert done and done == [e.id for e in events[:len(done)]]
    assert await _committed(kafka_bootstrap, topics, group) == len(done)
    assert consumer.error is None

    async def fatal(items):
        raise LoopKiller

    dying = EventConsumer(settings=rewards_settings, topics=[topics.attributions],
                          group_id=f"{group}-2", name=CONSUMER, batch_handler=fatal,
                          producer=producer)
    await dying.start()
    try:
        await eventually(lambda: not dying.running, timeout=60, message="loop still running")
        assert isinstance(dying.error, LoopKiller)
        assert not dying.healthy
    finally:
        await dying.stop()


async def test_a_batch_handler_refusing_the_whole_batch_is_asked_event_by_event(
        rewards_settings, topics, kafka_bootstrap, producer) -> None:
    """A batch handler that cannot tell which event is bad raises PoisonEvent: the events
    are then handed over one at a time, and only the bad one is dead-lettered."""
    accepted: list[str] = []
    bad = _event({"id": "prg_x"}, {"id": "ref_x", "code": "CODE2222"})
    ok = [_event({"id": "prg_x"}, {"id": "ref_x", "code": "CODE2222"}) for _ in range(2)]

    async def picky(items):
        if any(envelope.id == bad.id for envelope, _ in items):
            raise PoisonEvent("one of these is bad")
        accepted.extend(envelope.id for envelope, _ in items)

    consumer = EventConsumer(settings=rewards_settings, topics=[topics.attributions],
                             group_id=f"{topics.prefix}picky", name="picky",
                             batch_handler=picky, producer=producer)
    await consumer.start()
    try:
        await publish(kafka_bootstrap, topics.attributions.name,
                      *[("CODE2222", e) for e in (ok[0], bad, ok[1])])
        dead = await collect(kafka_bootstrap, topics.attributions.dead_letter,
                             until=lambda ev: bool(ev))
        assert [decode(d.data.original_value.encode()).id for d in dead] == [bad.id]
        await eventually(lambda: sorted(accepted) == sorted(e.id for e in ok), timeout=30,
                         message=f"accepted {accepted}")
    finally:
        await consumer.stop()


# -- migration 0006: the insert triggers per statement ------------------------------------

ROLL_UPS = {
    "program_budgets": "SELECT spent FROM program_budgets WHERE program_id = $1",
    "referrer_totals": "SELECT r.external_id, t.period, t.amount, t.successful"
                       " FROM referrer_totals t JOIN referrers r ON r.id = t.referrer_id"
                       " WHERE r.program_id = $1",
    "reward_daily": "SELECT day, beneficiary, kind, status, sum(rewards), sum(amount)"
                    " FROM reward_daily WHERE program_id = $1 GROUP BY 1, 2, 3, 4",
    "referrer_reward_daily": "SELECT r.external_id, d.day, d.cost, d.points"
                             " FROM referrer_reward_daily d JOIN referrers r"
                             " ON r.id = d.referrer_id WHERE d.program_id = $1",
    "conversion_reward_counts": "SELECT conversion_id, standing FROM conversion_reward_counts"
                                " WHERE program_id = $1",
    "rewarded_daily": "SELECT day, sum(conversions) FROM rewarded_daily WHERE program_id = $1"
                      " GROUP BY 1",
}


async def test_rewards_inserted_together_count_as_rewards_inserted_one_by_one(pool) -> None:
    """The same rewards written one statement each (as reviewers' and tests' single inserts
    are) and in one statement (as the decision worker writes a batch) leave the same totals
    and roll-ups: granted amounts, successful referrals (cap_reached counts, other
    rejections do not), points apart from money, conversions rewarded once."""
    day = NOON.replace(hour=23, minute=30)

    def rows(program: Any, ann: Any, bo: Any) -> list[tuple[Any, ...]]:
        spec = [  # referrer, beneficiary, conversion, kind, amount, status, reason, purpose, at
            (ann, "referrer", "o1", "cash", 1000, "pending", None, "referral", NOON),
            (ann, "friend", "o1", "discount", 500, "pending", None, "referral", NOON),
            (ann, "referrer", "o2", "cash", 0, "rejected", "cap_reached: full", "referral", NOON),
            (ann, "friend", "o2", "discount", 500, "in_review", None, "referral", NOON),
            (ann, "referrer", "o3", "cash", 700, "rejected", "fraud:email_alias", "referral",
             day),
            (ann, "referrer", "o3b", "cash", 5000, "pending", None, "milestone", day),
            (bo, "referrer", "o4", "points", 40, "approved", None, "referral",
             day + timedelta(hours=1)),
            (bo, "friend", "o4", "points", 10, "rejected", "min_order_amount: low", "referral",
             day + timedelta(hours=1)),
        ]
        return [(f"rwd_{uuid.uuid4().hex[:16]}", program["id"], who["id"], side, conversion,
                 kind, amount, "EUR", status, at, "someone@example.org", amount * 5, reason,
                 f"evt-{conversion}", at, purpose, 3 if purpose == "milestone" else None)
                for who, side, conversion, kind, amount, status, reason, purpose, at in spec]

    insert = ("INSERT INTO rewards (id, program_id, referrer_id, beneficiary, conversion_id,"
              " kind, amount, currency, status, available_at, recipient_email, order_amount,"
              " reason, source_event_id, created_at, updated_at, purpose, milestone)"
              " SELECT id, p, r, b, c, k, a, cur, s, at, e, o, why, ev, at, at, pur, m"
              " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
              " $6::text[], $7::bigint[], $8::text[], $9::text[], $10::timestamptz[],"
              " $11::text[], $12::bigint[], $13::text[], $14::text[], $15::timestamptz[],"
              " $16::text[], $17::int[])"
              " AS u (id, p, r, b, c, k, a, cur, s, at, e, o, why, ev, at2, pur, m)")
    figures = []
    for together in (False, True):
        program = await _programme(pool)
        ann, bo = await _referrer(pool, program, "ann"), await _referrer(pool, program, "bo")
        batch = rows(program, ann, bo)
        async with pool.acquire() as conn, conn.transaction():
            for chunk in ([batch] if together else [[row] for row in batch]):
                await conn.execute(insert, *([row[i] for row in chunk] for i in range(17)))
        async with pool.acquire() as conn:
            figures.append({name: sorted(tuple(r) for r in await conn.fetch(sql, program["id"]))
                            for name, sql in ROLL_UPS.items()})
    one_by_one, together = figures
    assert one_by_one == together
    assert together["program_budgets"] == [(7040,)]  # 1000 + 500 + 500 + 5000 + 40
    assert ("cust-ann", "all", 6000, 2) in together["referrer_totals"]  # o1 and the capped o2
    assert sum(n for _, n in together["rewarded_daily"]) == 4  # o1, o2, o3b, o4
    await _assert_totals_match(pool)
