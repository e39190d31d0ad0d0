"""GET /r/{code} against a real broker: redirect, click event, cookies, 404, bots."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from referral_events import ClickRecorded, TopicRegistry, derived_id
from referral_events.identity import code_from_click_id, ip_hash
from tracker.config import TrackerSettings

from tests.support import eventually

from .support import BOT_UA, Programme, TopicReader, publish_registry, random_ref


async def test_link_redirects_with_ref_and_click_id_and_records_the_click(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry, tracker_settings: TrackerSettings) -> None:
    response = await web.get(f"/r/{programme.code}",
                             params={"ch": "whatsapp", "utm_source": "friends"},
                             headers={"X-Forwarded-For": "198.51.100.7"})
    assert response.status_code == 302
    assert response.headers["cache-control"] == "no-store"
    location = urlsplit(response.headers["location"])
    query = parse_qs(location.query)
    assert (location.scheme, location.netloc, location.path) == ("https", "shop.example",
                                                                 "/welcome")
    assert query["lang"] == ["en"] and query["ref"] == [programme.code]
    assert query["utm_source"] == ["friends"]
    [click_id] = query["rclid"]
    assert code_from_click_id(click_id) == programme.code

    async with TopicReader(kafka_bootstrap, topics.clicks.name) as clicks:
        got = await clicks.wait_for(lambda e: e.data.click_id == click_id,
                                    message="ClickRecorded never reached the clicks topic")
    click = got.envelope.data
    assert isinstance(click, ClickRecorded) and got.key == programme.code
    assert got.envelope.id == derived_id("click", click_id)
    assert (click.program_id, click.code, click.channel) == (programme.program_id,
                                                             programme.code, "whatsapp")
    assert click.utm == {"utm_source": "friends"}
    # Only a salted hash of the visitor's IP (from the trusted proxy's header) is kept.
    salt = tracker_settings.ip_hash_salt.get_secret_value()
    assert click.ip_hash == ip_hash("198.51.100.7", salt) and click.visitor_hash
    assert click.user_agent and click.user_agent.startswith("Mozilla/5.0")


async def test_link_sets_first_party_cookies(web: httpx.AsyncClient,
                                             programme: Programme) -> None:
    response = await web.get(f"/r/{programme.code}")
    assert response.status_code == 302
    click_id = parse_qs(urlsplit(response.headers["location"]).query)["rclid"][0]
    assert response.cookies["ref_code"] == programme.code
    assert response.cookies["ref_click"] == click_id
    assert response.cookies["ref_vid"]
    set_cookie = " ".join(response.headers.get_list("set-cookie")).lower()
    assert "max-age=2592000" in set_cookie and "samesite=lax" in set_cookie


async def test_last_click_overwrites_and_first_click_keeps_the_earlier_referral(
        web: httpx.AsyncClient, programme: Programme, first_click_programme: Programme,
        kafka_bootstrap: str, topics: TopicRegistry) -> None:
    # Last click (the default): a newer link of the same programme replaces the cookie.
    newer = random_ref("N")
    await publish_registry(kafka_bootstrap, topics, programme.code_entry(newer))
    web.cookies.set("ref_code", programme.code)
    response = await eventually(lambda: _redirected(web, f"/r/{newer}"),
                                message="new code never redirected")
    assert response.cookies["ref_code"] == newer

    # First click: an earlier referral of the same programme keeps its cookies...
    first, second = first_click_programme.codes  # type: ignore[attr-defined]
    web.cookies.clear()
    web.cookies.set("ref_code", first)
    web.cookies.set("ref_click", "clk_" + first + "_earlier")
    response = await eventually(lambda: _redirected(web, f"/r/{second}"),
                                message="first-click code never redirected")
    assert "ref_code" not in response.cookies and "ref_click" not in response.cookies
    assert parse_qs(urlsplit(response.headers["location"]).query)["ref"] == [second]
    # ...but a cookie of another programme does not block it.
    web.cookies.clear()
    web.cookies.set("ref_code", programme.code)
    response = await web.get(f"/r/{second}")
    assert response.cookies["ref_code"] == second


async def test_unknown_or_inactive_code_gets_a_404_page(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    response = await web.get("/r/NOSUCHCODE")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "NOSUCHCODE" in response.text and "not valid" in response.text
    assert (await web.get("/r/%3Cscript%3E")).status_code == 404

    await publish_registry(kafka_bootstrap, topics,
                           programme.code_entry(programme.code, active=False, version=2))

    async def deactivated() -> bool:
        return (await web.get(f"/r/{programme.code}")).status_code == 404

    await eventually(deactivated, message="a deactivated code kept redirecting")


async def test_crawlers_are_redirected_but_not_recorded(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    bot = await web.get(f"/r/{programme.code}", headers={"User-Agent": BOT_UA})
    assert bot.status_code == 302
    assert "rclid" not in parse_qs(urlsplit(bot.headers["location"]).query)
    assert not bot.cookies
    preview = await web.head(f"/r/{programme.code}")
    assert preview.status_code == 302

    human = await web.get(f"/r/{programme.code}")
    click_id = parse_qs(urlsplit(human.headers["location"]).query)["rclid"][0]
    # Same code → same partition, in order: had the bot or the HEAD been recorded, its
    # click would sit before the human's.
    async with TopicReader(kafka_bootstrap, topics.clicks.name) as clicks:
        await clicks.wait_for(lambda e: e.data.click_id == click_id,
                              message="the human click was not recorded")
        assert [r.envelope.data.click_id for r in clicks.received] == [click_id]


async def _redirected(client: httpx.AsyncClient, path: str) -> httpx.Response | None:
    response = await client.get(path)
    return response if response.status_code == 302 else None
