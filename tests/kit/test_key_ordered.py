"""KeyOrderedConsumer against the real broker: each key in order, other keys past a slow one,
commits never past an unfinished event, retries in place, dead letters, drains on rebalance
and stop, and a limit on what it holds."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from referral_events import EventDeadLettered, decode, encode
from referral_kit.consuming import RETRIES, PoisonEvent
from referral_kit.kafka import make_producer
from referral_kit.key_ordered import KeyOrderedConsumer
from referral_kit.settings import PlatformSettings

from tests.conftest import unique_name
from tests.notifier.support import address, reward
from tests.support import eventually
from tests.support.kafka import collect

Published = dict[str, tuple[str, TopicPartition, int]]  # event id -> (key, partition, offset)


@pytest.fixture
def settings(kafka_component, topic_prefix) -> PlatformSettings:
    bootstrap, idempotent = kafka_component
    return PlatformSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, TOPIC_PREFIX=topic_prefix,
                            KAFKA_ENABLE_IDEMPOTENCE=idempotent)


@pytest.fixture
async def producer(settings):
    producer = make_producer(settings, client_id="key-ordered-tests")
    await producer.start()
    yield producer
    await producer.stop()


class Recorder:
    """A handler that records (key, event id) as it finishes each event; ``hold(key)`` makes
    that key's next event wait until ``release(key)``."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.started: list[str] = []
        self._holds: dict[str, asyncio.Event] = {}
        self.failures: dict[str, int] = defaultdict(int)  # event id -> transient failures due

    def hold(self, key: str) -> None:
        self._holds[key] = asyncio.Event()

    def release(self, key: str) -> None:
        self._holds.pop(key).set()

    def keys_done(self, key: str) -> list[str]:
        return [event for k, event in self.done if k == key]

    async def __call__(self, envelope, record) -> None:
        key = record.key.decode()
        self.started.append(envelope.id)
        if self.failures[envelope.id]:
            self.failures[envelope.id] -= 1
            raise RuntimeError("database away for a moment")
        if key in self._holds:
            await self._holds[key].wait()
        self.done.append((key, envelope.id))


def _consumer(settings, topics, producer, handler, **options: Any) -> KeyOrderedConsumer:
    return KeyOrderedConsumer(settings=settings, topics=[topics.rewards],
                              group_id=options.pop("group_id", f"{topics.prefix}notifier"),
                              name="key-ordered-test", handler=handler, producer=producer,
                              **{"max_backoff_s": 0.2, **options})


async def _publish(bootstrap: str, topic: str, keyed: list[tuple[str, Any]]) -> Published:
    sender = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await sender.start()
    try:
        published = {}
        for key, message in keyed:
            value = message if isinstance(message, bytes) else encode(message)
            meta = await sender.send_and_wait(topic, value, key=key.encode())
            event_id = unique_name("raw") if isinstance(message, bytes) else message.id
            published[event_id] = (key, TopicPartition(topic, meta.partition), meta.offset)
        return published
    finally:
        await sender.stop()


def _events(keys: list[str], per_key: int) -> list[tuple[str, Any]]:
    """``per_key`` events for each key, interleaved (k0, k1, ..., k0, k1, ...)."""
    return [(key, reward(email=address())) for _ in range(per_key) for key in keys]


async def _committed(bootstrap: str, group: str, tps: set[TopicPartition]
                     ) -> dict[TopicPartition, int]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                              enable_auto_commit=False)
    await reader.start()
    try:
        return {tp: await reader.committed(tp) or 0 for tp in tps}
    finally:
        await reader.stop()


async def _committed_to_the_end(bootstrap: str, group: str, published: Published) -> bool:
    ends: dict[TopicPartition, int] = {}
    for _, tp, offset in published.values():
        ends[tp] = max(ends.get(tp, 0), offset + 1)
    committed = await _committed(bootstrap, group, set(ends))
    return all(committed[tp] >= end for tp, end in ends.items())


