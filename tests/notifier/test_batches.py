"""A poll at a time (real PostgreSQL, SMTP and broker): referrers are served concurrently, each
referrer's emails in their partition order, every email once, and a poll replayed after a
failure sends nothing twice."""

from __future__ import annotations

import time

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord
from notifier.smtp import TransientSmtpError
from referral_events import RewardApproved, RewardReversed, encode

from tests.notifier.support import address, notification_row, reward


def _items(topic: str, events: list[tuple[str, object]]) -> list[tuple[object, ConsumerRecord]]:
    """(envelope, record) pairs as the consumer hands them over, offsets in order."""
    items = []
    for offset, (key, envelope) in enumerate(events):
        value = encode(envelope)
        items.append((envelope, ConsumerRecord(
            topic=topic, partition=0, offset=offset, timestamp=int(time.time() * 1000),
            timestamp_type=0, key=key.encode(), value=value, checksum=None,
            serialized_key_size=len(key), serialized_value_size=len(value), headers=())))
    return items


async def test_a_poll_keeps_each_referrers_order_and_sends_everything_once(
        delivery, smtp_sink, topics, database_url):
    referrers = {f"ref_{n}": address() for n in range(6)}
    lifecycle = [reward, lambda **kw: reward(RewardApproved, **kw),
                 lambda **kw: reward(RewardReversed, reason="refund", **kw)]
    events = [(key, make(email=to)) for make in lifecycle for key, to in referrers.items()]
    items = _items(topics.rewards.name, events)

    outcomes = await delivery.batch(items)

    assert outcomes == [None] * len(items)
    for to in referrers.values():
        templates = await _templates_by_message_id(database_url, to)
        received = [templates[m["Message-ID"]] for m in smtp_sink.handler.to(to)]
        assert received == ["referrer.pending", "referrer.approved", "referrer.reversed"], to
    # The same poll again (the consumer retries a poll that failed midway): nothing resent.
    assert await delivery.batch(items) == [None] * len(items)
    assert all(len(smtp_sink.handler.to(to)) == 3 for to in referrers.values())
    row = await notification_row(database_url, referrers["ref_0"])
    assert row["state"] == "sent"


async def test_a_transient_failure_fails_the_poll_and_its_retry_finishes_it(
        delivery, notifier_settings, smtp_sink, topics):
    to, other = address(), address()
    items = _items(topics.rewards.name, [("ref_x", reward(email=to)),
                                         ("ref_y", reward(email=other))])
    smtp_sink.set_failure(451)
    notifier_settings.retry_window_seconds = 0.3  # the consumer takes over retrying sooner
    with pytest.raises(TransientSmtpError, match="451"):  # the consumer retries the poll
        await delivery.batch(items)
    smtp_sink.set_failure(None)
    assert await delivery.batch(items) == [None, None]
    assert len(smtp_sink.handler.to(to)) == len(smtp_sink.handler.to(other)) == 1


async def _templates_by_message_id(database_url: str, recipient: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT message_id, template FROM notifier.notifications "
                                "WHERE recipient = $1", recipient.lower())
    finally:
        await conn.close()
    return {row["message_id"]: row["template"] for row in rows}
