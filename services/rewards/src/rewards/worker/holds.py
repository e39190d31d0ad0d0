"""Approves rewards whose hold period is over. Safe with many workers: each due reward is
claimed with FOR UPDATE SKIP LOCKED, so two workers never approve the same one.

The scheduler looks for due rewards every ``interval`` seconds, and also when a reward it
was told about (:meth:`HoldScheduler.due`) comes due: the decision handler tells it the
hold end of each pending reward it created that ends within :data:`HORIZON`. A reward with a
short hold (``PT0S``, ``PT2S``) is so approved as its hold ends, in the small batches the
decisions come in, instead of at the next round in up to ``interval`` seconds, all of one
second's approvals (and their emails) at once.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable
from datetime import datetime, timedelta

import asyncpg
import structlog
from prometheus_client import Counter
from referral_events import TopicRegistry, utcnow

from ..lifecycle import approve

log = structlog.get_logger(__name__)
APPROVED = Counter("rewards_auto_approved_total", "Rewards approved when their hold ended")
#: hold ends further ahead are left to the periodic round (they are found within ``interval``)
HORIZON = timedelta(minutes=5)


class HoldScheduler:
    def __init__(self, pool: asyncpg.Pool, topics: TopicRegistry, *, interval: float,
                 batch: int = 200) -> None:
        self._pool, self._topics = pool, topics
        self._interval, self._batch = interval, batch
        self._task: asyncio.Task[None] | None = None
        self._ends: list[datetime] = []  # hold ends told of and not yet passed (a heap)
        self._told = asyncio.Event()

    def due(self, ends: Iterable[datetime]) -> bool:
        """Hold ends of pending rewards just committed: a round runs as each one passes.
        Returns whether any was taken (ends beyond :data:`HORIZON` are left to the rounds
        every ``interval``, and wake nothing)."""
        horizon = utcnow() + HORIZON
        taken = [end for end in ends if end <= horizon]
        for end in taken:
            heapq.heappush(self._ends, end)
        if taken:
            self._told.set()
        return bool(taken)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hold-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            # Hold ends passed by now are this round's. One told of during the round stays
            # for the next round: its reward may have committed after this round's snapshot.
            now = utcnow()
            while self._ends and self._ends[0] <= now:
                heapq.heappop(self._ends)
            try:
                approved = await self.approve_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: try again next round
                log.warning("hold scheduler round failed", error=repr(exc))
                await asyncio.sleep(self._interval)
                continue
            if approved < self._batch:
                await self._until_due()

    async def _until_due(self) -> None:
        """Return once ``interval`` is up or a hold end told of has passed (being told of
        one only recomputes the wait: a hold end still ahead runs no round)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._interval
        while True:
            wait = deadline - loop.time()
            if self._ends:
                wait = min(wait, (self._ends[0] - utcnow()).total_seconds())
            if wait <= 0:
                return
            self._told.clear()
            try:
                await asyncio.wait_for(self._told.wait(), wait)
            except TimeoutError:
                return

    async def approve_due(self) -> int:
        """Approve one batch of due pending rewards; returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                "SELECT id FROM rewards WHERE status = 'pending' AND available_at <= now() "
                "ORDER BY available_at LIMIT $1 FOR UPDATE SKIP LOCKED", self._batch)
            for row in due:
                await approve(conn, self._topics, row["id"])
        APPROVED.inc(len(due))
        return len(due)
