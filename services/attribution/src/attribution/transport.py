"""Faust's aiokafka transport, made to commit a source offset only once the agent decided it.

Faust commits the offsets its streams *acknowledge*, and a stream acknowledges more than the
agent handled: records it skips around a rebalance (stale generation, flow stopped) are
acknowledged as if processed, and its fetch loop drops records that arrive below its "read
offset" after a seek while marking the jump they leave as a gap that counts as processed. Each
of these was seen as attribution decisions missing after a kill -9 and restart
(docs/reliability.md): the records were committed, never decided, and never read again.

So the agent's own bookkeeping decides what is committed (:class:`SourcePositions`):

* after every seek to the committed offsets, each source partition is *positioned*: the next
  offset the agent must handle is the committed offset (or the partition's first offset when
  the group never committed it, and the partition is read from there: aiokafka alone leaves it
  wherever the fetcher was), unless the agent already handled more of it since it was
  assigned: then what is re-read up to there is skipped, not decided twice;
* the agent handles a record only if it is that next offset; a record above it means records
  were skipped, and the agent seeks the partition back (at most once a second per partition)
  instead of handling it, so events are still decided in partition order; a record below it
  was handled already;
* the commit offset of a source partition is that next offset, or the first offset whose
  outputs (decisions) the broker has not acknowledged yet, whichever is lower: the agent
  goes on to the next record without waiting for the acknowledgement; Faust's acknowledgements,
  gaps and read offsets are ignored for source partitions (changelog partitions keep Faust's
  rules): every record fetched reaches the agent, which alone decides what it handles;
* once a rebalance has ended and the flow runs, the source partitions are sought to their
  committed offsets again (recovery resumes them before it seeks them), retried until it
  succeeds;
* a partition whose next offset stays below the end of the log without moving is sought back
  too (:meth:`App.unstick`): a skipped record at the end of a partition has no successor to
  reveal the gap.

Records read twice are decided again identically (decisions are idempotent); nothing is
committed that the agent did not decide. This relies on private parts of faust-streaming
0.15.3 (``Consumer._new_offset``, ``_add_gap``, ``_read_offset``), which
tests/attribution/test_transport.py pins.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from prometheus_client import Counter

from .changelog import CommitTimeTable, acknowledged, send_changed

GAPS = Counter("attribution_source_gaps_total",
               "Source records skipped before the agent (the partition was sought back)",
               ["topic"])
#: a partition is sought back for the same missing offset at most this often
SEEK_BACK_SECONDS = 1.0


class Admit(enum.Enum):
    HANDLE = "handle"  # the next offset of its partition
    SEEN = "seen"  # below it: handled already
    AHEAD = "ahead"  # above it: records before it were skipped
    UNPOSITIONED = "unpositioned"  # no seek since the partition was assigned


class SourcePositions:
    """The next offset the agent must handle on each source partition it was given."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self._next: dict[TP, int] = {}
        self._sought: dict[TP, tuple[int, float]] = {}  # tp → (offset, when) of a seek back
        self._moved: dict[TP, tuple[int, float]] = {}  # tp → (next, since when unchanged)
        # tp → (offset, its outputs not yet acknowledged), in offset order
        self._unconfirmed: dict[TP, deque[tuple[int, Sequence[asyncio.Future[Any]]]]] = {}

    def position(self, offsets: Mapping[TP, int]) -> None:
        """The source partitions were sought to ``offsets`` (their committed offsets): handle
        from there, or from further on where the agent already handled more since the
        partition was assigned (a re-seek then re-reads records the agent skips as seen,
        instead of deciding them twice)."""
        for tp, offset in offsets.items():
            if tp.topic in self.topics:
                current = self._next.get(tp)
                self._next[tp] = offset if current is None else max(current, offset)
                self._sought.pop(tp, None)

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._next.pop(tp, None)
            self._sought.pop(tp, None)
            self._moved.pop(tp, None)
            self._unconfirmed.pop(tp, None)

    def admit(self, tp: TP, offset: int) -> Admit:
        expected = self._next.get(tp)
        if expected is None:
            return Admit.UNPOSITIONED
        if offset == expected:
            return Admit.HANDLE
        return Admit.SEEN if offset < expected else Admit.AHEAD

    def handled(self, tp: TP, offset: int,
                outputs: Sequence[asyncio.Future[Any]] = ()) -> None:
        """The agent is done with ``offset``; ``outputs``: what it sent for it, awaiting
        the broker's acknowledgement (``offset`` is committed only once they all have it; a
        failed or cancelled one holds it back for good: the record is decided again after a
        restart)."""
        self._next[tp] = offset + 1
        if not all(map(acknowledged, outputs)):
            self._unconfirmed.setdefault(tp, deque()).append((offset, outputs))

    def next_offset(self, tp: TP) -> int | None:
        """What may be committed for ``tp``: everything below it was decided, and what the
        decisions sent was acknowledged."""
        waiting = self._unconfirmed.get(tp)
        while waiting:
            offset, outputs = waiting[0]
            if not all(map(acknowledged, outputs)):
                return offset
            waiting.popleft()
        return self._next.get(tp)

    def should_seek_back(self, tp: TP, now: float | None = None) -> int | None:
        """The offset to seek ``tp`` back to, unless that was done less than a second ago."""
        expected = self._next.get(tp)
        if expected is None:
            return None
        now = time.monotonic() if now is None else now
        last = self._sought.get(tp)
        if last is not None and last[0] == expected and now - last[1] < SEEK_BACK_SECONDS:
            return None
        self._sought[tp] = (expected, now)
        return expected

    def stuck(self, ends: Mapping[TP, int], *, after: float,
              now: float | None = None) -> dict[TP, int]:
        """Partitions whose next offset is below ``ends`` and has not moved for ``after``
        seconds: the offset to seek each back to."""
        now = time.monotonic() if now is None else now
        due: dict[TP, int] = {}
        for tp, expected in list(self._next.items()):
            end = ends.get(tp)
            if end is None or expected >= end:
                self._moved.pop(tp, None)
                continue
            seen = self._moved.get(tp)
            if seen is None or seen[0] != expected:
                self._moved[tp] = (expected, now)
            elif now - seen[1] >= after:
                self._moved[tp] = (expected, now)
                due[tp] = expected
        return due


class ResettingConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust fixes fetch_max_wait_ms at 1,500. Apache Kafka answers a fetch as soon as
        # records arrive, but the embedded broker holds it for the whole wait: ~0.4 s of
        # latency per event there (KAFKA_FETCH_MAX_WAIT_MS). Read by start().
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed_or_reset)

    async def _seek_to_committed_or_reset(self) -> Mapping[TP, int]:
        consumer: AIOKafkaConsumer = self._ensure_consumer()
        committed: Mapping[TP, int] = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        unset = [tp for tp, offset in committed.items()
                 if (offset is None or offset <= 0) and tp.topic not in changelogs]
        if unset:
            # Explicit offsets, not seek_to_beginning/end: those leave the position unknown
            # until the fetcher resolves it, and Faust's livelock check then crashes the
            # worker (AssertionError in aiokafka's TopicPartitionState.position).
            if self.app.conf.consumer_auto_offset_reset == "latest":
                starts = await consumer.end_offsets(unset)
            else:
                starts = await consumer.beginning_offsets(unset)
            for tp in unset:
                consumer.seek(tp, starts[tp])
        self.log.info("source partitions sought: %s", ", ".join(
            f"{tp.topic}:{tp.partition}@{offset if offset and offset > 0 else 'start'}"
            for tp, offset in sorted(committed.items()) if tp.topic not in changelogs))
        return committed

    def verify_event_path(self, now: float, tp: TP) -> Any:
        """Faust's livelock check, skipped for a partition whose position aiokafka is still
        resolving (an offset reset): it would read the position and crash the worker."""
        try:
            state = self._ensure_consumer()._fetcher._subscriptions.subscription \
                .assignment.state_value(TopicPartition(tp.topic, tp.partition))
        except AttributeError:  # no subscription or assignment right now
            return None
        if state is None or not state.has_valid_position:
            return None
        return super().verify_event_path(now, tp)


class _ReadOffsets(defaultdict[TP, int | None]):
    """Faust's last-read offset per partition, which its fetch loop uses to drop records
    below it; blind (always None) for source partitions, where the agent orders records by
    itself: after a seek back, records still in flight from before it would raise the read
    offset again and make the fetch loop drop the very records the seek was for."""

    def __init__(self, is_source: Callable[[TP], bool]) -> None:
        super().__init__(lambda: None)
        self._is_source = is_source

    def __getitem__(self, tp: TP) -> int | None:
        return None if self._is_source(tp) else super().__getitem__(tp)


