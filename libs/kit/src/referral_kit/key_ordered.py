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
* it reads ahead only while fewer than ``2 * concurrency`` records wait or run (the backlog
  stays in the broker, where every partition gets its turn), and while fewer than
  ``max_held`` are read and not yet committed (an event retried for long holds every later
  record of its partition). When nothing gets done for a few seconds, its partitions are
  paused and still polled, so the member stays in the group (as EventConsumer does while
  busy).

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
import time
from collections import deque
from functools import partial
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import Gauge
from referral_events import Envelope, EventData

from .consuming import EventConsumer, Handler, Record, _Stopping

HELD = Gauge("event_consumer_held_events",
             "Records read and not yet committed (in flight, waiting, or done behind one "
             "that is not)", ["consumer"])

_Key = tuple[TopicPartition, bytes | None]


class KeyOrderedConsumer(EventConsumer):
    #: Done records are committed this often at most (and at once when the held limit is
    #: reached): a commit is a broker request, and records get done one at a time.
    COMMIT_INTERVAL_S = 0.2

    def __init__(self, *, handler: Handler, concurrency: int = 32,
                 max_held: int | None = None, drain_timeout_s: float | None = None,
                 **options: Any) -> None:
        """``max_held`` defaults to 32 records per slot, at least 1,024 and two polls' worth
        (a record done costs an int until committed); ``drain_timeout_s`` to half the
        rebalance timeout, so the member rejoins in time."""
        super().__init__(handler=handler, **options)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._slots = asyncio.Semaphore(concurrency)
        self._max_held = max_held or max(1024, 32 * concurrency, 2 * self._max_poll_records)
        self._max_open = 2 * concurrency
        rebalance_s = self._timeouts["rebalance_timeout_ms"] / 1000
        self._drain_timeout = (min(self._stop_timeout, rebalance_s / 2)
                               if drain_timeout_s is None else drain_timeout_s)
        # Per partition: the offsets read and not committed, in order; and of those, the ones
        # not done yet (or stopped or cancelled: the commit never passes them).
        self._queues: dict[TopicPartition, deque[int]] = {}
        self._open: dict[TopicPartition, dict[int, asyncio.Task[None]]] = {}
        self._tails: dict[_Key, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # not done
        self._revoked: set[TopicPartition] = set()  # until the next assignment
        self._progress = asyncio.Event()  # a record got done (or the loop must wake)
        self._fatal: BaseException | None = None
        self._committing = asyncio.Lock()  # the loop and a drain: offsets never go back
        self._held_gauge = HELD.labels(self._name)
        self._committed_at = 0.0

    async def stop(self) -> None:
        self._stopping.set()
        self._progress.set()  # wake a loop waiting for room
        await super().stop()

    @property
    def held(self) -> int:
        """Records read and not yet committed."""
        return sum(map(len, self._queues.values()))

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        try:
            while not self._stopping.is_set():
                self._progress.clear()
                now = time.monotonic()
                if (now - self._committed_at >= self.COMMIT_INTERVAL_S
                        or self.held >= self._max_held):
                    self._committed_at = now
                    await self._commit_done(list(self._queues))
                if self.held >= self._max_held or len(self._tasks) >= self._max_open:
                    await self._wait_for_room()
                else:
                    if consumer.paused():
                        consumer.resume(*consumer.paused())
                    self._schedule_all(await consumer.getmany(timeout_ms=500))
                if self._fatal is not None:
                    raise self._fatal
        finally:
            # Stopping: let what runs finish, within stop()'s own wait. Dying: cancel now.
            timeout = max(0.0, self._stop_timeout - 1) if self._stopping.is_set() else 0.0
            await self._drain(list(self._queues), timeout)
            self._held_gauge.set(self.held)

    async def _wait_for_room(self) -> None:
        """Wait for a record to get done; if none does for a while, poll the partitions
        paused, only to stay in the group (they return nothing; partitions a rebalance
        assigned meanwhile are not paused yet and may)."""
        assert self._consumer is not None
        try:
            async with asyncio.timeout(self._keepalive_s):
                await self._progress.wait()
            return
        except TimeoutError:
            pass
        consumer = self._consumer
        consumer.pause(*(consumer.assignment() - consumer.paused()))
        self._schedule_all(await consumer.getmany(timeout_ms=0))

    def _schedule_all(self, polled: dict[TopicPartition, list[Record]]) -> None:
        if self._consumer is not None and self._consumer.assignment():
            self.assigned.set()
        for tp, records in polled.items():
            if tp not in self._revoked:
                for record in records:
                    self._schedule(tp, record)
        self._held_gauge.set(self.held)

    def _schedule(self, tp: TopicPartition, record: Record) -> None:
        key = (tp, record.key)
        task = asyncio.create_task(self._handle_record(tp, record, self._tails.get(key)))
        self._tails[key] = task
        self._tasks.add(task)
        self._queues.setdefault(tp, deque()).append(record.offset)
        self._open.setdefault(tp, {})[record.offset] = task
        task.add_done_callback(partial(self._record_done, key, record.offset))

    def _record_done(self, key: _Key, offset: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]
        if _succeeded(task):
            if (open_ := self._open.get(key[0])) is not None:
                open_.pop(offset, None)
            self._progress.set()
        elif not task.cancelled():
            error = task.exception()  # retrieved here, always (no "never retrieved")
            if not isinstance(error, _Stopping) and self._fatal is None:
                self._fatal = error  # escaped every retry: the loop ends with it
                self._progress.set()

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
            queue, open_ = self._queues.get(tp), self._open.get(tp, {})
            done = None
            while queue and queue[0] not in open_:
                done = queue.popleft() + 1
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
        tasks = {task for tp in partitions for task in self._open.get(tp, {}).values()
                 if not task.done()}
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
                self._open.pop(tp, None)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._revoked |= revoked
        await self._drain([tp for tp in revoked if tp in self._queues], self._drain_timeout)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._revoked.clear()  # fetching restarts from the committed offsets


def _succeeded(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
