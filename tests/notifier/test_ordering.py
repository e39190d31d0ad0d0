"""The running notifier's consumer (real PostgreSQL, SMTP and broker): referrers are served
concurrently, each referrer's emails in their partition order, every email once, and one
referrer whose mail server keeps refusing holds back nobody else."""

from __future__ import annotations

import asyncpg
from referral_events import RewardApproved, RewardReversed

from tests.notifier.support import address, notification_row, reward
from tests.support import eventually
from tests.support.kafka import publish

LIFECYCLE = ["referrer.pending", "referrer.approved", "referrer.reversed"]


def _lifecycle(to: str) -> list:
    return [reward(email=to), reward(RewardApproved, email=to),
            reward(RewardReversed, reason="refund", email=to)]


async def test_each_referrers_emails_arrive_in_order_and_once(
        notifier, smtp_sink, kafka_bootstrap, topics, database_url):
    referrers = {f"ref_{n}": address() for n in range(6)}
    events = {key: _lifecycle(to) for key, to in referrers.items()}
    interleaved = [(key, events[key][step]) for step in range(3) for key in referrers]
    await publish(kafka_bootstrap, topics.rewards.name, *interleaved)
    for to in referrers.values():
        await eventually(lambda to=to: smtp_sink.handler.received(to) == 3, timeout=30,
                         message=f"{to}: {smtp_sink.handler.received(to)} emails")
        templates = await _templates_by_message_id(database_url, to)
        assert [templates[m["Message-ID"]] for m in smtp_sink.handler.to(to)] == LIFECYCLE

    # The same events again (a replay after a crash or a rebalance): nothing resent. A
    # barrier behind them on every referrer's key proves they were consumed.
    barriers = {key: address() for key in referrers}
    await publish(kafka_bootstrap, topics.rewards.name, *interleaved,
                  *[(key, reward(email=to)) for key, to in barriers.items()])
    for to in barriers.values():
        await eventually(lambda to=to: smtp_sink.handler.received(to) == 1, timeout=30)
    assert all(smtp_sink.handler.received(to) == 3 for to in referrers.values())
    row = await notification_row(database_url, referrers["ref_0"])
    assert row["state"] == "sent"


async def test_a_referrer_refused_for_a_while_holds_back_only_their_own_emails(
        notifier, notifier_settings, smtp_sink, kafka_bootstrap, topics, database_url):
    """Greylisted (451) recipient: their first email is retried in place, their second waits
    behind it; everyone else's, published once the refusals have begun, arrive meanwhile."""
    greylisted = address()
    smtp_sink.set_failure(451, recipient=greylisted)
    stuck = _lifecycle(greylisted)[:2]
    await publish(kafka_bootstrap, topics.rewards.name, *[("ref_grey", e) for e in stuck])
    await eventually(lambda: smtp_sink.handler.refused >= 2, message="no retries seen")
    others = {f"ref_{n}": address() for n in range(4)}
    await publish(kafka_bootstrap, topics.rewards.name,
                  *[(key, reward(email=to)) for key, to in others.items()])
    for to in others.values():
        await eventually(lambda to=to: smtp_sink.handler.received(to) == 1, timeout=30,
                         message=f"{to} held back by another referrer's refusals")
    assert smtp_sink.handler.received(greylisted) == 0
    row = await notification_row(database_url, greylisted)
    assert row["template"] == "referrer.pending" and "451" in row["last_error"]

    smtp_sink.set_failure(None, recipient=greylisted)
    await eventually(lambda: smtp_sink.handler.received(greylisted) == 2, timeout=30,
                     message="never sent after the refusals ended")
    templates = await _templates_by_message_id(database_url, greylisted)
    assert [templates[m["Message-ID"]] for m in smtp_sink.handler.to(greylisted)] == \
        LIFECYCLE[:2]


async def _templates_by_message_id(database_url: str, recipient: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT message_id, template FROM notifier.notifications "
                                "WHERE recipient = $1", recipient.lower())
    finally:
        await conn.close()
    return {row["message_id"]: row["template"] for row in rows}
