"""Approves rewards whose hold period is over. Safe with many workers: each due reward is
claimed with FOR UPDATE SKIP LOCKED, so two workers never approve the same one."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog
from prometheus_client import Counter
from referral_events import TopicRegistry

from ..lifecycle import approve

log = structlog.get_logger(__name__)
APPROVED = Counter("rewards_auto_approved_total", "Rewards approved when their hold ended")


class HoldScheduler:
    def __init__(self, pool: asyncpg.Pool, topics: TopicRegistry, *, interval: float,
                 batch: int = 200) -> None:
        self._pool, self._topics = pool, topics
        self._interval, self._batch = interval, batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hold-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                approved = await self.approve_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: try again next round
                log.warning("hold scheduler round failed", error=repr(exc))
                approved = 0
            if approved < self._batch:
                await asyncio.sleep(self._interval)

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
