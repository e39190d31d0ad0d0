"""A consumer-group loop that never stops on a bad message and never skips a good one.

Poison (undecodable, wrong type for the topic, or refused by the handler with
:class:`PoisonEvent`) goes to the dead-letter topic; any other handler failure is treated as
transient (database or broker away) and retried with backoff without committing past it.
Offsets are committed after the handler returns, so delivery is at-least-once and handlers
must be idempotent (keyed by event id).

Two handler shapes:

* ``handler(envelope, record)``: called once per event, in partition order;
* ``batch_handler(items)``: called once per poll with every decodable event of it (up to
  ``max_poll_records``), as ``(envelope, record)`` pairs in partition order. It returns one
  outcome per item, in order: ``None`` (done) or a :class:`PoisonEvent` (dead-letter that
  item); returning ``None`` instead of a list means all done. Raising :class:`PoisonEvent`
  refuses the batch without saying which item is at fault: the items are then handed over
  one at a time to find out. Raising anything else retries the whole batch. A batch
  handler can so put a whole poll in one database transaction. While a batch is handled,
  the next poll is read and decoded (it is handled only after this one is committed).

**Staying in the group while busy.** The broker's group protocol expects a poll at least
every ``max_poll_interval_ms``; a handler retrying through a long database outage (or just
slow) would otherwise get the member evicted, its partitions handed to another member and
its offset commit refused. While a poll's events are being handled (each attempt and each
backoff), the loop pauses its partitions and keeps polling them every few seconds: nothing
is fetched, the member stays alive, and a rebalance can still happen (partitions it no
longer owns are then not committed: the new owner gets them again, and idempotent handlers
make that a no-op).

**Stopping.** :meth:`stop` lets the event or batch in flight finish (up to
``stop_timeout_s``), commits it, and only then leaves the group; a backoff between retries
is cut short. **Dying.** If the loop ever ends by an error, it is logged with its traceback,
kept in :attr:`error`, and :attr:`running`/:attr:`healthy` turn false for readiness probes
and supervisors.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from referral_events import Envelope, EventData, EventError, Topic, UnknownEventType, decode

from .deadletter import dead_letter
from .settings import PlatformSettings

log = structlog.get_logger(__name__)

CONSUMED = Counter("events_consumed_total", "Events handled", ["consumer", "topic"])
DEAD_LETTERED = Counter("events_dead_lettered_total", "Events sent to a DLQ", ["consumer", "topic"])
RETRIES = Counter("event_handler_retries_total", "Transient handler failures", ["consumer"])
LOOP_DEATHS = Counter("event_consumer_loop_deaths_total",
                      "Consumer loops ended by an error (no more events consumed)", ["consumer"])
UNCOMMITTED = Counter("event_consumer_commits_skipped_total",
                      "Offset commits given up (partitions reassigned meanwhile)", ["consumer"])

Record = ConsumerRecord[bytes, bytes]
Handler = Callable[[Envelope[EventData], Record], Awaitable[None]]
BatchItem = tuple[Envelope[EventData], Record]
BatchHandler = Callable[[list[BatchItem]], Awaitable[Sequence[BaseException | None] | None]]
_Poll = tuple[dict[TopicPartition, list[Record]], list[BatchItem]]  # records, decoded (batch)


class PoisonEvent(Exception):
    """Raised by a handler for an event that can never be processed (dead-letter it)."""

    code = "rejected_by_handler"

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class _Stopping(Exception):
    """Internal: stop() was called while waiting to retry; leave the rest uncommitted."""


class _Membership(ConsumerRebalanceListener):
    def __init__(self, owner: EventConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("partitions revoked", consumer=self._owner.name,
                     partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))
        await self._owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner.rebalances += 1
        log.info("partitions assigned", consumer=self._owner.name,
                 partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
        self._owner._on_assigned(set(assigned))
        if assigned:
            self._owner.assigned.set()


class EventConsumer:
    def __init__(self, *, settings: PlatformSettings, topics: list[Topic], group_id: str,
                 name: str, producer: AIOKafkaProducer, handler: Handler | None = None,
                 batch_handler: BatchHandler | None = None, max_backoff_s: float = 5.0,
                 max_poll_records: int = 200, max_poll_interval_ms: int = 300_000,
                 session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 1_000,
                 rebalance_timeout_ms: int = 10_000, stop_timeout_s: float = 15.0,
                 unhealthy_after_s: float = 60.0, fetch_max_wait_ms: int | None = None) -> None:
        """``fetch_max_wait_ms``: None takes ``KAFKA_FETCH_MAX_WAIT_MS``."""
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler or batch_handler")
        self._settings = settings
        self._topics = {t.name: t for t in topics}
        self._types = {t.name: t.event_types for t in topics}
        self._group_id = group_id
        self.name = self._name = name
        self._handler = handler
        self._batch_handler = batch_handler
        self._producer = producer
        self._max_backoff = max_backoff_s
        self._max_poll_records = max_poll_records
        self._max_poll_interval_ms = max_poll_interval_ms
        self._timeouts = dict(session_timeout_ms=session_timeout_ms,
                              heartbeat_interval_ms=heartbeat_interval_ms,
                              rebalance_timeout_ms=rebalance_timeout_ms)
        # Poll paused partitions this often while busy: well within max_poll_interval.
        self._keepalive_s = min(5.0, max_poll_interval_ms / 1000 / 4)
        self._stop_timeout = stop_timeout_s
        self._unhealthy_after = unhealthy_after_s
        self._fetch_max_wait_ms = (settings.kafka_fetch_max_wait_ms if fetch_max_wait_ms is None
                                   else fetch_max_wait_ms)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failing_since: float | None = None
        self.assigned = asyncio.Event()
        self.rebalances = 0  # assignments received (the first join included)
        self.error: BaseException | None = None  # what ended the loop, if anything did

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            group_id=self._group_id,
            client_id=self._name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max_poll_records,
            max_poll_interval_ms=self._max_poll_interval_ms,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            **self._timeouts,
        )
        self._consumer.subscribe(list(self._topics), listener=_Membership(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-consume")
        self._task.add_done_callback(self._loop_ended)

    async def stop(self) -> None:
        """Finish the event or batch in flight (at most ``stop_timeout_s``; then it is
        cancelled, uncommitted), then leave the group."""
        self._stopping.set()
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=self._stop_timeout)
            if not self._task.done():
                log.warning("consumer did not finish its work in time; cancelling it",
                            consumer=self._name)
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        """The loop is alive (it may be retrying)."""
        return self._task is not None and not self._task.done()

    @property
    def healthy(self) -> bool:
        """Running, and not stuck retrying one poll's events for ``unhealthy_after_s``."""
        failing = self._failing_since
        return (self.running and not self._stopping.is_set()
                and (failing is None or time.monotonic() - failing < self._unhealthy_after))

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            if not self._stopping.is_set():
                log.error("consumer loop ended unexpectedly", consumer=self._name)
            return
        self.error = task.exception()
        LOOP_DEATHS.labels(self._name).inc()
        log.error("consumer loop died: no more events are consumed", consumer=self._name,
                  exc_info=self.error)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called as a rebalance takes ``revoked`` away (still assigned, still committable).
        Here nothing is in flight outside the loop, which commits as it goes."""

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Called with the new assignment after a rebalance."""

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        # Batch mode reads and decodes the next poll while the current one is handled (its
        # database work leaves the process idle): "ahead". It is handled only after the
        # current one has succeeded and been committed, so the order stays the same.
        ahead: asyncio.Task[_Poll | None] | None = None
        try:
            while not self._stopping.is_set():
                poll = await (ahead if ahead is not None else self._poll())
                ahead = None
                if poll is None or self._stopping.is_set():
                    continue
                work = asyncio.create_task(self._handle(poll), name=f"{self._name}-handle")
                if self._batch_handler is not None:
                    ahead = asyncio.create_task(self._poll(), name=f"{self._name}-ahead")
                try:
                    await self._while_busy(work, ahead)
                except asyncio.CancelledError:
                    work.cancel()
                    await asyncio.gather(work, return_exceptions=True)
                    raise
                await work
        except _Stopping:
            return
        finally:
            if ahead is not None:  # read but not handled: not committed, delivered again
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def _poll(self) -> _Poll | None:
        assert self._consumer is not None
        polled = await self._consumer.getmany(timeout_ms=500)
        if self._consumer.assignment():
            self.assigned.set()
        if not polled:
            return None
        items: list[BatchItem] = []
        if self._batch_handler is not None:
            decoded_since_yield = 0
            for records in polled.values():
                for record in records:
                    if (decoded := await self._decode(record)) is not None:
                        items.append((decoded, record))
                    decoded_since_yield += 1
                    if decoded_since_yield == 20:  # a read-ahead lets the handler run too
                        decoded_since_yield = 0
                        await asyncio.sleep(0)
        return polled, items

    async def _while_busy(self, work: asyncio.Task[None],
                          ahead: asyncio.Task[Any] | None) -> None:
        """Wait for ``work``; if it takes a while, pause the partitions and keep polling them
        so the broker keeps this member in the group (see the module doc)."""
        assert self._consumer is not None
        await asyncio.wait({work}, timeout=self._keepalive_s)
        if work.done():
            return
        if ahead is not None:  # one poll at a time: let the read-ahead finish first
            await asyncio.wait({ahead})
        consumer = self._consumer
        try:
            while not work.done():
                consumer.pause(*(consumer.assignment() - consumer.paused()))
                # Paused partitions return nothing; partitions assigned by a rebalance
                # meanwhile may: leave their records for later (the position goes back).
                try:
                    polled = await consumer.getmany(timeout_ms=0)
                except KafkaError as exc:  # a fetch error: the next real poll sees it again
                    log.warning("poll while busy failed", consumer=self._name, error=repr(exc))
                    polled = {}
                for tp, records in polled.items():
                    if records:
                        consumer.seek(tp, records[0].offset)
                await asyncio.wait({work}, timeout=self._keepalive_s)
        finally:
            consumer.resume(*consumer.paused())

    async def _handle(self, poll: _Poll) -> None:
        polled, items = poll
        if self._batch_handler is not None:
            await self._handle_batch(polled, items)
        else:
            await self._handle_each(polled)

    async def _handle_each(self, polled: dict[TopicPartition, list[Record]]) -> None:
        for tp, records in polled.items():
            done: int | None = None
            try:
                for record in records:
                    if self._stopping.is_set():
                        raise _Stopping
                    decoded = await self._decode(record)
                    if decoded is not None:
                        await self._retrying(record.topic, f"offset {record.offset}",
                                             lambda env=decoded, rec=record:
                                             self._one(env, rec))
                    done = record.offset + 1
            finally:
                if done is not None:
                    await self._commit({tp: done})

    async def _one(self, envelope: Envelope[EventData], record: Record) -> None:
        topic = self._topics[record.topic]
        try:
            assert self._handler is not None
            await self._handler(envelope, record)
        except PoisonEvent as exc:
            await self._dead_letter(topic, record, exc)
            return
        CONSUMED.labels(self._name, topic.name).inc()

    async def _handle_batch(self, polled: dict[TopicPartition, list[Record]],
                            items: list[BatchItem]) -> None:
        if items:
            first = items[0][1]
            await self._retrying(first.topic, f"batch of {len(items)} from offset {first.offset}",
                                 lambda: self._batch(items))
        await self._commit({tp: records[-1].offset + 1 for tp, records in polled.items()
                            if records})

    async def _batch(self, items: list[BatchItem]) -> None:
        assert self._batch_handler is not None
        try:
            outcomes = await self._batch_handler(items)
        except PoisonEvent as exc:
            if len(items) == 1:
                outcomes = [exc]
            else:  # which one? hand them over one by one (each retried on its own)
                for item in items:
                    await self._retrying(item[1].topic, f"offset {item[1].offset}",
                                         lambda one=item: self._batch([one]))
                return
        outcomes = list(outcomes) if outcomes is not None else [None] * len(items)
        if len(outcomes) != len(items):
            raise RuntimeError(f"batch handler returned {len(outcomes)} outcomes for "
                               f"{len(items)} events")
        for (_, record), outcome in zip(items, outcomes, strict=True):
            topic = self._topics[record.topic]
            if outcome is None:
                CONSUMED.labels(self._name, topic.name).inc()
            else:
                await self._dead_letter(topic, record, outcome)

    async def _retrying(self, topic: str, what: str, attempt: Callable[[], Awaitable[None]]
                        ) -> None:
        """Run ``attempt`` until it succeeds, backing off between tries; the traceback is
        logged on the first failure only. Raises _Stopping if stop() comes meanwhile."""
        failures = 0
        while True:
            try:
                await attempt()
                if failures:
                    log.info("handler succeeded after retrying", consumer=self._name,
                             topic=topic, at=what, attempts=failures + 1)
                    self._failing_since = None
                return
            except (asyncio.CancelledError, _Stopping):
                raise
            except Exception as exc:
                failures += 1
                RETRIES.labels(self._name).inc()
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                delay = min(self._max_backoff, 0.1 * 2 ** min(failures, 10))
                delay *= random.uniform(0.5, 1)  # noqa: S311 - jitter, not security
                if failures == 1:
                    log.exception("handler failed; retrying", consumer=self._name, topic=topic,
                                  at=what, delay=round(delay, 2))
                else:
                    log.warning("handler failed again; retrying", consumer=self._name,
                                topic=topic, at=what, attempt=failures, delay=round(delay, 2),
                                error=repr(exc))
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    continue
                raise _Stopping from exc

    async def _decode(self, record: Record) -> Envelope[EventData] | None:
        """The record's envelope, or None once it has been dead-lettered as undecodable."""
        topic = self._topics[record.topic]
        try:
            envelope = decode(record.value)
            if envelope.type not in self._types[topic.name]:
                raise UnknownEventType(
                    f"{envelope.type} does not belong on {topic.name}", field="type"
                )
            return envelope
        except EventError as exc:
            error = exc
        await self._retrying(record.topic, f"offset {record.offset}",
                             lambda: self._dead_letter(topic, record, error))
        return None

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit what is still ours. A partition taken away by a rebalance meanwhile is
        skipped: its new owner starts from the last commit and handles those events again,
        which idempotent handlers turn into no-ops."""
        assert self._consumer is not None
        owned = self._consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if len(mine) < len(offsets):
            UNCOMMITTED.labels(self._name).inc()
            log.warning("partitions reassigned while handling; not committing them",
                        consumer=self._name, partitions=sorted(
                            f"{tp.topic}:{tp.partition}" for tp in offsets if tp not in owned))
        if not mine:
            return
        try:
            await self._consumer.commit(mine)
        except KafkaError as exc:  # CommitFailedError after a rebalance, among others
            UNCOMMITTED.labels(self._name).inc()
            log.warning("offset commit failed; the events will be delivered again",
                        consumer=self._name, error=repr(exc))

    async def _dead_letter(self, topic: Topic, record: Record, exc: Exception) -> None:
        DEAD_LETTERED.labels(self._name, topic.name).inc()
        await dead_letter(self._producer, topic, key=record.key, value=record.value,
                          partition=record.partition, offset=record.offset, error=exc,
                          consumer=self._name)
