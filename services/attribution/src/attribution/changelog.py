"""Tables that write their changelog when offsets are committed: one record per key changed
since the last commit (its value then), instead of one record per write.

A Faust table sends a changelog record on every write. The attribution agent writes one to
three entries per event (a code's click log, an hourly bucket, a decided conversion), so most
of its CPU went into producing changelog records, most of them overwritten a moment later (a
code's click log changes with every click of that code). The changelog only has to hold, at
every committed source offset, a state that includes every event below that offset:

* a write marks its key (with the partition of the event being handled, as Faust would have
  sent it to);
* before offsets are committed (:meth:`attribution.transport.ResettingConsumer._commit_offsets`,
  whose offsets were computed from what the agent had *finished*), every marked key's current
  value is sent, and the commit waits until the broker acknowledged them all;
* before partitions are given up in a rebalance (:meth:`attribution.transport.App._producer_flush`)
  the same, so the next owner recovers every write.

The state recovered after a crash can be ahead of the committed offset (a write sent, its
offset not committed yet): the events from there are handled again, which the agent does
idempotently (a click already in the log changes nothing; a conversion already decided is
recognised). That was already so with a record per write, whose sends also precede the commit.
What a crash loses is the writes not sent yet, whose offsets are not committed either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.types import TP
from faust.types.tuples import FutureMessage


def acknowledged(output: asyncio.Future[Any]) -> bool:
    """The send succeeded: done, not cancelled, no exception."""
    return output.done() and not output.cancelled() and output.exception() is None


SEND_SLICE = 100
"""Changed keys handed to the producer at a time (see :meth:`CommitTimeTable.send_changed`)."""


class CommitTimeTable(faust.Table):
    """A :class:`faust.Table` whose changelog is sent by :meth:`send_changed`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changed: dict[Any, int] = {}  # key → partition, since the last send

    def on_key_set(self, key: Any, value: Any) -> None:
        partition = self.partition_for_key(key)
        assert partition is not None  # use_partitioner is off: the event's own partition
        self._changed[key] = partition
        self._maybe_set_key_ttl(key, partition)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        partition = self.partition_for_key(key)
        assert partition is not None
        self._changed[key] = partition
        self._maybe_del_key_ttl(key, partition)
        self._sensor_on_del(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        """A read straight from the store (0.6 µs, not 3 to 4: ``Mapping.get`` goes through
        ``__getitem__``, a sensor call and, for a missing key, a KeyError). Only without a
        default factory, which would have to create the missing entry."""
        if self.default is not None:
            return super().get(key, default)
        return self.data.get(key, default)

    @property
    def changed(self) -> int:
        """Keys written since the last send."""
        return len(self._changed)

    async def send_changed(self) -> dict[Any, tuple[int, FutureMessage]]:
        """Hand every key changed since the last call to the producer with its current value
        (a deleted key as a tombstone): key → (partition, the send's future).

        :data:`SEND_SLICE` keys at a time, each slice acknowledged before the next: a commit
        sends thousands of records (a click log is a few KB), and handed over at once they
        held the event loop and then the broker for a while, every decision behind them
        (docs/performance.md). What the agent changes meanwhile is sent with the next
        commit, or already now if its key is still to come."""
        changed, self._changed = self._changed, {}
        data, sent = self.data, {}
        slice_: list[FutureMessage] = []
        for key, partition in changed.items():
            if len(slice_) >= SEND_SLICE:
                await asyncio.wait(slice_)
                slice_ = []
            try:
                value = data[key]
            except KeyError:
                fut = self.send_changelog(partition, key, None, value_serializer="raw")
            else:
                fut = self.send_changelog(partition, key, value)
            sent[key] = (partition, fut)
            slice_.append(fut)
        return sent

    def mark_changed(self, keys: Mapping[Any, int]) -> None:
        """Send ``keys`` (key → partition) again with the next call (their send failed)."""
        for key, partition in keys.items():
            self._changed.setdefault(key, partition)

    def forget_changed(self, revoked: Iterable[TP]) -> None:
        """Drop the marks of keys in revoked partitions: their events were not committed,
        and the next owner handles them again (a late send would overwrite its records)."""
        partitions = {tp.partition for tp in revoked if tp.topic == self.changelog_topic_name}
        if partitions:
            self._changed = {k: p for k, p in self._changed.items() if p not in partitions}


async def send_changed(tables: Iterable[Any]) -> bool:
    """Send the changed keys of every :class:`CommitTimeTable` in ``tables`` and wait until
    the broker has them. False if any send failed: those keys are sent again next time."""
    sent = [(table, await table.send_changed()) for table in tables
            if isinstance(table, CommitTimeTable)]
    futures = [fut for _, batch in sent for _, fut in batch.values()]
    if not futures:
        return True
    await asyncio.gather(*futures, return_exceptions=True)
    ok = True
    for table, batch in sent:
        failed = {key: partition for key, (partition, fut) in batch.items()
                  if not acknowledged(fut)}
        if failed:
            table.mark_changed(failed)
            ok = False
    return ok