async def test_other_keys_pass_a_slow_one_and_each_key_keeps_its_order(
        settings, topics, producer, kafka_bootstrap) -> None:
    keys = [f"ref_{n}" for n in range(6)]
    handler = Recorder()
    handler.hold("ref_0")
    consumer = _consumer(settings, topics, producer, handler, concurrency=4)
    await consumer.start()
    try:
        published = await _publish(kafka_bootstrap, topics.rewards.name, _events(keys, 5))
        in_order = {key: [e for e, (k, _, _) in published.items() if k == key] for key in keys}
        # ref_0's first event is held: every other referrer's events are all done regardless.
        await eventually(lambda: all(handler.keys_done(k) == in_order[k] for k in keys[1:]),
                         timeout=60, message=f"done {handler.done}")
        assert handler.keys_done("ref_0") == []
        assert handler.started.count(in_order["ref_0"][0]) == 1
        assert not set(in_order["ref_0"][1:]) & set(handler.started)  # waiting their turn
        # Its partition is committed no further than the held event.
        _, held_tp, held_offset = published[in_order["ref_0"][0]]
        committed = await _committed(kafka_bootstrap, f"{topics.prefix}notifier", {held_tp})
        assert committed[held_tp] <= held_offset

        handler.release("ref_0")
        await eventually(lambda: handler.keys_done("ref_0") == in_order["ref_0"],
                         message=f"ref_0 done {handler.keys_done('ref_0')}")
        assert len(handler.done) == len(published)
        await eventually(lambda: _committed_to_the_end(
            kafka_bootstrap, f"{topics.prefix}notifier", published),
            message="offsets not committed to the end")
        assert consumer.held == 0
    finally:
        await consumer.stop()


async def test_a_failing_event_is_retried_in_place_and_holds_back_only_its_key(
        settings, topics, producer, kafka_bootstrap) -> None:
    handler = Recorder()
    events = _events(["ref_a", "ref_b"], 3)
    first_of_a = events[0][1].id
    handler.failures[first_of_a] = 3
    retried = _count(RETRIES, consumer="key-ordered-test")
    consumer = _consumer(settings, topics, producer, handler, concurrency=2)
    await consumer.start()
    try:
        await _publish(kafka_bootstrap, topics.rewards.name, events)
        await eventually(lambda: len(handler.done) == len(events), timeout=60,
                         message=f"done {handler.done}")
    finally:
        await consumer.stop()
    assert handler.keys_done("ref_a") == [e.id for k, e in events if k == "ref_a"]
    assert handler.keys_done("ref_b") == [e.id for k, e in events if k == "ref_b"]
    assert handler.started.count(first_of_a) == 4  # three failures, then done
    assert _count(RETRIES, consumer="key-ordered-test") == retried + 3
    assert len({e for _, e in handler.done}) == len(handler.done)


async def test_poison_and_undecodable_records_are_dead_lettered_and_the_rest_go_on(
        settings, topics, producer, kafka_bootstrap) -> None:
    refused = reward(email=address())
    handler = Recorder()

    async def picky(envelope, record) -> None:
        if envelope.id == refused.id:
            raise PoisonEvent("no such referrer", field="data.referrer_id")
        await handler(envelope, record)

    good = _events(["ref_a"], 3)
    consumer = _consumer(settings, topics, producer, picky)
    await consumer.start()
    try:
        published = await _publish(kafka_bootstrap, topics.rewards.name,
                                   [good[0], ("ref_a", b"{not json"), ("ref_a", refused),
                                    *good[1:]])
        dead = await collect(kafka_bootstrap, topics.rewards.dead_letter,
                             until=lambda found: len(found) >= 2)
        letters = [d.data for d in dead]
        assert all(isinstance(letter, EventDeadLettered) for letter in letters)
        assert sorted(letter.error_code for letter in letters) == ["malformed",
                                                                  "rejected_by_handler"]
        await eventually(lambda: handler.keys_done("ref_a") == [e.id for _, e in good],
                         timeout=30, message=f"done {handler.done}")
        await eventually(lambda: _committed_to_the_end(
            kafka_bootstrap, f"{topics.prefix}notifier", published),
            message="offsets not committed past the dead letters")
    finally:
        await consumer.stop()
    refusal = next(d for d in letters if d.error_code == "rejected_by_handler")
    assert decode(refusal.original_value.encode()).id == refused.id


