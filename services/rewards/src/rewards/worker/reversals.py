"""Consume ``referral.reversals``: one transaction per event, keyed by the event id; and a
sweep that settles reversals whose conversion was decided after they arrived."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter
from referral_events import ConversionReversed, Envelope, TopicRegistry

from ..reversals import record_reversal, settle_waiting

log = structlog.get_logger(__name__)
CONSUMER = "rewards-reversals"
REVERSALS = Counter("rewards_reversals_total", "Reversals consumed, by outcome", ["outcome"])


class ReversalHandler:
    def __init__(self, pool: asyncpg.Pool, topics: TopicRegistry) -> None:
        self._pool, self._topics = pool, topics

    async def __call__(self, envelope: Envelope[Any], _record: Any) -> None:
        data = envelope.data
        if not isinstance(data, ConversionReversed):
            return
        async with self._pool.acquire() as conn, conn.transaction():
            first_time = await conn.fetchval(
                "INSERT INTO processed_events (event_id, consumer) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING RETURNING true", envelope.id, CONSUMER)
            if not first_time:
                return
            outcome = await record_reversal(conn, self._topics, envelope.id, data)
        REVERSALS.labels(outcome).inc()


class ReversalSweeper:
    """Settles waiting reversals of conversions decided since. The decision handler applies
    them as it creates the rewards; this is the safety net, and it marks reversals of
    conversions that earned nothing."""

    def __init__(self, pool: asyncpg.Pool, topics: TopicRegistry, *, interval: float,
                 batch: int = 100) -> None:
        self._pool, self._topics = pool, topics
        self._interval, self._batch = interval, batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reversal-sweeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                settled = await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: try again next round
                log.warning("reversal sweep failed", error=repr(exc))
                settled = 0
            if settled < self._batch:
                await asyncio.sleep(self._interval)

    async def sweep(self) -> int:
        """Settle one batch of waiting reversals whose conversion is decided; returns how
        many conversions were settled."""
        async with self._pool.acquire() as conn:
            due = await conn.fetch(
                "SELECT DISTINCT r.program_id, r.conversion_id FROM conversion_reversals r"
                " WHERE r.applied_at IS NULL AND EXISTS (SELECT 1 FROM referral_decisions d"
                "  WHERE d.program_id = r.program_id AND d.conversion_id = r.conversion_id)"
                " LIMIT $1", self._batch)
            for row in due:
                async with conn.transaction():
                    outcome = await settle_waiting(conn, self._topics, row["program_id"],
                                                   row["conversion_id"])
                REVERSALS.labels(f"swept_{outcome}").inc()
        return len(due)
