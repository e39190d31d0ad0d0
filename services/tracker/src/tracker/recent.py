"""What this replica recently had acknowledged by the broker, to answer repeats without
sending them again.

Only an answer, not the guarantee: events of one write carry a deterministic id
(``derived_id``), so downstream consumers drop a replay whichever replica sent it. This
memory lets a replica answer ``duplicate`` to a retry, give a repeated click the id of the
first one, and lets concurrent repeats of one write share a single send instead of racing.

Both memories are bounded (cachetools): least recently used idempotency keys, and repeat
clicks for a fixed time after the first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from enum import StrEnum
from typing import Generic, TypeVar

from cachetools import LRUCache, TTLCache

V = TypeVar("V")


class WriteStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class AcknowledgedMemory(Generic[V]):
    """Keys whose write the broker acknowledged (with a value each), plus writes in flight.

    Two ways to use it: :meth:`once` around one write, or, for many writes sent together,
    :meth:`recall` / :meth:`pending` / :meth:`begin` / :meth:`settle` by hand. ``store`` None
    disables the memory (nothing is recalled, nothing waits).
    """

    def __init__(self, store: MutableMapping[str, V] | None) -> None:
        self._store = store
        # Keys being written; the future is made only once somebody waits for the write.
        self._in_flight: dict[str, asyncio.Future[V | None] | None] = {}

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def __contains__(self, key: str) -> bool:
        return self._store is not None and key in self._store

    def recall(self, key: str) -> V | None:
        """The value of ``key``'s acknowledged write, if remembered."""
        return None if self._store is None else self._store.get(key)

    def pending(self, key: str) -> asyncio.Future[V | None] | None:
        """The write of ``key`` in flight: it resolves to its value, or None if it failed."""
        if key not in self._in_flight:
            return None
        done = self._in_flight[key]
        if done is None:
            done = self._in_flight[key] = asyncio.get_running_loop().create_future()
        return done

    def begin(self, key: str) -> None:
        """Mark ``key`` as being written; the caller must :meth:`settle` it."""
        if self._store is not None:
            self._in_flight[key] = None

    def settle(self, key: str, value: V | None) -> None:
        """End ``key``'s write: remember ``value`` (None: it failed) and wake its waiters."""
        if self._store is None:
            return
        if value is not None:
            self._store[key] = value
        done = self._in_flight.pop(key, None)
        if done is not None and not done.done():
            done.set_result(value)

    async def once(self, key: str, write: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """``write``'s value and True, unless ``key`` was written (or is being written)
        already: then the earlier value and False.

        A write that raises is not remembered, so a retry runs it again; a call arriving
        while the same key is in flight waits for it, then answers with its value if it
        succeeded or runs its own write if it failed.
        """
        if self._store is None:
            return await write(), True
        while True:
            value = self.recall(key)
            if value is not None:
                return value, False
            pending = self.pending(key)
            if pending is None:
                break
            await asyncio.wait([pending])  # not cancelled if this caller is
            if (value := pending.result()) is not None:
                return value, False
        self.begin(key)
        value = None
        try:
            value = await write()
        finally:
            self.settle(key, value)
        return value, True


class RecentWrites(AcknowledgedMemory[bool]):
    """The idempotency keys of the ``capacity`` most recently used acknowledged writes (a
    recalled key counts as used, so a write retried often stays remembered)."""

    def __init__(self, capacity: int) -> None:
        super().__init__(LRUCache(capacity) if capacity > 0 else None)

    async def write_once(self, key: str, write: Callable[[], Awaitable[None]]) -> WriteStatus:
        """Run ``write`` unless ``key`` was written (or is being written) already."""

        async def acknowledged() -> bool:
            await write()
            return True

        _, fresh = await self.once(key, acknowledged)
        return WriteStatus.ACCEPTED if fresh else WriteStatus.DUPLICATE


class RecentClicks(AcknowledgedMemory[str]):
    """Click ids by (code, visitor) for ``seconds`` after the click was recorded.

    The window starts at the counted click and a repeat does not extend it: a visitor who
    keeps clicking is counted again once an hour (by default), not never again.
    """

    def __init__(self, *, seconds: float, capacity: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        enabled = seconds > 0 and capacity > 0
        super().__init__(TTLCache(capacity, seconds, timer=clock) if enabled else None)
