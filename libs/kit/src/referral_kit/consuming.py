"""A consumer-group loop that never stops on a bad message and never skips a good one.

Poison (undecodable, wrong type for the topic, or refused by the handler with
:class:`PoisonEvent`) goes to the dead-letter topic; any other handler failure is treated as
transient (database or broker away) and retried with backoff without committing past it.
Offsets are committed after the handler returns, so delivery is at-least-once and handlers
must be idempotent (keyed by event id).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from prometheus_client import Counter
from referral_events import Envelope, EventData, EventError, Topic, UnknownEventType, decode

from .deadletter import dead_letter
from .settings import PlatformSettings

log = structlog.get_logger(__name__)

CONSUMED = Counter("events_consumed_total", "Events handled", ["consumer", "topic"])
DEAD_LETTERED = Counter("events_dead_lettered_total", "Events sent to a DLQ", ["consumer", "topic"])
RETRIES = Counter("event_handler_retries_total", "Transient handler failures", ["consumer"])

Handler = Callable[[Envelope[EventData], ConsumerRecord[bytes, bytes]], Awaitable[None]]


class PoisonEvent(Exception):
    """Raised by a handler for an event that can never be processed (dead-letter it)."""

    code = "rejected_by_handler"

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class EventConsumer:
    def __init__(self, *, settings: PlatformSettings, topics: list[Topic], group_id: str,
                 name: str, handler: Handler, producer: AIOKafkaProducer,
                 max_backoff_s: float = 5.0) -> None:
        self._settings = settings
        self._topics = {t.name: t for t in topics}
        self._group_id = group_id
        self._name = name
        self._handler = handler
        self._producer = producer
        self._max_backoff = max_backoff_s
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.assigned = asyncio.Event()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            group_id=self._group_id,
            client_id=self._name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=200,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=10_000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-consume")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            if self._consumer.assignment():
                self.assigned.set()
            for tp, records in batches.items():
                for record in records:
                    await self._process(record)
                await self._consumer.commit({tp: records[-1].offset + 1})

    async def _process(self, record: ConsumerRecord[Any, Any]) -> None:
        topic = self._topics[record.topic]
        try:
            envelope = decode(record.value)
            if envelope.type not in topic.event_types:
                raise UnknownEventType(
                    f"{envelope.type} does not belong on {topic.name}", field="type"
                )
        except EventError as exc:
            await self._dead_letter(topic, record, exc)
            return
        attempt = 0
        while True:
            try:
                await self._handler(envelope, record)
                CONSUMED.labels(self._name, topic.name).inc()
                return
            except PoisonEvent as exc:
                await self._dead_letter(topic, record, exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                attempt += 1
                RETRIES.labels(self._name).inc()
                delay = min(self._max_backoff, 0.1 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1)  # noqa: S311
                log.exception("handler failed; retrying", attempt=attempt, delay=round(delay, 2),
                              topic=record.topic, offset=record.offset, event_id=envelope.id)
                await asyncio.sleep(delay)

    async def _dead_letter(self, topic: Topic, record: ConsumerRecord[Any, Any],
                           exc: Exception) -> None:
        DEAD_LETTERED.labels(self._name, topic.name).inc()
        await dead_letter(self._producer, topic, key=record.key, value=record.value,
                          partition=record.partition, offset=record.offset, error=exc,
                          consumer=self._name)
