"""The reward handler itself on real PostgreSQL, SMTP and broker: the edges of exactly once
that a consumer-group run cannot stage on demand (concurrent workers, a crash after SMTP)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from notifier.notifications import NotificationKey, NotificationStore
from referral_events import NotificationSent, RewardInReview
from referral_kit.consuming import PoisonEvent

from tests.notifier.support import address, notification_row, reward
from tests.support.kafka import collect, of_type


async def test_two_workers_handed_the_same_event_send_one_email(delivery, smtp_sink,
                                                                 database_url):
    to = address()
    event = reward(email=to)
    await asyncio.gather(*[delivery(event) for _ in range(4)])
    assert len(smtp_sink.handler.to(to)) == 1
    row = await notification_row(database_url, to)
    assert (row["state"], row["attempts"]) == ("sent", 1)


async def test_resend_after_a_crash_before_the_state_write_keeps_the_message_id(
        delivery, smtp_sink, notifier_db, database_url, kafka_bootstrap, topics):
    to = address()
    event = reward(email=to)
    await delivery(event)
    # The crash window: SMTP accepted, the process died before writing 'sent'.
    async with notifier_db.acquire() as conn:
        await conn.execute("UPDATE notifications SET state = 'queued', sent_at = NULL"
                           " WHERE recipient = $1", to)

    await delivery(event)
    first, second = smtp_sink.handler.to(to)
    assert first["Message-ID"] == second["Message-ID"]  # recognisable as the same email
    row = await notification_row(database_url, to)
    assert (row["state"], row["attempts"]) == ("sent", 2)  # the resend is on record

    # Outcome events share their id, so readers see one NotificationSent per email.
    sent = [e for e in await collect(kafka_bootstrap, topics.notifications.name,
                                     until=lambda ev: len(of_type(ev, NotificationSent)) >= 2)]
    assert len({e.id for e in sent}) == 1


async def test_a_refused_email_stays_refused_when_its_event_comes_back(delivery, smtp_sink,
                                                                       database_url):
    smtp_sink.set_failure(550)
    to = address()
    event = reward(email=to)
    with pytest.raises(PoisonEvent, match="550"):
        await delivery(event)
    smtp_sink.set_failure(None)
    with pytest.raises(PoisonEvent, match="550"):  # dead-lettered again, never sent late
        await delivery(event)
    assert smtp_sink.handler.to(to) == []
    row = await notification_row(database_url, to)
    assert (row["state"], row["attempts"]) == ("failed", 1)


async def test_events_nobody_is_emailed_about_leave_no_row(delivery, smtp_sink, database_url):
    to = address()
    await delivery(reward(RewardInReview, email=to))
    assert smtp_sink.handler.to(to) == []
    assert await notification_row(database_url, to) is None


async def test_a_delivery_cancelled_while_waiting_for_the_row_lock_leaves_no_lock_behind(
        notifier_db) -> None:
    # The pool does not reset sessions (keep_session): a lock wait cut short must not leave
    # its session holding the lock once the statement completes server-side.
    store = NotificationStore(notifier_db)
    key = NotificationKey(f"evt-{uuid.uuid4().hex[:8]}", address(), "referrer.pending")
    await store.queue(key, locale="en", message_id=key.message_id("shop.example"))
    entered = asyncio.Event()

    async def wait_for_the_lock() -> None:
        async with store.exclusively(key.notification_id):
            entered.set()

    async with store.exclusively(key.notification_id):
        waiter = asyncio.create_task(wait_for_the_lock())
        await asyncio.sleep(0.2)  # let it block on pg_advisory_lock
        assert not entered.is_set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    # every later holder gets the lock at once, on whichever pooled session
    for _ in range(notifier_db.get_max_size() + 1):
        async with asyncio.timeout(5):
            async with store.exclusively(key.notification_id) as row:
                assert row.state.value == "queued"
