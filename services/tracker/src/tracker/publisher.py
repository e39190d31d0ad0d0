"""Publishing events so that an answer of 202 means the broker has them (acks=all).

A send waits for the broker's acknowledgement, bounded by the send timeout; a broker that
is away, or too slow, becomes :class:`BrokerUnavailable`, which the API answers with 503
and Retry-After (never 202).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from referral_events import Envelope, Topic, encode
from referral_kit.kafka import make_producer
from referral_kit.settings import PlatformSettings

from . import metrics

log = structlog.get_logger(__name__)


class BrokerUnavailable(Exception):
    """The event was not acknowledged by the broker; the caller must not report success."""


class EventPublisher:
    """One producer for the whole process; ``connected`` once it has reached the broker."""

    def __init__(self, settings: PlatformSettings, *, send_timeout: float,
                 client_id: str = "tracker") -> None:
        self._settings = settings
        self._send_timeout = send_timeout
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect to the broker; raises (and leaves nothing running) when it cannot."""
        producer = make_producer(
            self._settings, client_id=self._client_id,
            # A batch the broker never acked expires when the request has already failed,
            # so an event refused with 503 is not delivered long afterwards by surprise.
            request_timeout_ms=max(1_000, int(self._send_timeout * 1000)),
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish(self, topic: Topic, *, key: str, envelope: Envelope[Any]) -> None:
        """Return once the broker has acknowledged ``envelope`` on ``topic`` under ``key``.

        Raises :class:`BrokerUnavailable` when not connected, on a broker error, or when
        the acknowledgement does not arrive within the send timeout.
        """
        if self._producer is None:
            raise BrokerUnavailable("not connected to the broker yet")
        started = time.monotonic()
        deadline = started + self._send_timeout
        try:
            # send() may wait for topic metadata; the delivery future then waits for the ack.
            delivery = await asyncio.wait_for(
                self._producer.send(topic.name, encode(envelope), key=key.encode()),
                self._send_timeout,
            )
            # Shielded: abandoning the wait must not cancel the producer's own bookkeeping.
            await asyncio.wait_for(asyncio.shield(delivery),
                                   max(0.001, deadline - time.monotonic()))
        except (TimeoutError, KafkaError) as exc:
            metrics.PUBLISH_FAILURES.labels(topic=topic.name).inc()
            log.warning("event not acknowledged by the broker", topic=topic.name,
                        event_id=envelope.id, error=repr(exc))
            raise BrokerUnavailable(f"broker did not acknowledge the event: {exc!r}") from exc
        metrics.PUBLISH_SECONDS.observe(time.monotonic() - started)

    async def publish_all(self, messages: Sequence[tuple[Topic, str, Envelope[Any]]]
                          ) -> list[BrokerUnavailable | None]:
        """Send every ``(topic, key, envelope)`` at once, then wait for all the broker's
        acknowledgements within one send timeout (a batch pays one round trip, not one per
        event). One outcome per message, in order: None once acknowledged, else the
        :class:`BrokerUnavailable` to report for it. Never raises for the broker's sake.
        """
        if not messages:
            return []
        if self._producer is None:
            return [BrokerUnavailable("not connected to the broker yet")] * len(messages)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._send_timeout
        deliveries: list[asyncio.Future[Any]] = []
        not_sent: BrokerUnavailable | None = None
        try:
            async with asyncio.timeout_at(deadline):
                for topic, key, envelope in messages:
                    deliveries.append(await self._producer.send(
                        topic.name, encode(envelope), key=key.encode()))
        except (TimeoutError, KafkaError) as exc:
            not_sent = BrokerUnavailable(f"event not handed to the producer: {exc!r}")
        if deliveries:
            await asyncio.wait(deliveries, timeout=max(0.0, deadline - loop.time()))
        outcomes: list[BrokerUnavailable | None] = []
        for delivery in deliveries:
            if not delivery.done():
                # Still in the producer and may land later: retrieve its end quietly.
                delivery.add_done_callback(_retrieve)
                outcomes.append(BrokerUnavailable("broker did not acknowledge in time"))
            elif (error := delivery.exception()) is not None:
                outcomes.append(BrokerUnavailable(f"broker refused the event: {error!r}"))
            else:
                outcomes.append(None)
        outcomes += [not_sent] * (len(messages) - len(deliveries))
        for (topic, _, _), outcome in zip(messages, outcomes, strict=True):
            if outcome is not None:
                metrics.PUBLISH_FAILURES.labels(topic=topic.name).inc()
        if failed := sum(1 for o in outcomes if o is not None):
            log.warning("events not acknowledged by the broker", failed=failed,
                        of=len(messages), error=str(next(o for o in outcomes if o)))
        else:
            metrics.PUBLISH_SECONDS.observe(loop.time() - started)
        return outcomes

    async def reachable(self, within: float = 1.0) -> bool:
        """True when a broker answers a metadata request within ``within`` seconds. An
        open connection proves nothing: a paused (SIGSTOP) broker keeps it open."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), within)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled():
        delivery.exception()
