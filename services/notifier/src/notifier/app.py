"""The notifier process: HTTP (health, metrics) and the reward-event consumer, wired here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from referral_kit.consuming import EventConsumer
from referral_kit.http import health_router, install_problem_handlers
from referral_kit.kafka import ensure_topics, make_producer
from referral_kit.migrations import migrate

from .config import NotifierSettings
from .delivery import Delivery
from .smtp import SmtpSender

SCHEMA = "notifier"


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                              schema="pg_catalog")


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    topics = settings.topic_registry()
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url, schema=SCHEMA, package="notifier")
        await ensure_topics(settings.kafka_bootstrap_servers, topics.all())
        pool = await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=5, init=_init,
            server_settings={"search_path": f"{SCHEMA},public", "application_name": "notifier"})
        producer = make_producer(settings, client_id="notifier")
        await producer.start()
        sender = SmtpSender(settings.smtp_host, settings.smtp_port,
                            timeout=settings.smtp_timeout_seconds)
        delivery = Delivery(pool=pool, sender=sender, producer=producer, topics=topics,
                            settings=settings)
        consumer = EventConsumer(settings=settings, topics=[topics.rewards],
                                 group_id=f"{settings.topic_prefix}notifier", name="notifier",
                                 handler=delivery, producer=producer,
                                 max_backoff_s=settings.retry_max_backoff_seconds)
        await consumer.start()
        state.update(pool=pool, consumer=consumer)
        try:
            yield
        finally:
            await consumer.stop()
            await sender.close()
            await producer.stop()
            await pool.close()

    app = FastAPI(title="Referral notifier", version="0.1.0", lifespan=lifespan)
    install_problem_handlers(app)

    async def readiness() -> dict[str, bool]:
        checks = {"database": False, "consumer": False}
        pool = state.get("pool")
        consumer = state.get("consumer")
        if isinstance(pool, asyncpg.Pool):
            try:
                async with pool.acquire(timeout=2) as conn:
                    checks["database"] = bool(await conn.fetchval("SELECT true"))
            except Exception:  # noqa: BLE001 - not ready is the answer
                pass
        if isinstance(consumer, EventConsumer):
            checks["consumer"] = consumer.running
        return checks

    app.include_router(health_router(readiness))
    return app