async def test_stop_finishes_what_runs_starts_nothing_more_and_a_new_member_resumes_there(
        settings, topics, producer, kafka_bootstrap) -> None:
    """Stopped while ref_0's first event runs and ref_1's is stuck: the first finishes and
    is committed, nothing else of ref_0 starts, and ref_1's stays uncommitted; the next
    member of the group begins exactly at what was not done."""
    group = f"{topics.prefix}notifier"
    events = _events(["ref_0", "ref_1"], 3)
    first = Recorder()
    first.hold("ref_0")
    first.hold("ref_1")
    # Tansu numbers generations from 0 and aiokafka sends LeaveGroup only after generation 0,
    # so the successor waits for this member's session to expire: keep it short.
    consumer = _consumer(settings, topics, producer, first, concurrency=2, stop_timeout_s=3,
                         session_timeout_ms=3000)
    await consumer.start()
    published = await _publish(kafka_bootstrap, topics.rewards.name, events)
    ids = {key: [e.id for k, e in events if k == key] for key in ("ref_0", "ref_1")}
    await eventually(lambda: len(first.started) == 2, timeout=60,
                     message=f"started {first.started}")
    stopping = asyncio.create_task(consumer.stop())
    await eventually(lambda: consumer._stopping.is_set())
    first.release("ref_0")  # finishes within stop's wait; ref_1's never does
    await stopping
    assert first.keys_done("ref_0") == ids["ref_0"][:1]
    assert first.keys_done("ref_1") == []
    assert sorted(first.started) == sorted([ids["ref_0"][0], ids["ref_1"][0]])
    assert consumer.error is None and not consumer.running

    second = Recorder()
    successor = _consumer(settings, topics, producer, second)
    await successor.start()
    try:
        await eventually(lambda: second.keys_done("ref_0") == ids["ref_0"][1:]
                         and second.keys_done("ref_1") == ids["ref_1"], timeout=60,
                         message=f"second member did {second.done}")
        await eventually(lambda: _committed_to_the_end(kafka_bootstrap, group, published),
                         message="offsets not committed")
    finally:
        await successor.stop()
    # ref_0's first event precedes ref_1's wherever they are (published interleaved), so
    # it was committed: the successor does not see it again.
    assert ids["ref_0"][0] not in second.started


async def test_a_rebalance_hands_over_without_losing_or_reordering(
        settings, topics, producer, kafka_bootstrap) -> None:
    keys = [f"ref_{n}" for n in range(8)]
    done: list[tuple[str, str]] = []

    async def slow(envelope, record) -> None:
        await asyncio.sleep(0.03)  # keep events in flight when the group rebalances
        done.append((record.key.decode(), envelope.id))

    consumers = [_consumer(settings, topics, producer, slow, concurrency=4) for _ in range(2)]
    await consumers[0].start()
    try:
        await eventually(lambda: consumers[0].assigned.is_set(), timeout=60)
        events = _events(keys, 50)
        first_half = await _publish(kafka_bootstrap, topics.rewards.name, events[:200])
        await consumers[1].start()  # joins while the first member is busy
        rest = await _publish(kafka_bootstrap, topics.rewards.name, events[200:])
        await eventually(lambda: {e for _, e in done} == {e.id for _, e in events},
                         timeout=90, message=f"{len(done)} of {len(events)} done")
        await eventually(lambda: all(c._consumer.assignment() for c in consumers), timeout=60,
                         message="the second member never got partitions")
        await eventually(lambda: _committed_to_the_end(
            kafka_bootstrap, f"{topics.prefix}notifier", {**first_half, **rest}),
            message="offsets not committed")
    finally:
        for consumer in consumers:
            await consumer.stop()
    for key in keys:  # first handlings in publish order (a replay may repeat, never skip)
        firsts = list(dict.fromkeys(e for k, e in done if k == key))
        assert firsts == [e.id for k, e in events if k == key], key


