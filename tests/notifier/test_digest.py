"""The marketers' digest: the period's KPIs from the rewards stats API, in the programme's
language, once per period and marketer, with unsubscribe honoured."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import httpx
import pytest
from notifier.digest import DigestScheduler, last_complete_period
from referral_events import ReferralStatsCounted
from rewards.api.app import create_app as create_rewards_app
from rewards.config import RewardsSettings
from rewards.db import create_pool
from rewards.stats_store import store_hourly_counts

from tests.notifier.conftest import unsubscribe_tokens
from tests.support import serve_asgi

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
YESTERDAY = NOW.date() - timedelta(days=1)


def test_periods_are_whole_utc_days_and_weeks():
    daily = last_complete_period(NOW, "daily", timedelta(minutes=5))
    assert (daily.start, daily.end) == (YESTERDAY, YESTERDAY)
    just_after_midnight = datetime(2026, 11, 23, 0, 2, tzinfo=UTC)
    assert last_complete_period(just_after_midnight, "daily", timedelta(minutes=5)).end \
        == NOW.date() - timedelta(days=2)  # yesterday's figures have not settled yet
    weekly = last_complete_period(NOW, "weekly", timedelta(0))  # 2026-11-23 is a Monday
    assert (weekly.start.isoformat(), weekly.end.isoformat()) == ("2026-11-16", "2026-11-22")


@pytest.fixture
async def rewards_api(platform_env, admin_token):
    settings = RewardsSettings(**platform_env, relay_interval_seconds=0.2)
    async with serve_asgi(create_rewards_app(settings)) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client, settings


async def _seed(api: httpx.AsyncClient, settings: RewardsSettings, marketer: str) -> dict:
    created = await api.post("/v1/programs", json={
        "name": "Fietsenwinkel", "landing_url": "https://shop.example/", "currency": "EUR",
        "locale": "nl", "marketer_emails": [marketer],
        "referrer_reward": {"kind": "cash", "amount": 1000}})
    assert created.status_code == 201, created.text
    program = created.json()
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            at = datetime.combine(YESTERDAY, time(14), UTC)
            await store_hourly_counts(conn, [
                ReferralStatsCounted(program_id=program["id"], code="C0DE01", channel="email",
                                     hour=at, clicks=1200, conversions=30, attributed=24,
                                     rejected={"self_referral": 6}, revenue=123456, version=9),
                ReferralStatsCounted(program_id=program["id"], code="C0DE02", channel="qr",
                                     hour=at, clicks=300, conversions=2, attributed=1,
                                     revenue=5000, version=3)])
    finally:
        await pool.close()
    return program


async def test_digest_matches_the_stats_api_and_is_sent_once(
        rewards_api, notifier_settings, delivery, smtp_sink):
    api, settings = rewards_api
    marketer = "marketing@fietsen.example"
    program = await _seed(api, settings, marketer)
    stats = (await api.get(f"/v1/programs/{program['id']}/stats",
                           params={"from": YESTERDAY.isoformat(),
                                   "to": YESTERDAY.isoformat()})).json()
    assert (stats["clicks"], stats["attributed"], stats["revenue"]) == (1500, 25, 128456)

    config = notifier_settings.model_copy(update={"rewards_url": str(api.base_url)})
    scheduler = DigestScheduler(settings=config, delivery=delivery,
                                tokens=unsubscribe_tokens(config))
    assert await scheduler.run_once(NOW) == 1
    [message] = smtp_sink.handler.to(marketer)
    assert message["Subject"] == ("Doorverwijzingen Fietsenwinkel op 22 november 2026: "
                                  "25 doorverwezen bestellingen, €\xa01.284,56")
    text = message.get_body(("plain",)).get_content()
    for line in ("Klikken: 1.500", "Conversies: 32", "Doorverwezen bestellingen: 25",
                 "Omzet via doorverwijzingen: €\xa01.284,56", "Beste kanaal: email",
                 f"Open het dashboard: {config.dashboard}"):
        assert line in text, line
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    restarted = DigestScheduler(settings=config, delivery=delivery,
                                tokens=unsubscribe_tokens(config))  # a new process
    assert await restarted.run_once(NOW + timedelta(hours=1)) == 1  # settled, not re-sent
    assert len(smtp_sink.handler.to(marketer)) == 1


async def test_unsubscribed_marketers_get_no_digest(rewards_api, notifier_settings, delivery,
                                                    smtp_sink, notifier):
    api, settings = rewards_api
    marketer = "growth@fietsen.example"
    program = await _seed(api, settings, marketer)
    config = notifier_settings.model_copy(update={"rewards_url": str(api.base_url)})
    tokens = unsubscribe_tokens(config)
    from notifier.unsubscribe import Category, Subscription

    token = tokens.issue(Subscription(marketer, program["id"], Category.DIGEST, "nl"))
    assert (await notifier.post("/unsubscribe", params={"token": token})).status_code == 200
    scheduler = DigestScheduler(settings=config, delivery=delivery, tokens=tokens)
    assert await scheduler.run_once(NOW) == 0
    assert smtp_sink.handler.to(marketer) == []
