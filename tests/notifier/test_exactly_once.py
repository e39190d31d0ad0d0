"""The reward handler itself on real PostgreSQL, SMTP and broker: the edges of exactly once
that a consumer-group run cannot stage on demand (concurrent workers, a crash after SMTP)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from notifier.compose import compose
from notifier.notifications import LOCK_CLASS, Claim, NotificationKey, NotificationStore, State
from prometheus_client import REGISTRY
from referral_events import NotificationSent, RewardInReview
from referral_kit.consuming import PoisonEvent

from tests.notifier.support import address, notification_row, reward
from tests.support import eventually
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


def _claim(store: NotificationStore, key: NotificationKey) -> Any:
    return store.claim(key, locale="en", message_id=key.message_id("shop.example"),
                       program_id="prg-test", category="rewards")


async def test_a_delivery_cancelled_while_waiting_for_the_row_lock_leaves_no_lock_behind(
        notifier_db) -> None:
    # The pool does not reset sessions (keep_session): a lock wait cut short must not leave
    # its session holding the lock once the statement completes server-side.
    store = NotificationStore(notifier_db)
    key = NotificationKey(f"evt-{uuid.uuid4().hex[:8]}", address(), "referrer.pending")
    entered = asyncio.Event()

    async def wait_for_the_lock() -> None:
        async with _claim(store, key):
            entered.set()

    async with _claim(store, key):
        waiter = asyncio.create_task(wait_for_the_lock())
        await asyncio.sleep(0.2)  # let it block on pg_advisory_lock
        assert not entered.is_set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    # every later holder gets the lock at once, on whichever pooled session
    for _ in range(notifier_db.get_max_size() + 1):
        async with asyncio.timeout(5):
            async with _claim(store, key) as claim:
                assert claim.notification.state.value == "queued"


async def test_the_next_holder_reads_the_outcome_written_as_the_lock_was_released(
        notifier_db) -> None:
    # An outcome is written and the lock released in one statement, so the lock is free
    # before that write commits: the next claim must wait for the commit and read 'sent',
    # not the 'queued' of its snapshot (it would send the email a second time).
    store = NotificationStore(notifier_db)
    key = NotificationKey(f"evt-{uuid.uuid4().hex[:8]}", address(), "referrer.pending")
    async with _claim(store, key) as first:  # the row exists, queued, one attempt counted
        assert (first.notification.state, first.notification.attempts) == (State.QUEUED, 1)

    async def next_holder() -> Claim:
        async with _claim(store, key) as claim:
            return claim

    async with notifier_db.acquire() as holder:  # a holder writing its outcome
        await holder.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_CLASS,
                             key.notification_id)
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(
            "WITH sent AS (UPDATE notifications SET state = 'sent' WHERE id = $1 RETURNING id)"
            " SELECT pg_advisory_unlock($2, hashtext(id)) FROM sent",
            key.notification_id, LOCK_CLASS)
        waiting = asyncio.create_task(next_holder())
        await asyncio.sleep(0.3)  # the lock is free: only the uncommitted write holds it back
        assert not waiting.done()
        await transaction.commit()
    async with asyncio.timeout(5):
        claim = await waiting
    assert (claim.notification.state, claim.notification.attempts) == (State.SENT, 1)
    async with asyncio.timeout(5), _claim(store, key) as again:  # and it left no lock behind
        assert again.notification.state is State.SENT


async def test_an_unsubscribe_made_while_a_claim_waited_for_the_lock_is_honoured(
        notifier_db) -> None:
    # A second claim of an email (a redelivery) waits for the first holder's lock; the
    # suppression list must be read after that wait, not before it.
    store = NotificationStore(notifier_db)
    key = NotificationKey(f"evt-{uuid.uuid4().hex[:8]}", address(), "referrer.pending")

    async def next_holder() -> Claim:
        async with _claim(store, key) as claim:
            return claim

    async with _claim(store, key) as first:  # new: inserted with its attempt counted
        assert (first.notification.state, first.notification.attempts) == (State.QUEUED, 1)
        assert first.unsubscribed is False
        waiting = asyncio.create_task(next_holder())
        await asyncio.sleep(0.2)  # let it block on the lock
        assert not waiting.done()
        async with notifier_db.acquire() as conn:
            await conn.execute("INSERT INTO unsubscribes (recipient, program_id, category)"
                               " VALUES ($1, 'prg-test', 'rewards')", key.recipient)
    # the first holder left without an outcome: the row is still queued for the next one
    async with asyncio.timeout(5):
        claim = await waiting
    assert claim.unsubscribed is True
    assert (claim.notification.state, claim.notification.attempts) == (State.QUEUED, 1)


async def test_an_email_to_someone_unsubscribed_is_inserted_without_an_attempt(
        notifier_db) -> None:
    store = NotificationStore(notifier_db)
    key = NotificationKey(f"evt-{uuid.uuid4().hex[:8]}", address(), "referrer.pending")
    async with notifier_db.acquire() as conn:
        await conn.execute("INSERT INTO unsubscribes (recipient, program_id, category)"
                           " VALUES ($1, 'prg-test', 'rewards')", key.recipient)
    async with _claim(store, key) as claim:
        assert claim.unsubscribed is True
        assert (claim.notification.state, claim.notification.attempts) == (State.QUEUED, 0)
        assert claim.notification.id == key.notification_id
        suppressed = await store.mark_suppressed(claim.notification.id)
    assert (suppressed.state, suppressed.attempts) == (State.SUPPRESSED, 0)
    async with asyncio.timeout(5), _claim(store, key) as again:  # and it left no lock behind
        assert again.notification.state is State.SUPPRESSED


def _retries() -> float:
    return REGISTRY.get_sample_value("notifier_smtp_retries_total") or 0.0


async def test_transient_refusals_are_retried_and_each_attempt_is_on_record(
        delivery, smtp_sink, database_url):
    to = address()
    refused, retries = smtp_sink.handler.refused, _retries()
    smtp_sink.set_failure(451)
    sending = asyncio.create_task(delivery(reward(email=to)))
    try:
        await eventually(lambda: smtp_sink.handler.refused - refused >= 3,
                         message="fewer than 3 refusals")
    finally:
        smtp_sink.set_failure(None)
    await asyncio.wait_for(sending, 30)
    times_refused = smtp_sink.handler.refused - refused
    assert len(smtp_sink.handler.to(to)) == 1
    row = await notification_row(database_url, to)
    # the first attempt (made before the retry loop) and every retry are counted and logged
    assert (row["state"], row["attempts"], row["last_error"]) == ("sent", times_refused + 1,
                                                                   None)
    assert _retries() - retries == times_refused


async def test_a_failed_sent_write_is_retried_without_sending_again(
        delivery, smtp_sink, database_url, monkeypatch):
    to = address()
    store = delivery._store
    mark_sent, failures = store.mark_sent, []

    async def flaky(notification_id: str) -> Any:
        if not failures:
            failures.append(notification_id)
            raise ConnectionResetError("the database went away for a moment")
        return await mark_sent(notification_id)

    monkeypatch.setattr(store, "mark_sent", flaky)
    sent = await delivery.deliver(compose(reward(email=to).data), source_event_id="evt_flaky_"
                                  + uuid.uuid4().hex[:8])
    assert failures == [sent.id] and sent.state is State.SENT
    assert len(smtp_sink.handler.to(to)) == 1
    row = await notification_row(database_url, to)
    assert (row["state"], row["attempts"]) == ("sent", 1)