async def test_at_its_limit_it_pauses_its_partitions_and_stays_in_the_group(
        settings, topics, producer, kafka_bootstrap) -> None:
    handler = Recorder()
    handler.hold("ref_0")
    consumer = _consumer(settings, topics, producer, handler, concurrency=2, max_held=4,
                         max_poll_records=2, max_poll_interval_ms=1000)
    await consumer.start()
    try:
        await eventually(lambda: consumer.assigned.is_set(), timeout=60)
        joined, member = consumer.rebalances, consumer._consumer._coordinator.member_id
        events = _events(["ref_0"], 20)
        await _publish(kafka_bootstrap, topics.rewards.name, events)
        await eventually(lambda: consumer.held >= 4, timeout=30)
        await eventually(lambda: consumer._consumer.paused(), message="never paused")
        # Outlast max_poll_interval three times over (the point of the test: a fixed time).
        await asyncio.sleep(3)
        assert consumer.held <= 4 + 2 - 1  # the last poll may top it up past the limit
        assert consumer.rebalances == joined
        assert consumer._consumer._coordinator.member_id == member
        handler.release("ref_0")
        await eventually(lambda: handler.keys_done("ref_0") == [e.id for _, e in events],
                         timeout=30, message=f"done {len(handler.done)}")
        await eventually(lambda: not consumer._consumer.paused(), message="still paused")
    finally:
        await consumer.stop()


async def test_it_reads_ahead_no_further_than_twice_its_slots(
        settings, topics, producer, kafka_bootstrap) -> None:
    """The backlog stays in the broker: with two slots taken for good, at most four records
    (plus the rest of the poll that reached that) are read; the rest wait their turn."""
    handler = Recorder()
    keys = [f"ref_{n}" for n in range(10)]
    for key in keys:
        handler.hold(key)
    consumer = _consumer(settings, topics, producer, handler, concurrency=2,
                         max_poll_records=2, max_poll_interval_ms=1000)
    await consumer.start()
    try:
        events = _events(keys, 1)
        await _publish(kafka_bootstrap, topics.rewards.name, events)
        await eventually(lambda: len(handler.started) == 2, timeout=60)
        await eventually(lambda: consumer._consumer.paused(),
                         message="never stopped reading (nothing got done for a while)")
        assert 4 <= consumer.held <= 4 + 2 - 1
        assert len(handler.started) == 2
        for key in keys:
            handler.release(key)
        await eventually(lambda: sorted(e for _, e in handler.done)
                         == sorted(e.id for _, e in events), timeout=30)
        await eventually(lambda: consumer.held == 0)
    finally:
        await consumer.stop()


class LoopKiller(BaseException):
    """Escapes every retry (as nothing should), ending the consumer's loop."""


async def test_an_error_escaping_the_retries_ends_the_loop_and_shows(
        settings, topics, producer, kafka_bootstrap) -> None:
    async def fatal(envelope, record) -> None:
        raise LoopKiller

    consumer = _consumer(settings, topics, producer, fatal)
    await consumer.start()
    try:
        await _publish(kafka_bootstrap, topics.rewards.name, _events(["ref_0"], 2))
        await eventually(lambda: not consumer.running, timeout=60, message="still running")
        assert isinstance(consumer.error, LoopKiller)
        assert not consumer.healthy
        assert consumer.held == 0
    finally:
        await consumer.stop()


def _count(counter, **labels: str) -> float:
    return counter.labels(**labels)._value.get()
