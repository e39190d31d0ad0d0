"""Publishes the outbox to Kafka, in order, from whichever process holds the relay lock.

Several API replicas and workers run a relay; a transaction-scoped advisory lock lets exactly
one publish at a time, which keeps registry versions and reward events in commit order.
A row is marked published only after the broker acknowledged it (acks=all); a crash between
the two republishes it, and consumers drop the duplicate by event id.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge

from .outbox import CHANNEL

log = structlog.get_logger(__name__)
PUBLISHED = Counter("rewards_outbox_published_total", "Outbox rows published")
BACKLOG = Gauge("rewards_outbox_backlog", "Outbox rows not yet published (last seen)")
_LOCK = "hashtext('rewards-outbox-relay')"


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, *,
                 interval: float = 0.5, batch: int = 500) -> None:
        self._pool, self._producer = pool, producer
        self._interval, self._batch = interval, batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> None:
        self._listener = await self._pool.acquire()
        await self._listener.add_listener(CHANNEL, self._notified)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(CHANNEL, self._notified)
            await self._pool.release(self._listener)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                published = await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database away: retry next round
                log.warning("outbox relay round failed", error=repr(exc))
                published = 0
            if published < self._batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)

    async def publish_once(self) -> int:
        """Publish one batch if this process holds the relay lock; returns rows published."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(f"SELECT pg_try_advisory_xact_lock({_LOCK})"):
                return 0
            rows = await conn.fetch(
                "SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL "
                "ORDER BY id LIMIT $1", self._batch)
            if not rows:
                BACKLOG.set(0)
                return 0
            deliveries = [await self._producer.send(r["topic"], r["value"], key=r["key"].encode())
                          for r in rows]
            await asyncio.gather(*deliveries)
            await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                               [r["id"] for r in rows])
            PUBLISHED.inc(len(rows))
            BACKLOG.set(max(0, len(rows) - self._batch))
            return len(rows)
