"""Wiring of the worker process: consumer of decisions, hold scheduler, outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from referral_kit.consuming import EventConsumer
from referral_kit.kafka import ensure_topics, make_producer
from referral_kit.migrations import migrate

from ..config import RewardsSettings
from ..db import SCHEMA, create_pool
from ..relay import OutboxRelay
from .decisions import CONSUMER, DecisionHandler
from .holds import HoldScheduler

log = structlog.get_logger(__name__)


async def run_worker(settings: RewardsSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when run as a process)."""
    stop = stop or _stop_on_signals()
    topics = settings.topic_registry()
    await migrate(settings.database_url, schema=SCHEMA, package="rewards")
    await ensure_topics(settings.kafka_bootstrap_servers, topics.all())
    pool = await create_pool(settings.database_url, min_size=settings.pool_min_size,
                             max_size=settings.pool_max_size)
    producer = make_producer(settings, client_id="rewards-worker")
    await producer.start()
    consumer = EventConsumer(settings=settings, topics=[topics.attributions],
                             group_id=f"{settings.topic_prefix}rewards-worker", name=CONSUMER,
                             handler=DecisionHandler(pool, topics), producer=producer)
    relay = OutboxRelay(pool, producer, interval=settings.relay_interval_seconds)
    scheduler = HoldScheduler(pool, topics, interval=settings.scheduler_interval_seconds)
    try:
        await relay.start()
        await scheduler.start()
        await consumer.start()
        log.info("rewards worker running", group=f"{settings.topic_prefix}rewards-worker")
        await stop.wait()
    finally:
        for part in (consumer, scheduler, relay):
            with contextlib.suppress(Exception):
                await part.stop()
        await producer.stop()
        await pool.close()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
