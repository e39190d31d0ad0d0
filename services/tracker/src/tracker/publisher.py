"""Publishing events so that an answer of 202 means the broker has them (acks=all).

A send waits for the broker's acknowledgement, bounded by the send timeout; a broker that
is away, or too slow, becomes :class:`BrokerUnavailable`, which the API answers with 503
and Retry-After (never 202).

Group commit: events are appended to one open record batch per topic partition, which
is handed to the producer as soon as the partition's previous batch has been taken for
sending. Requests that arrive while a batch is on its way to the broker thus share the
next round trip, each still waiting for the broker's acknowledgement of its own batch.
Compared with one ``producer.send()`` per event this saves most of the producer's
per-event work (a coroutine, futures and bookkeeping per message; measured in
docs/performance.md). Keys are partitioned exactly as the producer's default partitioner
does (murmur2), so events of one referral code stay on one partition.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from referral_events import Topic
from referral_kit.kafka import make_producer
from referral_kit.settings import PlatformSettings

from . import metrics

log = structlog.get_logger(__name__)
_KEY_CACHE_SIZE = 100_000

class BrokerUnavailable(Exception):
    """The event was not acknowledged by the broker; the caller must not report success."""


class _Batch:
    """Events for one partition not yet handed to the producer, with their waiters:
    one per single publish, and one ``shared`` by every event of ``publish_all`` calls."""

    __slots__ = ("builder", "shared", "waiters")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.waiters: list[asyncio.Future[None]] = []
        self.shared: asyncio.Future[None] | None = None


class _Partition:
    """One topic partition: its open batch, full batches queued behind it, its flusher."""

    __slots__ = ("flusher", "open", "partition", "queued", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition
        self.open: _Batch | None = None
        self.queued: list[_Batch] = []
        self.flusher: asyncio.Task[None] | None = None


class EventPublisher:
    """One producer for the whole process; ``started`` once it has reached the broker."""

    def __init__(self, settings: PlatformSettings, *, send_timeout: float,
                 client_id: str = "tracker", linger_ms: int = 0,
                 max_batch_bytes: int = 1 << 20) -> None:
        self._settings = settings
        self._send_timeout = send_timeout
        self._client_id = client_id
        self._linger_ms = linger_ms
        self._max_batch_bytes = max_batch_bytes
        self._producer: AIOKafkaProducer | None = None
        # The loop the producer runs on, kept: asyncio.get_running_loop() makes a getpid()
        # system call each time on Python 3.11 (a few µs in a VM, twice per event).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._partitions_by: dict[tuple[str, int], _Partition] = {}
        self._partition_of: dict[tuple[str, bytes], tuple[int, int]] = {}
        self._partitioner = DefaultPartitioner()
        # Single sends waiting for an acknowledgement, by deadline: the send timeout is one
        # setting, so appending keeps them in deadline order; one timer serves them all
        # (a timer per request was ~1-2 µs of each request's CPU).
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._sweep_at: asyncio.TimerHandle | None = None

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
            linger_ms=self._linger_ms, max_batch_size=self._max_batch_bytes,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._loop = asyncio.get_running_loop()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            flushers = [p.flusher for p in self._partitions_by.values() if p.flusher]
            if flushers:  # hand what is queued to the producer, which flushes on stop
                await asyncio.wait(flushers, timeout=self._send_timeout)
            await producer.stop()

    async def publish(self, topic: Topic, *, key: str, value: bytes, event_id: str) -> None:
        """Return once the broker has acknowledged the encoded event ``value`` (whose id
        is ``event_id``) on ``topic`` under ``key``.

        Raises :class:`BrokerUnavailable` when not connected, on a broker error, or when
        the acknowledgement does not arrive within the send timeout.
        """
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise BrokerUnavailable("not connected to the broker yet")
        started = loop.time()
        deadline = started + self._send_timeout
        name = topic.name
        try:
            batch = self._append(producer, name, key.encode(), value,
                                 await self._partitions(producer, name, deadline))
            waiter: asyncio.Future[None] = loop.create_future()
            batch.waiters.append(waiter)
            # Bounded by the send timeout without a task or a timer of its own: the expiry
            # sweep fails it at its deadline (cancelling the request cancels only its own
            # waiter; the batch goes on).
            self._expiring(deadline, waiter)
            await waiter
        except (TimeoutError, KafkaError, BrokerUnavailable) as exc:
            metrics.PUBLISH_FAILURES.labels(topic=name).inc()
            log.warning("event not acknowledged by the broker", topic=name,
                        event_id=event_id, error=repr(exc))
            raise BrokerUnavailable(f"broker did not acknowledge the event: {exc!r}") from exc
        metrics.PUBLISH_SECONDS.observe(loop.time() - started)

    def _expiring(self, deadline: float, waiter: asyncio.Future[None]) -> None:
        self._deadlines.append((deadline, waiter))
        if self._sweep_at is None:
            assert self._loop is not None
            self._sweep_at = self._loop.call_at(deadline, self._sweep)

    def _sweep(self) -> None:
        """Fail the waiters whose deadline has come and are still waiting; re-arm for the
        next deadline."""
        assert self._loop is not None
        now, deadlines = self._loop.time(), self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, waiter = deadlines.popleft()
            _expire(waiter)
        self._sweep_at = (self._loop.call_at(deadlines[0][0], self._sweep) if deadlines
                          else None)

    async def publish_all(self, messages: Sequence[tuple[Topic, str, bytes]]
                          ) -> list[BrokerUnavailable | None]:
        """Send every ``(topic, key, encoded event)`` at once, then wait for all the broker's
        acknowledgements within one send timeout (a batch pays one round trip, not one per
        event). One outcome per message, in order: None once acknowledged, else the
        :class:`BrokerUnavailable` to report for it. Never raises for the broker's sake.
        """
        if not messages:
            return []
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            return [BrokerUnavailable("not connected to the broker yet")] * len(messages)
        started = loop.time()
        deadline = started + self._send_timeout
        # One future per record batch, not per event: a 500-event request lands in a
        # few batches, and a future per event was ~10 % of the batch endpoint's CPU.
        waiters: list[asyncio.Future[None]] = []
        not_sent: BrokerUnavailable | None = None
        try:
            for topic, key, value in messages:
                batch = self._append(producer, topic.name, key.encode(), value,
                                     await self._partitions(producer, topic.name, deadline))
                if (waiter := batch.shared) is None:
                    waiter = batch.shared = loop.create_future()
                    batch.waiters.append(waiter)
                waiters.append(waiter)
        except (TimeoutError, KafkaError, BrokerUnavailable) as exc:
            not_sent = BrokerUnavailable(f"event not handed to the producer: {exc!r}")
        if waiters:
            await asyncio.wait(set(waiters), timeout=max(0.0, deadline - loop.time()))
        outcomes: list[BrokerUnavailable | None] = []
        for waiter in waiters:
            if not waiter.done():
                waiter.add_done_callback(_retrieve)  # may still land: end it quietly
                outcomes.append(BrokerUnavailable("broker did not acknowledge in time"))
            elif (error := waiter.exception()) is not None:
                outcomes.append(error if isinstance(error, BrokerUnavailable) else
                                BrokerUnavailable(f"broker refused the event: {error!r}"))
            else:
                outcomes.append(None)
        outcomes += [not_sent] * (len(messages) - len(waiters))
        for (topic, _, _), outcome in zip(messages, outcomes, strict=True):
            if outcome is not None:
                metrics.PUBLISH_FAILURES.labels(topic=topic.name).inc()
        if failed := sum(1 for o in outcomes if o is not None):
            log.warning("events not acknowledged by the broker", failed=failed,
                        of=len(messages), error=str(next(o for o in outcomes if o)))
        else:
            metrics.PUBLISH_SECONDS.observe(loop.time() - started)
        return outcomes

    # -- group commit --------------------------------------------------------------------
    @staticmethod
    async def _partitions(producer: AIOKafkaProducer, topic: str, deadline: float
                          ) -> set[int]:
        partitions = producer.client.cluster.partitions_for_topic(topic)
        if not partitions:  # metadata not known yet: fetch it, within the deadline
            async with asyncio.timeout_at(deadline):
                partitions = await producer.partitions_for(topic)
        return partitions  # type: ignore[no-any-return]

    def _append(self, producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes,
                partitions: set[int]) -> _Batch:
        """Append one event to its partition's open batch (opening the next one when it
        is full, and starting the partition's flusher) and return that batch."""
        known = self._partition_of.get((topic, key))
        if known is not None and known[0] == len(partitions):
            partition = known[1]
        else:
            partition = self._partitioner(key, sorted(partitions), list(partitions))
            if len(self._partition_of) >= _KEY_CACHE_SIZE:
                self._partition_of.clear()
            self._partition_of[topic, key] = (len(partitions), partition)
        slot = self._partitions_by.get((topic, partition))
        if slot is None:
            slot = self._partitions_by[topic, partition] = _Partition(topic, partition)
        batch = slot.open
        if batch is None or batch.builder.append(key=key, value=value, timestamp=None) is None:
            if batch is not None:  # full: queue it, open the next
                slot.queued.append(batch)
            batch = slot.open = _Batch(producer.create_batch())
            if batch.builder.append(key=key, value=value, timestamp=None) is None:
                raise BrokerUnavailable(f"event of {len(value)} bytes is larger than a batch")
        if slot.flusher is None:
            assert self._loop is not None
            slot.flusher = self._loop.create_task(self._flush(producer, slot))
        return batch

    async def _flush(self, producer: AIOKafkaProducer, slot: _Partition) -> None:
        """Hand the partition's batches to the producer one after another. The producer
        takes a partition's next batch only once the previous one left for the broker;
        meanwhile later events gather in the open batch (that is the group commit)."""
        try:
            while slot.queued or slot.open is not None:
                batch = slot.queued.pop(0) if slot.queued else slot.open
                if batch is slot.open:
                    slot.open = None
                assert batch is not None
                try:
                    delivery = await producer.send_batch(batch.builder, slot.topic,
                                                         partition=slot.partition)
                except Exception as exc:  # not queued at all: nobody of it was recorded
                    _settle(batch.waiters, exc)
                    continue
                delivery.add_done_callback(
                    lambda done, waiters=batch.waiters: _settle(waiters, _error_of(done)))
        finally:
            slot.flusher = None
            if slot.open is not None or slot.queued:  # cancelled with events still open
                for batch in [*slot.queued, slot.open]:
                    if batch is not None:
                        _settle(batch.waiters, BrokerUnavailable("publisher stopped"))
                slot.open, slot.queued = None, []

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


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(
            "no acknowledgement from the broker within the send timeout"))


def _error_of(delivery: asyncio.Future[Any]) -> BaseException | None:
    if delivery.cancelled():
        return BrokerUnavailable("send cancelled")
    return delivery.exception()


def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():  # timed out (answered 503) or its request went away
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error if isinstance(error, KafkaError | BrokerUnavailable)
                                 else BrokerUnavailable(f"broker refused the event: "
                                                        f"{error!r}"))


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled():
        delivery.exception()
