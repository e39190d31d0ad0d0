"""Send a refused message to its topic's dead-letter topic, with the reason."""

from __future__ import annotations

from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from referral_events import (
    MAX_EVENT_BYTES,
    EventDeadLettered,
    EventError,
    Topic,
    encode,
    new_event,
    utcnow,
)

log = structlog.get_logger(__name__)

KEPT_VALUE_BYTES = MAX_EVENT_BYTES // 2
"""A refused message larger than this is not copied into its dead letter: the dead letter would
itself exceed MAX_EVENT_BYTES, and no reader (nor referral-replay) could decode it."""


async def dead_letter(
    producer: AIOKafkaProducer,
    topic: Topic,
    *,
    key: bytes | None,
    value: bytes | None,
    partition: int | None,
    offset: int | None,
    error: EventError | Exception,
    consumer: str,
) -> None:
    """Publish the original message and the typed reason; waits for the broker's ack,
    so the source offset may be committed afterwards without losing the message."""
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    if value is not None and len(value) > KEPT_VALUE_BYTES:
        reason = f"{reason[:1800]} (the original {len(value)} bytes are not kept; " \
                 f"find them at the partition and offset above)"
        value = None
    text, is_b64 = EventDeadLettered.wrap_value(value)
    record = EventDeadLettered(
        original_topic=topic.name,
        partition=partition,
        offset=offset,
        original_key=key.decode("utf-8", "replace") if key else None,
        original_value=text,
        original_value_base64=is_b64,
        error_code=getattr(error, "code", "handler_error"),
        reason=reason[:2000],
        field=getattr(error, "field", None),
        consumer=consumer,
        failed_at=utcnow(),
    )
    assert topic.dead_letter, f"{topic.name} has no dead-letter topic"
    await producer.send_and_wait(topic.dead_letter, encode(new_event(record, source=consumer)),
                                 key=key)
    log.warning("event dead-lettered", topic=topic.name, partition=partition, offset=offset,
                error_code=record.error_code, reason=record.reason, field=record.field)


def describe(msg: Any) -> dict[str, Any]:
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
