"""The running notifier against a real SMTP server, broker and PostgreSQL: each email once,
transient SMTP failures outlasted, permanent ones and bad input dead-lettered."""

from __future__ import annotations

from referral_events import EventDeadLettered, NotificationFailed, NotificationSent

from tests.notifier.support import address, notification_row, reward
from tests.support import eventually
from tests.support.kafka import collect, of_type, publish


async def test_same_event_twice_sends_one_email(notifier, smtp_sink, kafka_bootstrap, topics,
                                                database_url):
    to = address()
    event = reward(email=to, locale="nl")
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", event), ("ref_1", event))
    [message] = await eventually(lambda: smtp_sink.handler.to(to))
    assert message["Message-ID"].endswith("@localhost>")

    # A barrier event behind a third copy proves the copies were consumed, not still pending.
    barrier = address()
    await publish(kafka_bootstrap, topics.rewards.name,
                  ("ref_1", event), ("ref_1", reward(email=barrier)))
    await eventually(lambda: smtp_sink.handler.to(barrier))
    assert len(smtp_sink.handler.to(to)) == 1
    row = await notification_row(database_url, to)
    assert (row["state"], row["attempts"], row["template"]) == ("sent", 1, "referrer.pending")
    assert row["message_id"] == message["Message-ID"]


async def test_transient_smtp_failure_is_retried_until_sent(notifier, smtp_sink,
                                                            kafka_bootstrap, topics, database_url):
    smtp_sink.set_failure(451)
    to = address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", reward(email=to)))
    await eventually(lambda: smtp_sink.handler.refused >= 2, message="no retries seen")
    row = await notification_row(database_url, to)
    assert row["state"] == "queued" and "451" in row["last_error"]

    smtp_sink.set_failure(None)
    await eventually(lambda: smtp_sink.handler.to(to), message="never sent after recovery")
    assert len(smtp_sink.handler.to(to)) == 1
    row = await eventually(lambda: _in_state(database_url, to, "sent"))
    assert row["attempts"] >= 3 and row["last_error"] is None


async def test_smtp_outage_then_recovery_sends_everything_once(notifier, smtp_sink,
                                                               kafka_bootstrap, topics):
    smtp_sink.stop()  # connection refused until it is back
    recipients = [address() for _ in range(3)]
    await publish(kafka_bootstrap, topics.rewards.name,
                  *[("ref_1", reward(email=to)) for to in recipients])
    smtp_sink.start()
    for to in recipients:
        await eventually(lambda to=to: smtp_sink.handler.to(to), timeout=30)
    assert all(len(smtp_sink.handler.to(to)) == 1 for to in recipients)


async def test_permanent_failure_is_marked_failed_and_dead_lettered(
        notifier, smtp_sink, kafka_bootstrap, topics, database_url):
    smtp_sink.set_failure(550)
    to = address()
    event = reward(email=to)
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", event))

    dead = await collect(kafka_bootstrap, topics.rewards.dead_letter, until=bool)
    record = dead[0].data
    assert isinstance(record, EventDeadLettered)
    assert "550" in record.reason and record.consumer == "notifier"
    assert record.original_topic == topics.rewards.name and record.original_key == "ref_1"
    row = await notification_row(database_url, to)
    assert row["state"] == "failed" and "550" in row["last_error"]
    [failed] = of_type(await collect(kafka_bootstrap, topics.notifications.name,
                                     until=lambda ev: bool(of_type(ev, NotificationFailed))),
                       NotificationFailed)
    assert failed.permanent and failed.source_event_id == event.id
    assert failed.notification_id == row["id"]

    # The consumer went on past the refused email.
    smtp_sink.set_failure(None)
    after = address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", reward(email=after)))
    await eventually(lambda: smtp_sink.handler.to(after))
    assert smtp_sink.handler.to(to) == []


async def test_malformed_message_is_dead_lettered_and_consumer_continues(
        notifier, smtp_sink, kafka_bootstrap, topics):
    to = address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", b"\x00garbage"),
                  ("ref_1", b'{"specversion": "1.0", "type": "referral.reward.pending"}'),
                  ("ref_1", reward(email=to, locale="it")))
    await eventually(lambda: smtp_sink.handler.to(to))
    dead = await collect(kafka_bootstrap, topics.rewards.dead_letter,
                         until=lambda ev: len(ev) >= 2)
    assert dead[0].data.error_code == "malformed"
    assert dead[0].data.original_bytes() == b"\x00garbage"
    assert dead[1].data.reason  # a person can read why the envelope was refused


async def test_health_readiness_and_metrics(notifier, smtp_sink, kafka_bootstrap, topics):
    to = address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", reward(email=to)))
    await eventually(lambda: smtp_sink.handler.to(to))
    assert (await notifier.get("/healthz")).json() == {"status": "ok"}
    ready = (await notifier.get("/readyz")).json()
    assert ready["checks"] == {"database": True, "consumer": True}
    await collect(kafka_bootstrap, topics.notifications.name,
                  until=lambda ev: bool(of_type(ev, NotificationSent)))
    metrics = (await notifier.get("/metrics")).text
    assert 'notifier_emails_sent_total{locale="en",template="referrer.pending"}' in metrics


async def _in_state(database_url: str, recipient: str, state: str):
    row = await notification_row(database_url, recipient)
    return row if row is not None and row["state"] == state else None
