"""Publishing events so that an answer of 202 means the broker has them (acks=all).

A send waits for the broker's acknowledgement, bounded by the send timeout; a broker that
is away, or too slow, becomes :class:`BrokerUnavailable`, which the API answers with 503
and Retry-After (never 202).

Group commit: events are appended to one open record batch per topic partition. One
produce request at a time goes to each broker, carrying the batches of every partition it
leads that have events; the events that arrive while it is on its way gather in the next
batches, which leave as soon as the broker has answered. Every request still waits for
the broker's acknowledgement of its own batch. Keys are partitioned exactly as the
producer's default partitioner does (murmur2), so events of one referral code stay on
one partition.

The produce requests are sent with aiokafka's client (connections, metadata, the
protocol), not through its producer's accumulator and sender: those cost the tracker
~170 µs of CPU per produce request, however few events it carries, about twice what
the request itself costs; handing batches to them also queued a partition's next batch
behind the one in flight, splitting each round trip's events over twice the requests
(docs/performance.md). A batch refused with a retriable error (leader moved, connection
lost) is sent again after the producer's retry backoff while any of its requests still
waits; a batch whose every request has been answered 503 at its deadline, or gone away,
is dropped rather than delivered to nobody's knowledge.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, for_code
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.protocol.produce import ProduceRequest
from referral_events import Topic
from referral_kit.kafka import make_producer
from referral_kit.settings import PlatformSettings

from . import metrics

log = structlog.get_logger(__name__)
_KEY_CACHE_SIZE = 100_000

class BrokerUnavailable(Exception):
    """The event was not acknowledged by the broker; the caller must not report success."""


class _Batch:
    """Events for one partition not yet acknowledged, with their waiters: one per single
    publish, and one ``shared`` by every event of ``publish_all`` calls."""

    __slots__ = ("builder", "data", "shared", "waiters")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.data: bytes | None = None
        """The record batch as sent (built once: a retry sends the same bytes)."""
        self.waiters: list[asyncio.Future[None]] = []
        self.shared: asyncio.Future[None] | None = None

    def wanted(self) -> bool:
        """Somebody still waits for this batch's acknowledgement."""
        return not all(waiter.done() for waiter in self.waiters)

    def built(self) -> bytes:
        if self.data is None:
            self.data = bytes(self.builder._build())  # aiokafka's BatchBuilder: build once
        return self.data


