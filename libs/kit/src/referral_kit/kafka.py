"""Kafka clients configured the platform's way: acks=all, topics created from the registry."""

from __future__ import annotations

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from referral_events import Topic

from .settings import PlatformSettings

log = structlog.get_logger(__name__)


def make_producer(settings: PlatformSettings, *, client_id: str, linger_ms: int = 2,
                  request_timeout_ms: int = 10_000) -> AIOKafkaProducer:
    """A producer whose acknowledged sends are on every in-sync replica (acks=all)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=linger_ms,
        request_timeout_ms=request_timeout_ms,
    )


async def ensure_topics(bootstrap_servers: str, topics: list[Topic], *,
                        replication_factor: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="topic-setup")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        created: list[str] = []
        for topic in missing:
            configs = {"cleanup.policy": "compact"} if topic.compacted else {}
            try:
                await admin.create_topics([
                    NewTopic(topic.name, topic.partitions, replication_factor, topic_configs=configs)
                ])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("topics created", topics=created)
        return created
    finally:
        await admin.close()
