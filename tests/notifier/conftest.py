"""Fixtures of the notifier tests: the service in-process, or its parts on real components."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from notifier.app import SCHEMA, create_app
from notifier.config import NotifierSettings
from notifier.delivery import Delivery
from notifier.notifications import NotificationStore, keep_session
from notifier.outcomes import OutcomeAnnouncer
from notifier.smtp import SmtpSender
from notifier.unsubscribe import UnsubscribeTokens
from referral_kit.kafka import make_producer
from referral_kit.migrations import migrate

from tests.support import eventually, serve_asgi


@pytest.fixture
def notifier_settings(platform_env, smtp_sink) -> NotifierSettings:
    # Short waits so retry tests see several attempts; the behaviour is the production one.
    return NotifierSettings(**platform_env, SMTP_HOST=smtp_sink.host, SMTP_PORT=smtp_sink.port,
                            retry_initial_backoff_seconds=0.05, retry_max_backoff_seconds=0.5)


@pytest.fixture
async def notifier(notifier_settings) -> AsyncIterator[httpx.AsyncClient]:
    """The whole notifier (HTTP + consumer) in-process, ready; yields a client for its HTTP."""
    async with (serve_asgi(create_app(notifier_settings)) as url,
                httpx.AsyncClient(base_url=url) as client):
        await eventually(lambda: _ready(client), message="notifier not ready")
        yield client


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.fixture
async def notifier_db(database_url) -> AsyncIterator[asyncpg.Pool]:
    """The test database migrated to the notifier schema, as the service's pool sees it."""
    await migrate(database_url, schema=SCHEMA, package="notifier")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6, reset=keep_session,
                                     server_settings={"search_path": f"{SCHEMA},public"})
    try:
        yield pool
    finally:
        await pool.close()


def unsubscribe_tokens(settings) -> UnsubscribeTokens:
    return UnsubscribeTokens(settings.unsubscribe_secret.get_secret_value(),
                             max_age_days=settings.unsubscribe_token_days,
                             public_url=settings.public_url)


@pytest.fixture
async def delivery(notifier_settings, notifier_db, topics) -> AsyncIterator[Delivery]:
    """The reward handler wired to real PostgreSQL, SMTP and broker, without a consumer."""
    producer = make_producer(notifier_settings, client_id="notifier-test")
    await producer.start()
    sender = SmtpSender(notifier_settings.smtp_host, notifier_settings.smtp_port)
    try:
        yield Delivery(store=NotificationStore(notifier_db), sender=sender,
                       announcer=OutcomeAnnouncer(producer, topics.notifications),
                       settings=notifier_settings, tokens=unsubscribe_tokens(notifier_settings))
    finally:
        await sender.close()
        await producer.stop()
