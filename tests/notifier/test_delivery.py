"""The notifier against a real SMTP server, broker and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import httpx
import pytest
from notifier.app import create_app
from notifier.config import NotifierSettings
from referral_events import (
    Beneficiary,
    EventDeadLettered,
    NotificationFailed,
    NotificationSent,
    Recipient,
    RewardKind,
    RewardPending,
    new_event,
    utcnow,
)

from tests.support import eventually, serve_asgi
from tests.support.kafka import collect, of_type, publish


@pytest.fixture
async def notifier(platform_env, smtp_sink):
    settings = NotifierSettings(**platform_env, SMTP_HOST=smtp_sink.host,
                                SMTP_PORT=smtp_sink.port, retry_max_backoff_seconds=0.5)
    async with serve_asgi(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        await eventually(lambda: _ready(client), message="notifier not ready")
        yield client


async def _ready(client):
    return (await client.get("/readyz")).status_code == 200


def _pending(email: str, *, locale: str = "nl", amount: int = 1000):
    now = utcnow()
    return new_event(RewardPending(
        reward_id=f"rwd_{uuid.uuid4().hex[:8]}", program_id="prg_1", program_name="Demo Shop",
        program_locale="en", referrer_id="ref_1", beneficiary=Beneficiary.REFERRER,
        recipient=Recipient(email=email, name="Ann", locale=locale), conversion_id="o-1",
        kind=RewardKind.CASH, amount=amount, currency="EUR", occurred_at=now,
        available_at=now + timedelta(days=14)), source="rewards")


def _address() -> str:
    return f"ann.{uuid.uuid4().hex[:8]}@example.com"


async def test_pending_reward_emails_the_referrer_once(notifier, smtp_sink, kafka_bootstrap,
                                                       topics, database_url):
    address = _address()
    event = _pending(address)
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", event), ("ref_1", event))
    [message] = await eventually(lambda: smtp_sink.handler.to(address))
    assert message["Subject"].startswith("Je doorverwijzing bij Demo Shop is omgezet")
    assert message["Message-ID"].endswith("@localhost>")
    assert "€\xa010,00" in message.get_body(("plain",)).get_content()
    assert "<html" in message.get_body(("html",)).get_content()

    sent = of_type(await collect(kafka_bootstrap, topics.notifications.name,
                                 until=lambda ev: bool(of_type(ev, NotificationSent))),
                   NotificationSent)
    assert sent[0].source_event_id == event.id and sent[0].template == "referrer.pending"

    # A barrier event behind the duplicate proves the duplicate was consumed, not pending.
    barrier = _address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", event), ("ref_1", _pending(barrier)))
    await eventually(lambda: smtp_sink.handler.to(barrier))
    assert len(smtp_sink.handler.to(address)) == 1
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT state, attempts FROM notifier.notifications "
                                  "WHERE recipient = $1", address)
    finally:
        await conn.close()
    assert (row["state"], row["attempts"]) == ("sent", 1)


async def test_transient_smtp_failure_is_retried_until_sent(notifier, smtp_sink,
                                                            kafka_bootstrap, topics):
    smtp_sink.set_failure(451)
    address = _address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", _pending(address)))
    await eventually(lambda: smtp_sink.handler.refused >= 2, message="no retries seen")
    smtp_sink.set_failure(None)
    await eventually(lambda: smtp_sink.handler.to(address), message="never sent after recovery")
    assert len(smtp_sink.handler.to(address)) == 1


async def test_smtp_outage_then_recovery(notifier, smtp_sink, kafka_bootstrap, topics):
    smtp_sink.stop()
    addresses = [_address() for _ in range(3)]
    await publish(kafka_bootstrap, topics.rewards.name,
                  *[("ref_1", _pending(a)) for a in addresses])
    smtp_sink.start()
    for address in addresses:
        await eventually(lambda a=address: smtp_sink.handler.to(a), timeout=30)
    assert all(len(smtp_sink.handler.to(a)) == 1 for a in addresses)


async def test_permanent_failure_is_marked_and_dead_lettered(notifier, smtp_sink,
                                                             kafka_bootstrap, topics):
    smtp_sink.set_failure(550)
    address = _address()
    event = _pending(address)
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", event))
    dead = await collect(kafka_bootstrap, topics.rewards.dead_letter, until=lambda ev: bool(ev))
    record = dead[0].data
    assert isinstance(record, EventDeadLettered)
    assert "550" in record.reason and record.consumer == "notifier"
    failed = of_type(await collect(kafka_bootstrap, topics.notifications.name,
                                   until=lambda ev: bool(of_type(ev, NotificationFailed))),
                     NotificationFailed)
    assert failed[0].permanent and failed[0].source_event_id == event.id
    smtp_sink.set_failure(None)
    after = _address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", _pending(after)))
    await eventually(lambda: smtp_sink.handler.to(after))
    assert smtp_sink.handler.to(address) == []


async def test_malformed_event_is_dead_lettered_and_consumer_continues(notifier, smtp_sink,
                                                                       kafka_bootstrap, topics):
    address = _address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", b"\x00garbage"),
                  ("ref_1", _pending(address, locale="it")))
    await eventually(lambda: smtp_sink.handler.to(address))
    dead = await collect(kafka_bootstrap, topics.rewards.dead_letter, until=lambda ev: bool(ev))
    assert dead[0].data.error_code == "malformed"
    assert dead[0].data.original_bytes() == b"\x00garbage"
