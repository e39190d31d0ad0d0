"""Consume ``referral.stats`` into the stats store, one transaction per poll.

Each poll's records are de-duplicated per bucket and upserted in one statement; offsets are
committed only after that transaction, so a crash replays the batch, which the version
check turns into a no-op. Records that cannot be decoded go to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import Counter
from referral_events import EventError, ReferralStatsCounted, Topic, UnknownEventType, decode
from referral_kit.deadletter import dead_letter
from referral_kit.settings import PlatformSettings

from ..stats_store import store_hourly_counts

log = structlog.get_logger(__name__)
CONSUMER = "rewards-stats"
STORED = Counter("rewards_stats_buckets_stored_total", "Hourly stats buckets upserted")


class StatsConsumer:
    def __init__(self, *, settings: PlatformSettings, topic: Topic, group_id: str,
                 pool: asyncpg.Pool, producer: AIOKafkaProducer, max_records: int = 1000,
                 max_backoff_s: float = 5.0) -> None:
        self._settings, self._topic, self._group_id = settings, topic, group_id
        self._pool, self._producer = pool, producer
        self._max_records, self._max_backoff = max_records, max_backoff_s
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self._topic.name, bootstrap_servers=self._settings.kafka_bootstrap_servers,
            group_id=self._group_id, client_id=CONSUMER, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=self._max_records,
            fetch_max_wait_ms=self._settings.kafka_background_fetch_max_wait_ms,
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000, rebalance_timeout_ms=10_000)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="stats-consume")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500,
                                                   max_records=self._max_records)
            if not batches:
                continue
            counts: list[ReferralStatsCounted] = []
            for records in batches.values():
                for record in records:
                    if (data := await self._decode(record)) is not None:
                        counts.append(data)
            await self._store(counts)
            await self._consumer.commit(
                {tp: records[-1].offset + 1 for tp, records in batches.items() if records})

    async def _decode(self, record: Any) -> ReferralStatsCounted | None:
        try:
            envelope = decode(record.value)
            if not isinstance(envelope.data, ReferralStatsCounted):
                raise UnknownEventType(f"{envelope.type} does not belong on {self._topic.name}",
                                       field="type")
            return envelope.data
        except EventError as exc:
            await dead_letter(self._producer, self._topic, key=record.key, value=record.value,
                              partition=record.partition, offset=record.offset, error=exc,
                              consumer=CONSUMER)
            return None

    async def _store(self, counts: list[ReferralStatsCounted]) -> None:
        attempt = 0
        while True:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    stored = await store_hourly_counts(conn, counts)
                STORED.inc(stored)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # database away, or a deadlock with another replica: retry
                attempt += 1
                delay = min(self._max_backoff, 0.1 * 2 ** min(attempt, 10))
                delay *= random.uniform(0.5, 1)  # noqa: S311 - jitter, not security
                log.exception("storing hourly stats failed; retrying", attempt=attempt,
                              delay=round(delay, 2), buckets=len(counts))
                await asyncio.sleep(delay)