class _Partition:
    """One topic partition: its open batch and the full batches queued before it."""

    __slots__ = ("open", "queued", "tp")

    def __init__(self, topic: str, partition: int) -> None:
        self.tp = TopicPartition(topic, partition)
        self.open: _Batch | None = None
        self.queued: deque[_Batch] = deque()

    @property
    def has_batches(self) -> bool:
        return self.open is not None or bool(self.queued)

    def next_batch(self) -> _Batch | None:
        """The oldest batch still wanted (dropping those nobody waits for), taken out."""
        while self.has_batches:
            if self.queued:
                batch = self.queued.popleft()
            else:
                batch, self.open = self.open, None
            assert batch is not None
            if batch.wanted():
                return batch
        return None


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
        self._request_timeout_ms = max(1_000, int(send_timeout * 1000))
        self._producer: AIOKafkaProducer | None = None
        # The loop the producer runs on, kept: asyncio.get_running_loop() makes a getpid()
        # system call each time on Python 3.11 (a few µs in a VM, twice per event).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._partitions_by: dict[tuple[str, int], _Partition] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}  # by broker (node id)
        self._retry_at: asyncio.TimerHandle | None = None
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
            # A produce request not answered within the send timeout has failed: its
            # requests were answered 503 at that deadline.
            request_timeout_ms=self._request_timeout_ms,
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
            if self._retry_at is not None:
                self._retry_at.cancel()
            if senders := list(self._senders.values()):  # let what was sent be answered
                await asyncio.wait(senders, timeout=self._send_timeout)
                for sender in senders:
                    sender.cancel()
                await asyncio.wait(senders)
            for slot in self._partitions_by.values():
                while (batch := slot.next_batch()) is not None:
                    _settle(batch.waiters, BrokerUnavailable("publisher stopped"))
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
        is full, and making sure the partition's broker has a sender) and return that
        batch."""
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
            self._wake(producer, slot)
        return batch

    def _wake(self, producer: AIOKafkaProducer, slot: _Partition) -> None:
        """Start a sender for the broker leading ``slot``'s partition unless one runs (it
        takes the partition's batches in its next round). No leader known: look again
        after the retry backoff."""
        if self._producer is not producer:  # stopping: stop() settles what is left
            return
        node = producer.client.cluster.leader_for_partition(slot.tp)
        if node is None or node < 0:
            producer.client.force_metadata_update()
            self._retry_later(producer)
        elif node not in self._senders:
            assert self._loop is not None
            self._senders[node] = self._loop.create_task(self._send_rounds(producer, node))

    def _retry_later(self, producer: AIOKafkaProducer) -> None:
        if self._retry_at is None and self._loop is not None:
            self._retry_at = self._loop.call_later(
                self._retry_backoff(producer), self._wake_all, producer)

    def _wake_all(self, producer: AIOKafkaProducer) -> None:
        self._retry_at = None
        if self._producer is producer:
            for slot in self._partitions_by.values():
                if slot.has_batches:
                    self._wake(producer, slot)

    @staticmethod
    def _retry_backoff(producer: AIOKafkaProducer) -> float:
        return float(producer.client._retry_backoff)  # the producer's retry_backoff_ms, in s

    async def _send_rounds(self, producer: AIOKafkaProducer, node: int) -> None:
        """Send ``node`` one produce request after another, each with the next wanted
        batch of every partition the node leads, until none is left."""
        taken: dict[TopicPartition, _Batch] = {}
        try:
            while True:
                if self._linger_ms:
                    await asyncio.sleep(self._linger_ms / 1000)
                taken = self._take(producer, node)
                if not taken:
                    return
                retry = await self._produce(producer, node, taken)
                taken = {}
                if retry:  # the refused batches are back in their partitions' queues
                    await asyncio.sleep(self._retry_backoff(producer))
                    self._wake_all(producer)
        except asyncio.CancelledError:  # stopped while a request was out: not acknowledged
            for batch in taken.values():
                _settle(batch.waiters, BrokerUnavailable("publisher stopped"))
            raise
        except Exception as exc:  # a fault of ours: fail what was taken, start afresh later
            log.exception("produce rounds failed", node=node)
            for batch in taken.values():
                _settle(batch.waiters, BrokerUnavailable(f"produce rounds failed: {exc!r}"))
            self._retry_later(producer)
        finally:
            if self._senders.get(node) is asyncio.current_task():
                del self._senders[node]

    def _take(self, producer: AIOKafkaProducer, node: int) -> dict[TopicPartition, _Batch]:
        """The next wanted batch of each partition ``node`` leads. Partitions that have
        batches and another leader wake theirs."""
        taken: dict[TopicPartition, _Batch] = {}
        leader_for = producer.client.cluster.leader_for_partition
        for slot in self._partitions_by.values():
            if not slot.has_batches:
                continue
            if leader_for(slot.tp) != node:
                self._wake(producer, slot)
            elif (batch := slot.next_batch()) is not None:
                taken[slot.tp] = batch
        return taken

    async def _produce(self, producer: AIOKafkaProducer, node: int,
                       taken: dict[TopicPartition, _Batch]) -> bool:
        """One produce request (acks=all) with ``taken``; settles each batch's waiters by
        the broker's answer for its partition. Returns True when batches were put back
        to be sent again (a retriable error while somebody still waits for them)."""
        by_topic: defaultdict[str, list[tuple[int, bytes]]] = defaultdict(list)
        for tp, batch in taken.items():
            by_topic[tp.topic].append((tp.partition, batch.built()))
        request = ProduceRequest(transactional_id=None, required_acks=-1,
                                 timeout=self._request_timeout_ms, topics=list(by_topic.items()))
        try:
            response = await producer.client.send(node, request)
        except KafkaError as exc:
            return self._refused(producer, taken.items(), exc)
        except Exception as exc:  # not the broker's answer: fail these, keep sending
            log.exception("produce request failed", node=node)
            for batch in taken.values():
                _settle(batch.waiters, BrokerUnavailable(f"produce request failed: {exc!r}"))
            return False
        retry = False
        for topic, partitions in response.topics:
            for answer in partitions:  # (partition, error_code, …) in every version
                tp = TopicPartition(topic, answer[0])
                batch = taken.pop(tp, None)
                if batch is None:
                    continue
                error = for_code(answer[1])
                if error is _NO_ERROR:
                    _settle(batch.waiters, None)
                else:
                    retry |= self._refused(producer, [(tp, batch)], error())
        if taken:  # partitions the broker did not answer for
            retry |= self._refused(producer, taken.items(), KafkaError(
                "the broker's produce response did not name the partition"))
        return retry

    def _refused(self, producer: AIOKafkaProducer,
                 batches: Any, error: KafkaError) -> bool:
        """Put ``batches`` back at the front of their partitions when ``error`` is
        retriable and somebody still waits for them; fail their waiters otherwise."""
        retry = False
        if getattr(error, "invalid_metadata", False):  # leader moved, partition unknown…
            producer.client.force_metadata_update()
        for tp, batch in batches:
            if error.retriable and batch.wanted() and self._producer is producer:
                self._partitions_by[tp.topic, tp.partition].queued.appendleft(batch)
                metrics.PRODUCE_RETRIES.labels(topic=tp.topic).inc()
                retry = True
            else:
                _settle(batch.waiters, error)
        if retry:
            log.warning("produce request refused; retrying", error=repr(error))
        return retry

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


_NO_ERROR = for_code(0)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(
            "no acknowledgement from the broker within the send timeout"))


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
