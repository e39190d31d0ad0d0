"""Publishes the outbox to Kafka, in order, from whichever process holds the relay lock.

Several API replicas and workers run a relay; a transaction-scoped advisory lock lets exactly
one publish at a time, which keeps registry versions and reward events in commit order.
A row is marked published only after the broker acknowledged it (acks=all); a crash between
the two republishes it, and consumers drop the duplicate by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import murmur2
from prometheus_client import Counter, Gauge

from .outbox import CHANNEL

log = structlog.get_logger(__name__)
PUBLISHED = Counter("rewards_outbox_published_total", "Outbox rows published")
BACKLOG = Gauge("rewards_outbox_backlog", "Outbox rows not yet published (seen by the relay)")
_LOCK = "hashtext('rewards-outbox-relay')"


class OutboxRelay:
    """Give it a started ``producer`` it shares with others, or a ``producer_factory``: then
    the relay connects (and reconnects) on its own, so the process serves while the broker is
    away and catches up when it returns; the outbox keeps everything meanwhile."""

    def __init__(self, pool: asyncpg.Pool, *, producer: AIOKafkaProducer | None = None,
                 producer_factory: Callable[[], AIOKafkaProducer] | None = None,
                 interval: float = 0.5, batch: int = 500,
                 retention: timedelta = timedelta(days=7)) -> None:
        if (producer is None) == (producer_factory is None):
            raise ValueError("give exactly one of producer or producer_factory")
        self._pool, self._producer, self._factory = pool, producer, producer_factory
        self._interval, self._batch, self._retention = interval, batch, retention
        self._next_prune = 0.0
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
        if self._factory is not None and self._producer is not None:
            await self._producer.stop()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _connect(self) -> AIOKafkaProducer:
        if self._producer is None:
            assert self._factory is not None
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

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
        producer = await self._connect()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(f"SELECT pg_try_advisory_xact_lock({_LOCK})"):
                return 0
            rows = await conn.fetch(
                "SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL "
                "ORDER BY id LIMIT $1", self._batch)
            if rows:
                await send_in_order(producer, rows)
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows])
                PUBLISHED.inc(len(rows))
            BACKLOG.set(await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"))
            if time.monotonic() >= self._next_prune:
                # Published rows are only kept for inspection; the topics are the record.
                self._next_prune = time.monotonic() + 60
                await conn.execute("DELETE FROM outbox WHERE published_at < now() - $1::interval",
                                   self._retention)
            return len(rows)


async def send_in_order(producer: AIOKafkaProducer, rows: list[Any]) -> None:
    """Queue ``rows`` (topic, key, value) as record batches, then wait for every ack.

    Each row goes to the partition the producer's default partitioner picks for its key
    (murmur2, as every Kafka client), and rows of one partition are queued in their order,
    so the order per key is kept. Building the batches here instead of one ``send`` per row
    costs a fraction of the time: the relay shares its process with a busy worker."""
    partitions: dict[str, list[int]] = {}
    building: dict[tuple[str, int], Any] = {}
    deliveries = []
    for n, row in enumerate(rows):
        topic, key, value = row["topic"], row["key"].encode(), row["value"]
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        partition = partition_for(key, len(partitions[topic]))
        partition = partitions[topic][partition]
        batch = building.get((topic, partition))
        if batch is None:
            batch = building[(topic, partition)] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
            batch = building[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise MessageSizeTooLargeError(f"outbox row of {len(value)} bytes for {topic}")
        if n % 100 == 99:
            await asyncio.sleep(0)  # let the process's other work run
    for (topic, partition), batch in building.items():
        if batch.record_count():
            batch.close()  # nothing else is added to it (another sender's message, say)
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*deliveries)


@lru_cache(maxsize=65_536)
def partition_for(key: bytes, count: int) -> int:
    """Index among the topic's sorted partitions, as aiokafka's DefaultPartitioner (and the
    Java client) hash a key."""
    return (murmur2(key) & 0x7FFFFFFF) % count
