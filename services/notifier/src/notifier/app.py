"""The notifier process: HTTP (health, metrics) and the reward-event consumer, wired here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
from fastapi import FastAPI
from referral_kit.http import health_router, install_problem_handlers
from referral_kit.kafka import ensure_topics, make_producer
from referral_kit.key_ordered import KeyOrderedConsumer
from referral_kit.migrations import migrate

from .config import NotifierSettings
from .delivery import Delivery
from .digest import DigestScheduler
from .notifications import NotificationStore, keep_session
from .outcomes import OutcomeAnnouncer
from .smtp import SmtpSender
from .supervision import SupervisedConsumer
from .unsubscribe import SuppressionList, UnsubscribeTokens
from .unsubscribe_pages import unsubscribe_router

SCHEMA = "notifier"


def _smtp_sender(settings: NotifierSettings) -> SmtpSender:
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpSender(settings.smtp_host, settings.smtp_port,
                      timeout=settings.smtp_timeout_seconds, starttls=settings.smtp_starttls,
                      username=settings.smtp_username, password=password,
                      connections=settings.concurrency)


def claim_lanes(concurrency: int) -> int:
    """Connections that claim new emails and write outcomes in batches (notifier.lanes): one
    per 16 emails in flight. One lane batches the most; more keep one slow statement from
    holding up every email."""
    return max(1, concurrency // 16)


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    """The notifier as an ASGI app; its lifespan migrates, then runs the reward consumer."""
    settings = settings or NotifierSettings()
    topics = settings.topic_registry()
    state: dict[str, object] = {}
    tokens = UnsubscribeTokens(settings.unsubscribe_secret.get_secret_value(),
                               max_age_days=settings.unsubscribe_token_days,
                               public_url=settings.public_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url, schema=SCHEMA, package="notifier")
        await ensure_topics(settings.kafka_bootstrap_servers, topics.all())
        async with AsyncExitStack() as stack:  # unwinds whatever started, in reverse order
            lanes = claim_lanes(settings.concurrency)
            pool = await asyncpg.create_pool(
                settings.database_url, min_size=1, max_size=settings.concurrency + 2 + lanes,
                reset=keep_session,
                server_settings={"search_path": f"{SCHEMA},public",
                                 "application_name": "notifier"})
            stack.push_async_callback(pool.close)
            producer = make_producer(settings, client_id="notifier")
            await producer.start()
            stack.push_async_callback(producer.stop)
            sender = _smtp_sender(settings)
            stack.push_async_callback(sender.close)
            suppressions = SuppressionList(pool)
            delivery = Delivery(store=NotificationStore(pool, lanes=lanes), sender=sender,
                                announcer=OutcomeAnnouncer(producer, topics.notifications),
                                settings=settings, tokens=tokens)
            consumer = SupervisedConsumer(lambda: KeyOrderedConsumer(
                settings=settings, topics=[topics.rewards],
                group_id=f"{settings.topic_prefix}notifier", name="notifier",
                handler=delivery, concurrency=settings.concurrency, producer=producer,
                max_backoff_s=settings.retry_max_backoff_seconds))
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            digests = DigestScheduler(settings=settings, delivery=delivery, tokens=tokens)
            await digests.start()
            stack.push_async_callback(digests.stop)
            state.update(pool=pool, consumer=consumer, suppressions=suppressions)
            stack.callback(state.clear)  # first thing on shutdown: stop answering ready
            yield

    app = FastAPI(title="Referral notifier", version="0.1.0", lifespan=lifespan)
    install_problem_handlers(app)

    async def readiness() -> dict[str, bool]:
        checks = {"database": False, "consumer": False}
        pool = state.get("pool")
        consumer = state.get("consumer")
        if isinstance(pool, asyncpg.Pool):
            with contextlib.suppress(Exception):  # an error is a "not ready"
                async with pool.acquire(timeout=2) as conn:
                    checks["database"] = bool(await conn.fetchval("SELECT true"))
        if isinstance(consumer, SupervisedConsumer):
            checks["consumer"] = consumer.running
        return checks

    def suppressions() -> SuppressionList | None:
        found = state.get("suppressions")
        return found if isinstance(found, SuppressionList) else None

    app.include_router(health_router(readiness))
    app.include_router(unsubscribe_router(tokens, suppressions))
    return app
