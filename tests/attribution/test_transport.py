"""The attribution app's transport fix against the real broker: after "seek to committed",
a source partition the group never committed is read from its start again (aiokafka alone
leaves it where the fetcher was), a committed one from its committed offset, and a changelog
partition is left where recovery put it."""

from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from attribution.transport import ResettingConsumerThread


async def test_seek_to_committed_resets_partitions_the_group_never_committed(
        kafka_bootstrap, topics):
    source, changelog = topics.clicks.name, topics.conversions.name
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for topic in (source, changelog):
            for partition in range(2):
                for _ in range(5):
                    await producer.send_and_wait(topic, b"x", partition=partition)
    finally:
        await producer.stop()
    tps = [TopicPartition(t, p) for t in (source, changelog) for p in range(2)]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap,
                                group_id=f"transport-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.commit({TopicPartition(source, 0): OffsetAndMetadata(2, "")})
        await consumer.seek_to_end(*tps)  # where a fetcher that dropped records would be
        thread = SimpleNamespace(
            _ensure_consumer=lambda: consumer, log=logging.getLogger("test-transport"),
            app=SimpleNamespace(tables=SimpleNamespace(changelog_topics={changelog}),
                                conf=SimpleNamespace(consumer_auto_offset_reset="earliest")))

        committed = await ResettingConsumerThread._seek_to_committed_or_reset(thread)

        assert committed[TopicPartition(source, 0)] == 2
        assert committed[TopicPartition(source, 1)] is None
        assert await consumer.position(TopicPartition(source, 0)) == 2
        assert await consumer.position(TopicPartition(source, 1)) == 0  # was 5
        for partition in range(2):  # changelogs: recovery's business
            assert await consumer.position(TopicPartition(changelog, partition)) == 5
    finally:
        await consumer.stop()
