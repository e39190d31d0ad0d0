"""Publishing events so that an answer of 202 means the broker has them (acks=all).

A send waits for the broker's acknowledgement, bounded by the send timeout; a broker that
is away, or too slow, becomes :class:`BrokerUnavailable`, which the API answers with 503
and Retry-After (never 202).
"""

from __future__ import annotations

import asyncio
import time
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

    async def reachable(self, within: float = 1.0) -> bool:
        """True when a connection to at least one broker is up (or can be made now)."""
        if self._producer is None:
            return False
        client = self._producer.client
        nodes = [b.nodeId for b in client.cluster.brokers()]

        async def any_node_ready() -> bool:
            for node in nodes:
                if await client.ready(node):
                    return True
            return False

        try:
            return await asyncio.wait_for(any_node_ready(), within)
        except (TimeoutError, KafkaError, OSError):
            return False
