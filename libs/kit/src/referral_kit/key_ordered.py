"""A consumer loop without a poll barrier: each record key in order, different keys at once.

:class:`~referral_kit.consuming.EventConsumer` hands its handler a poll and reads the next one
only once the slowest event of this one is done, so one slow answer (an SMTP server taking
a second) holds up every key behind it. :class:`KeyOrderedConsumer` keeps polling while
events are handled:

* each record becomes a task that first waits for the previous record with the same key in
  the same partition (a referrer never gets "approved" before "pending"), then takes one of
  ``concurrency`` slots to run the handler;
* a partition is committed up to its first record not yet done, so a crash or a rebalance
  replays from there, and idempotent handlers make the replay a no-op;
* at most ``max_pending`` records are held; beyond that its partitions are paused and still
  polled, so the member stays in the group (as EventConsumer does while busy).

Failures are EventConsumer's: undecodable records and :class:`PoisonEvent` go to the
dead-letter topic; any other ``Exception`` is retried with backoff in place, holding back
only that key and the commit of its partition. A ``BaseException`` that is not an
``Exception`` ends the loop (:attr:`error`), as it does there.

**Rebalance.** Revoked partitions are drained: the records whose handler is running finish
(up to ``drain_timeout_s``) and are committed; the others do not start, and are handled
again by whoever gets the partition. **Stopping.** No handler call starts after
:meth:`stop`; those running finish (up to ``stop_timeout_s``) and are committed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import Gauge
from referral_events import Envelope, EventData

from .consuming import EventConsumer, Handler, Record, _Stopping

PENDING = Gauge("event_consumer_pending_events",
                "Records read and not yet done (handled or dead-lettered)", ["consumer"])

_Key = tuple[TopicPartition, bytes | None]


class KeyOrderedConsumer(EventConsumer):
    def __init__(self, *, handler: Handler, concurrency: int = 32,
                 max_pending: int | None = None, drain_timeout_s: float | None = None,
                 **options: Any) -> None:
        """``max_pending`` defaults to eight records per slot (at least a poll's worth);
        ``drain_timeout_s`` to half the rebalance timeout, so the member rejoins in time."""
        super().__init__(handler=handler, **options)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._slots = asyncio.Semaphore(concurrency)
        self._max_pending = max_pending or max(8 * concurrency, self._max_poll_records)
        rebalance_s = self._timeouts["rebalance_timeout_ms"] / 1000
        self._drain_timeout = (min(self._stop_timeout, rebalance_s / 2)
                               if drain_timeout_s is None else drain_timeout_s)
        self._queues: dict[TopicPartition, deque[tuple[int, asyncio.Task[None]]]] = {}
        self._tails: dict[_Key, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._revoked: set[TopicPartition] = set()  # until the next assignment
        self._room = asyncio.Event()  # set while fewer than max_pending are held
        self._room.set()
        self._fatal: BaseException | None = None
        self._committing = asyncio.Lock()  # the loop and a drain: offsets never go back
        self._pending_gauge = PENDING.labels(self._name)

    async def stop(self) -> None:
        self._stopping.set()
        self._room.set()  # wake a loop waiting for room
        await super().stop()

    @property
    def pending(self) -> int:
        """Records read and not yet done."""
        return len(self._tasks)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        try:
            while not self._stopping.is_set():
                full = len(self._tasks) >= self._max_pending
                if full:
                    consumer.pause(*(consumer.assignment() - consumer.paused()))
                    try:
                        async with asyncio.timeout(self._keepalive_s):
                            await self._room.wait()
                    except TimeoutError:
                        pass
                elif consumer.paused():
                    consumer.resume(*consumer.paused())
                if self._fatal is not None:
                    raise self._fatal
                if self._stopping.is_set():
                    break
                # Paused partitions return nothing, but the poll keeps the member alive;
                # partitions a rebalance assigned meanwhile are not paused yet and may.
                polled = await consumer.getmany(timeout_ms=0 if full else 500)
                if consumer.assignment():
                    self.assigned.set()
                for tp, records in polled.items():
                    if tp not in self._revoked:
                        for record in records:
                            self._schedule(tp, record)
                self._pending_gauge.set(len(self._tasks))
                await self._commit_done(list(self._queues))
        finally:
            # Stopping: let what runs finish, within stop()'s own wait. Dying: cancel now.
            timeout = max(0.0, self._stop_timeout - 1) if self._stopping.is_set() else 0.0
            await self._drain(list(self._queues), timeout)
            self._pending_gauge.set(len(self._tasks))

    def _schedule(self, tp: TopicPartition, record: Record) -> None:
        key = (tp, record.key)
        task = asyncio.create_task(self._handle_record(tp, record, self._tails.get(key)))
        self._tails[key] = task
        self._tasks.add(task)
        self._queues.setdefault(tp, deque()).append((record.offset, task))
        task.add_done_callback(partial(self._record_done, key))
        if len(self._tasks) >= self._max_pending:
            self._room.clear()

    def _record_done(self, key: _Key, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]
        if len(self._tasks) < self._max_pending:
            self._room.set()
        if not task.cancelled():
            error = task.exception()  # retrieved here, always (no "never retrieved")
            if error is not None and not isinstance(error, _Stopping) and self._fatal is None:
                self._fatal = error  # escaped every retry: the loop ends with it
                self._room.set()

    async def _handle_record(self, tp: TopicPartition, record: Record,
                             previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            if not previous.done():
                await asyncio.wait((previous,))
            if not _succeeded(previous):  # never out of order: this one waits for a replay
                raise _Stopping
        self._check_still_wanted(tp)
        envelope = await self._decode(record)
        if envelope is not None:
            await self._retrying(record.topic, f"offset {record.offset}",
                                 partial(self._attempt, tp, envelope, record))

    async def _attempt(self, tp: TopicPartition, envelope: Envelope[EventData],
                       record: Record) -> None:
        async with self._slots:  # held per attempt: a backoff frees the slot
            self._check_still_wanted(tp)
            await self._one(envelope, record)

    def _check_still_wanted(self, tp: TopicPartition) -> None:
        if self._stopping.is_set() or tp in self._revoked:
            raise _Stopping

    # -- commits, rebalances ----------------------------------------------------------------

    def _done_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Per partition, the offset after its longest run of done records (popped)."""
        offsets = {}
        for tp in partitions:
            queue = self._queues.get(tp)
            done = None
            while queue and _succeeded(queue[0][1]):
                done = queue.popleft()[0] + 1
            if done is not None:
                offsets[tp] = done
        return offsets

    async def _commit_done(self, partitions: list[TopicPartition]) -> None:
        async with self._committing:
            if offsets := self._done_offsets(partitions):
                await self._commit(offsets)

    async def _drain(self, partitions: list[TopicPartition], wait_s: float) -> None:
        """Wait up to ``wait_s`` for the records of ``partitions`` in flight, commit what is
        done, cancel the rest and forget the partitions."""
        tasks = {task for tp in partitions for _, task in self._queues.get(tp, ())}
        try:
            if tasks and wait_s > 0:
                await asyncio.wait(tasks, timeout=wait_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._commit_done(partitions)
            for tp in partitions:
                self._queues.pop(tp, None)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._revoked |= revoked
        await self._drain([tp for tp in revoked if tp in self._queues], self._drain_timeout)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._revoked.clear()  # fetching restarts from the committed offsets


def _succeeded(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
