"""The admin API application, wired in one place (no I/O until the lifespan starts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from referral_kit.http import health_router, install_problem_handlers
from referral_kit.kafka import make_producer
from referral_kit.migrations import migrate

from ..config import RewardsSettings
from ..db import SCHEMA, create_pool
from ..relay import OutboxRelay
from . import programs, rewards


def create_app(settings: RewardsSettings | None = None) -> FastAPI:
    """Admin API for ``settings``. Its lifespan migrates the schema, opens the pool and runs
    an outbox relay (one relay publishes at a time across all replicas and workers)."""
    settings = settings or RewardsSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url, schema=SCHEMA, package="rewards")
        app.state.pool = await create_pool(settings.database_url,
                                           min_size=settings.pool_min_size,
                                           max_size=settings.pool_max_size)
        producer = make_producer(settings, client_id="rewards-api")
        await producer.start()
        relay = OutboxRelay(app.state.pool, producer, interval=settings.relay_interval_seconds)
        await relay.start()
        try:
            yield
        finally:
            await relay.stop()
            await producer.stop()
            await app.state.pool.close()

    app = FastAPI(title="Referral rewards: admin API", version="0.1.0", lifespan=lifespan,
                  description="Programmes, referrers and rewards. Every call needs "
                              "`Authorization: Bearer <ADMIN_TOKEN>`.")
    app.state.settings = settings
    app.state.topics = settings.topic_registry()
    install_problem_handlers(app)

    async def readiness() -> dict[str, bool]:
        try:
            async with app.state.pool.acquire(timeout=2) as conn:
                return {"database": await conn.fetchval("SELECT true")}
        except Exception:  # noqa: BLE001 - not ready is the answer
            return {"database": False}

    app.include_router(health_router(readiness))
    app.include_router(programs.router)
    app.include_router(rewards.router)
    return app
