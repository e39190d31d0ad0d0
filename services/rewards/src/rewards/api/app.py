"""The admin API application, wired in one place (no I/O until the lifespan starts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from referral_kit.http import health_router, install_problem_handlers
from referral_kit.kafka import make_producer
from referral_kit.migrations import migrate

from ..config import RewardsSettings
from ..dashboard.routes import install as install_dashboard
from ..db import SCHEMA, create_pool
from ..relay import OutboxRelay
from . import programs, rewards, stats


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
        # The relay connects to the broker on its own: the admin API keeps answering while
        # the broker is away, and the outbox holds the changes until it returns.
        relay = OutboxRelay(app.state.pool,
                            producer_factory=lambda: make_producer(settings,
                                                                   client_id="rewards-api"),
                            interval=settings.relay_interval_seconds,
                            retention=timedelta(hours=settings.outbox_retention_hours))
        await relay.start()
        try:
            yield
        finally:
            await relay.stop()
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
        except Exception:
            return {"database": False}

    app.include_router(health_router(readiness))
    app.include_router(programs.router)
    app.include_router(rewards.router)
    app.include_router(stats.router)
    install_dashboard(app)
    return app
