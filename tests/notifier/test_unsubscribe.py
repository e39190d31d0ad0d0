"""Unsubscribe: the link in every email and the RFC 8058 one-click POST stop further emails of
the category for that programme; tampered or expired tokens are refused."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

import asyncpg
import pytest
from notifier.unsubscribe import Category, Subscription, TokenRefused, UnsubscribeTokens
from referral_events import RewardApproved, RewardPending

from tests.notifier.support import address, reward
from tests.support import eventually
from tests.support.kafka import publish


def _local(url: str) -> str:
    """The link's path and query, to request from the in-process notifier."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_one_click_unsubscribe_stops_the_next_reward_email(
        notifier, smtp_sink, kafka_bootstrap, topics, database_url):
    to = address()
    await publish(kafka_bootstrap, topics.rewards.name,
                  ("ref_1", reward(RewardPending, email=to, locale="nl")))
    [message] = await eventually(lambda: smtp_sink.handler.to(to), message="no email arrived")
    header = message["List-Unsubscribe"]
    assert header.startswith("<http") and header.endswith(">")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = header[1:-1]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert link in text and "Afmelden voor deze e-mails" in text
    assert link.replace("&", "&amp;") in html or link in html

    page = await notifier.get(_local(link))  # a link scanner's GET changes nothing
    assert page.status_code == 200 and "<form method='post'>" in page.text
    assert "Afmelden" in page.text and to in page.text

    done = await notifier.post(_local(link), content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "Je bent afgemeld" in done.text
    again = await notifier.post(_local(link), content=b"List-Unsubscribe=One-Click")
    assert again.status_code == 200  # idempotent

    later = reward(RewardApproved, email=to, locale="nl")
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", later))

    async def suppressed() -> bool:
        return await _state_of(database_url, later.id) == "suppressed"

    await eventually(suppressed, message="the approved-reward email was not suppressed")
    assert len(smtp_sink.handler.to(to)) == 1


async def _state_of(database_url: str, event_id: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT state FROM notifier.notifications WHERE source_event_id = $1", event_id)
    finally:
        await conn.close()


async def test_tampered_tokens_are_refused(notifier, notifier_settings):
    tokens = UnsubscribeTokens(notifier_settings.unsubscribe_secret.get_secret_value(),
                               max_age_days=30, public_url="http://x")
    token = tokens.issue(Subscription("ann@example.com", "prg_1", Category.REWARDS))
    payload, _, rest = token.partition(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged["r"] = "bob@example.com"  # someone else's address under Ann's signature
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    for bad in (f"{forged_payload}.{rest}", token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
                "not-a-token-at-all"):
        answer = await notifier.post("/unsubscribe", params={"token": bad})
        assert answer.status_code == 400, bad
        assert "not valid" in answer.text
    other_secret = UnsubscribeTokens("another-secret", max_age_days=30, public_url="http://x")
    foreign = other_secret.issue(Subscription("ann@example.com", "prg_1", Category.REWARDS))
    assert (await notifier.get("/unsubscribe", params={"token": foreign})).status_code == 400


def test_tokens_expire(monkeypatch):
    tokens = UnsubscribeTokens("secret", max_age_days=1, public_url="http://x")
    subscription = Subscription("Ann@Example.com", "prg_1", Category.DIGEST, "it", "Shop")
    token = tokens.issue(subscription)
    assert tokens.read(token) == Subscription("ann@example.com", "prg_1", Category.DIGEST, "it",
                                              "Shop")
    import itsdangerous.timed

    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + 2 * 86400)
    with pytest.raises(TokenRefused) as refused:
        tokens.read(token)
    assert refused.value.expired
