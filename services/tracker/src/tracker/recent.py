"""Idempotency keys this replica has recently had acknowledged by the broker.

Only an answer, not the guarantee: events of one write carry a deterministic id
(``derived_id``), so downstream consumers drop a replay whichever replica sent it. This
memory lets a replica answer ``duplicate`` to a retry, and lets concurrent retries of the
same write share one send instead of racing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from enum import StrEnum


class WriteStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class RecentWrites:
    """A bounded, least-recently-used set of acknowledged keys plus the writes in flight."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._done: OrderedDict[str, None] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._done

    async def write_once(self, key: str, write: Callable[[], Awaitable[None]]) -> WriteStatus:
        """Run ``write`` unless ``key`` was written (or is being written) already.

        A write that raises is not remembered, so a retry runs it again; a call arriving
        while the same key is in flight waits for it, then answers ``duplicate`` if it
        succeeded or runs its own write if it failed.
        """
        while True:
            if key in self._done:
                self._done.move_to_end(key)
                return WriteStatus.DUPLICATE
            pending = self._in_flight.get(key)
            if pending is None:
                break
            await asyncio.wait([pending])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        try:
            await write()
            self._remember(key)
        finally:
            del self._in_flight[key]
            done.set_result(None)
        return WriteStatus.ACCEPTED

    def _remember(self, key: str) -> None:
        if self._capacity <= 0:
            return
        self._done[key] = None
        if len(self._done) > self._capacity:
            self._done.popitem(last=False)