class ResettingConsumer(driver.Consumer):
    """Commits a source partition up to what the agent decided (:class:`SourcePositions`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _ReadOffsets(self._is_source)

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ResettingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _positions(self) -> SourcePositions | None:
        return getattr(self.app, "source_positions", None)

    def _is_source(self, tp: TP) -> bool:
        positions = self._positions
        return positions is not None and tp.topic in positions.topics

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        positions = self._positions
        if positions is not None:
            sources = {tp: offset for tp, offset in committed.items()
                       if tp.topic in positions.topics}
            unset = [tp for tp, offset in sources.items() if offset is None or offset <= 0]
            if unset:
                if self.app.conf.consumer_auto_offset_reset == "latest":
                    starts = await self.highwaters(*unset)
                else:
                    starts = await self.earliest_offsets(*unset)
                sources.update({tp: starts[tp] for tp in unset})
            positions.position(sources)
        return committed

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super().on_partitions_revoked(revoked)
        if self._positions is not None:
            self._positions.forget(revoked)

    def _new_offset(self, tp: TP) -> int | None:
        positions = self._positions
        if positions is None or tp.topic not in positions.topics:
            return super()._new_offset(tp)
        self._acked[tp].clear()  # acknowledgements are not decisions: see the module doc
        self._acked_index[tp].clear()
        return positions.next_offset(tp)

    async def _commit_offsets(self, offsets: Mapping[TP, int],
                              start_new_transaction: bool = True) -> bool:
        # ``offsets`` were computed from what the agent had finished: the tables' changes
        # since the last commit include all of theirs (attribution.changelog)
        if not await send_changed(self.app.tables.values()):
            self.log.warning("changelog records were refused: offsets not committed, the "
                             "records are sent again with the next commit")
            return False
        committed: bool = await super()._commit_offsets(offsets, start_new_transaction)
        return committed

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        positions = self._positions
        if positions is None or tp.topic not in positions.topics:
            await super()._add_gap(tp, offset_from, offset_to)


class Transport(driver.Transport):
    Consumer = ResettingConsumer


class App(faust.App):
    """A :class:`faust.App` whose consumer commits source partitions by
    :attr:`source_positions` (kafka:// only), and that seeks its source partitions again
    once a rebalance has ended."""

    source_positions: SourcePositions | None = None
    fetch_max_wait_ms: int | None = None
    """The consumer's fetch wait (KAFKA_FETCH_MAX_WAIT_MS); None keeps Faust's 1,500 ms."""
    _reseek: asyncio.Task[None] | None = None

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    async def _producer_flush(self, logger: Any) -> None:
        # partitions are being given up: what the tables changed goes first (the next
        # owner recovers from it), before Faust's flush waits for the producer. Not when
        # the app stops: the consumer's last commit sent what its offsets need.
        if not self.should_stop:
            await send_changed(self.tables.values())
        await super()._producer_flush(logger)

    async def _on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super()._on_partitions_revoked(revoked)
        for table in self.tables.values():
            if isinstance(table, CommitTimeTable):
                table.forget_changed(revoked)  # could not be sent: handled again elsewhere

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        if self._reseek is not None:
            self._reseek.cancel()  # a newer rebalance ended: seek for that one
        self._reseek = asyncio.ensure_future(self._seek_sources_to_committed())

    async def _seek_sources_to_committed(self) -> None:
        backoff = 0.2
        while not (self.rebalancing or self.should_stop) and self.consumer.assignment():
            try:
                await self.consumer.perform_seek()
            except Exception as exc:  # never crash the worker: its sources wait unpositioned
                self.log.warning("seek to committed offsets after rebalance failed, "
                                 "retrying in %.1fs: %r", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                self.log.info("Source partitions re-positioned at their committed offsets.")
                return
        # a rebalance started (its end seeks again), or the worker stops

    async def seek_back(self, tp: TP, offset: int, reason: str) -> None:
        """Read ``tp`` again from ``offset``: records from there were not handled."""
        GAPS.labels(tp.topic).inc()
        self.log.warning("%s: seeking %s:%s back to %s", reason, tp.topic, tp.partition,
                         offset)
        try:
            await self.consumer.seek(tp, offset)
        except Exception as exc:  # revoked meanwhile: the next assignment positions it
            self.log.warning("seek back of %s:%s failed: %r", tp.topic, tp.partition, exc)

    async def unstick(self, *, after: float) -> None:
        """Seek back source partitions whose next offset is below the end of the log and
        has not moved for ``after`` seconds."""
        positions = self.source_positions
        if positions is None or self.rebalancing:
            return
        assigned = [tp for tp in self.consumer.assignment() if tp.topic in positions.topics]
        ends = {tp: end for tp in assigned if (end := self._log_end(tp)) is not None}
        for tp, offset in positions.stuck(ends, after=after).items():
            await self.seek_back(tp, offset, "source partition stalled below its end")

    def _log_end(self, tp: TP) -> int | None:
        try:
            return self.consumer.highwater(tp)
        except Exception:  # revoked meanwhile; None (no fetch yet) means the same: unknown
            return None
