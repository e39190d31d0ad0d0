"""Kafka clients configured the platform's way: acks=all, topics created from the registry."""

from __future__ import annotations

import os

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from referral_events import Topic

from .settings import PlatformSettings

log = structlog.get_logger(__name__)


def make_producer(settings: PlatformSettings, *, client_id: str, linger_ms: int = 2,
                  request_timeout_ms: int = 10_000,
                  max_batch_size: int = 16_384) -> AIOKafkaProducer:
    """A producer whose acknowledged sends are on every in-sync replica (acks=all).
    ``max_batch_size`` bounds one record batch in bytes (aiokafka's default: 16 KiB)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=linger_ms,
        request_timeout_ms=request_timeout_ms,
        max_batch_size=max_batch_size,
    )


def default_replication_factor() -> int:
    """``TOPIC_REPLICATION_FACTOR`` (1: one broker, as in `make up` and the compose stack;
    production clusters set 3, with min.insync.replicas=2 on the broker)."""
    value = os.environ.get("TOPIC_REPLICATION_FACTOR", "").strip()
    return int(value) if value else 1


async def ensure_topics(bootstrap_servers: str, topics: list[Topic], *,
                        replication_factor: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created. Replication
    factor: the argument, else ``TOPIC_REPLICATION_FACTOR``, else 1 (existing topics are
    never changed)."""
    if replication_factor is None:
        replication_factor = default_replication_factor()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="topic-setup")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        created: list[str] = []
        for topic in missing:
            configs = {"cleanup.policy": "compact"} if topic.compacted else {}
            try:
                await admin.create_topics([NewTopic(topic.name, topic.partitions,
                                                    replication_factor, topic_configs=configs)])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("topics created", topics=created)
        return created
    finally:
        await admin.close()
