"""Wiring of the worker process: consumers of decisions, reversals and hourly stats, hold
scheduler, reversal sweep, outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import timedelta

import structlog
from referral_kit.consuming import EventConsumer
from referral_kit.kafka import ensure_topics, make_producer
from referral_kit.migrations import migrate

from ..config import RewardsSettings
from ..db import SCHEMA, create_pool
from ..relay import OutboxRelay
from .decisions import CONSUMER, DecisionHandler
from .health import start_probes
from .holds import HoldScheduler
from .reversals import CONSUMER as REVERSALS_CONSUMER
from .reversals import ReversalHandler, ReversalSweeper
from .stats_consumer import StatsConsumer

log = structlog.get_logger(__name__)


async def run_worker(settings: RewardsSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when run as a process). Replicas share
    the attribution partitions through the consumer group; the scheduler and the relay are
    safe to run in every replica (row locks and an advisory lock divide the work)."""
    stop = stop or _stop_on_signals()
    topics = settings.topic_registry()
    group_id = f"{settings.topic_prefix}rewards-worker"
    await migrate(settings.database_url, schema=SCHEMA, package="rewards")
    await ensure_topics(settings.kafka_bootstrap_servers, topics.all())
    async with contextlib.AsyncExitStack() as running:
        pool = await create_pool(settings.database_url, min_size=settings.pool_min_size,
                                 max_size=settings.pool_max_size)
        running.push_async_callback(pool.close)
        producer = make_producer(settings, client_id="rewards-worker")
        running.push_async_callback(producer.stop)  # stopped last: the others send with it
        await producer.start()
        relay = OutboxRelay(pool, producer=producer, interval=settings.relay_interval_seconds,
                            retention=timedelta(hours=settings.outbox_retention_hours))
        scheduler = HoldScheduler(pool, topics, interval=settings.scheduler_interval_seconds)
        # One poll's events are decided in one transaction (rewards/worker/decisions.py).
        consumer = EventConsumer(settings=settings, topics=[topics.attributions],
                                 group_id=group_id, name=CONSUMER,
                                 batch_handler=DecisionHandler(
                                     pool, topics, on_pending=scheduler.due).handle_batch,
                                 max_poll_records=settings.decision_batch_size,
                                 producer=producer)
        # Reversals and stats have consumer groups of their own: a slow stats store never
        # holds up rewards, and each topic is read at its own pace.
        reversals = EventConsumer(settings=settings, topics=[topics.reversals],
                                  group_id=f"{settings.topic_prefix}rewards-reversals",
                                  name=REVERSALS_CONSUMER,
                                  handler=ReversalHandler(pool, topics), producer=producer,
                                  fetch_max_wait_ms=settings.kafka_background_fetch_max_wait_ms)
        sweeper = ReversalSweeper(pool, topics, interval=settings.reversal_sweep_seconds)
        stats = StatsConsumer(settings=settings, topic=topics.stats,
                              group_id=f"{settings.topic_prefix}rewards-stats", pool=pool,
                              producer=producer, max_records=settings.stats_batch_size)
        parts = (relay, scheduler, consumer, reversals, sweeper, stats)
        for part in parts:
            running.push_async_callback(part.stop)
        # A consumer's start takes a broker round trip or more (seconds on some brokers):
        # start them side by side, not one after the other.
        await asyncio.gather(*(part.start() for part in parts))
        probes = await start_probes(pool, consumer)  # /healthz, /readyz, /metrics (:8005)
        running.push_async_callback(probes.stop)
        log.info("rewards worker running", group=group_id)
        await stop.wait()
        log.info("rewards worker stopping")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
