"""The tracker's publisher against a real broker: one produce request at a time per broker,
carrying every partition's batch; a batch nobody waits for any more is not sent; a batch
refused with a retriable error is sent again while its requests still wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY
from referral_devstack.broker import EmbeddedBroker
from referral_events import Topic, TopicRegistry
from referral_kit.kafka import ensure_topics
from referral_kit.settings import PlatformSettings
from tracker.publisher import BrokerUnavailable, EventPublisher

from tests.support import eventually

from .support import PRIVATE_BROKER_LOG, random_ref, read_records


def _settings(bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> PlatformSettings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("KAFKA_ENABLE_IDEMPOTENCE", "false")
    return PlatformSettings()


StartPublisher = Callable[[str, float], Awaitable[EventPublisher]]


@pytest.fixture
async def publisher_on(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartPublisher]:
    """``publisher_on(bootstrap, send_timeout)``: a started publisher, stopped at the end."""
    started: list[EventPublisher] = []

    async def start(bootstrap: str, send_timeout: float) -> EventPublisher:
        publisher = EventPublisher(_settings(bootstrap, monkeypatch), send_timeout=send_timeout)
        await publisher.start()
        started.append(publisher)
        return publisher

    yield start
    for publisher in started:
        await publisher.stop()


async def _started(broker: EmbeddedBroker, publisher_on: StartPublisher,
                   send_timeout: float) -> tuple[Topic, EventPublisher]:
    """A fresh conversions topic on ``broker`` and a publisher that has sent one event
    there ("before"), so it is connected and knows the topic."""
    topic = TopicRegistry(random_ref("p") + ".").conversions
    await ensure_topics(broker.bootstrap, [topic])
    publisher = await publisher_on(broker.bootstrap, send_timeout)
    await publisher.publish(topic, key="K", value=b"before", event_id="before")
    return topic, publisher


async def _values(bootstrap: str, topic: Topic) -> list[bytes]:
    return [record.value for record in await read_records(bootstrap, topic)]


async def test_concurrent_events_land_once_each_on_their_keys_partition(
        kafka_bootstrap: str, topics: TopicRegistry, publisher_on: StartPublisher) -> None:
    await ensure_topics(kafka_bootstrap, [topics.conversions])
    publisher = await publisher_on(kafka_bootstrap, 10.0)
    events = [(f"CODE{i % 23}", f"event-{i}".encode()) for i in range(600)]
    await asyncio.gather(*(publisher.publish(topics.conversions, key=key, value=value,
                                             event_id=value.decode())
                           for key, value in events))
    outcomes = await publisher.publish_all(
        [(topics.conversions, key, value + b"-batch") for key, value in events[:100]])
    assert outcomes == [None] * 100

    found = await read_records(kafka_bootstrap, topics.conversions)
    expected = events + [(key, value + b"-batch") for key, value in events[:100]]
    assert sorted(r.value for r in found) == sorted(value for _, value in expected)
    every = list(range(topics.conversions.partitions))
    partition_of = DefaultPartitioner()
    for record in found:  # as the producer's default partitioner places them
        assert record.partition == partition_of(record.key, every, every), record.key


async def test_a_batch_nobody_waits_for_any_more_is_not_sent(
        private_broker: EmbeddedBroker, publisher_on: StartPublisher) -> None:
    # Send timeout 0.3 s: a request waits that long; the produce request in flight, 1 s.
    topic, publisher = await _started(private_broker, publisher_on, 0.3)

    private_broker.pause()
    try:
        # In flight when the broker stopped answering: refused at its deadline (0.3 s).
        with pytest.raises(BrokerUnavailable):
            await publisher.publish(topic, key="K", value=b"in-flight",
                                    event_id="in-flight")
        # Gathers behind the request in flight, which times out only at 1 s: refused at
        # 0.6 s, its batch is then wanted by nobody.
        with pytest.raises(BrokerUnavailable):
            await publisher.publish(topic, key="K", value=b"refused",
                                    event_id="refused")
    finally:
        private_broker.resume()

    # On another partition: an event of K's would join the refused event's batch (not yet
    # taken while the request in flight is being answered), and a batch goes whole.
    every = list(range(topic.partitions))
    other = next(key for key in (f"L{i}" for i in range(100))
                 if DefaultPartitioner()(key.encode(), every, every)
                 != DefaultPartitioner()(b"K", every, every))

    async def accepted() -> bool:
        try:
            await publisher.publish(topic, key=other, value=b"after",
                                    event_id="after")
        except BrokerUnavailable:
            return False
        return True

    await eventually(accepted, message="no event acknowledged after SIGCONT")
    values = await _values(private_broker.bootstrap, topic)
    assert b"refused" not in values  # answered 503, and never delivered
    assert values.count(b"before") == 1 and b"after" in values
    # The request in flight when the broker paused may or may not have been written: the
    # broker had it. Its client was told 503, and retries it under the same event id.


async def test_a_batch_refused_while_the_broker_is_away_is_sent_again_within_the_deadline(
        private_broker: EmbeddedBroker, publisher_on: StartPublisher) -> None:
    topic, publisher = await _started(private_broker, publisher_on, 20.0)

    def retries() -> float:
        return REGISTRY.get_sample_value("tracker_produce_retries_total",
                                         {"topic": topic.name}) or 0.0

    private_broker.stop()  # connections refused: a retriable error
    waiting = asyncio.create_task(publisher.publish(
        topic, key="K", value=b"retried", event_id="retried"))
    await eventually(lambda: retries() >= 2, message="the refused batch was not retried")
    assert not waiting.done()

    restarted = EmbeddedBroker(private_broker.port, log_path=PRIVATE_BROKER_LOG).start()
    try:
        await asyncio.wait_for(waiting, 20)  # acknowledged by the new broker: no exception
    finally:
        restarted.stop()


async def test_stopping_fails_what_the_broker_never_answered(
        private_broker: EmbeddedBroker, publisher_on: StartPublisher) -> None:
    topic, publisher = await _started(private_broker, publisher_on, 0.5)
    private_broker.pause()
    try:
        waiting = [asyncio.create_task(publisher.publish(
            topic, key=f"K{i}", value=b"x", event_id=str(i))) for i in range(5)]
        await publisher.stop()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(result, BrokerUnavailable) for result in results), results
    finally:
        private_broker.resume()


async def test_a_fault_in_the_produce_rounds_fails_only_what_it_held(
        kafka_bootstrap: str, topics: TopicRegistry, publisher_on: StartPublisher,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await ensure_topics(kafka_bootstrap, [topics.conversions])
    publisher = await publisher_on(kafka_bootstrap, 5.0)
    take = EventPublisher._take
    faults = iter([True])

    def faulty_take(self: EventPublisher, *args: Any) -> Any:
        if next(faults, False):
            raise RuntimeError("a bug")
        return take(self, *args)

    monkeypatch.setattr(EventPublisher, "_take", faulty_take)
    # The first round fails before it took anything: its event waits in its batch, which
    # the rounds started again after the retry backoff send; later events go too.
    await asyncio.gather(*(publisher.publish(topics.conversions, key=f"K{i}", value=b"v",
                                             event_id=str(i)) for i in range(3)))
    await publisher.publish(topics.conversions, key="K", value=b"after", event_id="after")
    values = await _values(kafka_bootstrap, topics.conversions)
    assert values.count(b"v") == 3 and values.count(b"after") == 1
