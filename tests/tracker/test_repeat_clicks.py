"""The same visitor clicking the same code within the dedupe window counts once."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from referral_events import TopicRegistry
from tracker.recent import RecentClicks

from .support import BROWSER_UA, Programme, publishable, read_all, running_tracker

OTHER_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Safari/605.1.15"


def _click_id(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["rclid"][0]


async def test_a_repeat_visit_keeps_its_first_click_and_is_not_published(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    first = await web.get(f"/r/{programme.code}")
    visitor = first.cookies["ref_vid"]
    # Same visitor cookie, even from elsewhere: same click, same cookies, nothing published.
    async with httpx.AsyncClient(base_url=str(web.base_url), cookies={"ref_vid": visitor},
                                 headers={"User-Agent": OTHER_UA}) as same_visitor:
        again = await same_visitor.get(f"/r/{programme.code}")
    assert _click_id(again) == _click_id(first)
    assert again.cookies["ref_click"] == _click_id(first)
    # No cookie (refused by the browser): recognised by IP + user agent.
    web.cookies.clear()
    cookieless = await web.get(f"/r/{programme.code}")
    assert _click_id(cookieless) == _click_id(first)
    # Another visitor: another click.
    async with httpx.AsyncClient(base_url=str(web.base_url),
                                 headers={"User-Agent": OTHER_UA}) as other:
        stranger = await other.get(f"/r/{programme.code}")
    assert _click_id(stranger) != _click_id(first)

    clicks = await read_all(kafka_bootstrap, topics.clicks)
    assert sorted(c.envelope.data.click_id for c in clicks) == sorted(
        [_click_id(first), _click_id(stranger)])
    metrics = (await web.get("/metrics")).text
    assert 'tracker_clicks_deduplicated_total{via="link"}' in metrics


async def test_click_api_dedupes_by_visitor_id_else_ip_and_user_agent(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    async def click(**body: str) -> str:
        response = await web.post("/v1/clicks", json={"code": programme.code, **body},
                                  headers=publishable(programme))
        assert response.status_code == 202, response.text
        return str(response.json()["click_id"])

    first = await click(visitor_id="v-1")
    assert await click(visitor_id="v-1") == first
    second = await click(visitor_id="v-2")
    anonymous = await click()
    assert await click() == anonymous
    assert len({first, second, anonymous}) == 3
    clicks = await read_all(kafka_bootstrap, topics.clicks)
    assert sorted(c.envelope.data.click_id for c in clicks) == sorted([first, second, anonymous])


async def test_dedupe_can_be_turned_off(tracker_settings, programme: Programme) -> None:
    settings = tracker_settings.model_copy(update={"click_dedupe_seconds": 0})
    async with running_tracker(settings) as web:
        first = await web.get(f"/r/{programme.code}", headers={"User-Agent": BROWSER_UA})
        again = await web.get(f"/r/{programme.code}", headers={"User-Agent": BROWSER_UA})
        assert _click_id(first) != _click_id(again)


async def test_the_window_starts_at_the_counted_click_and_is_not_extended() -> None:
    now = [1000.0]
    clicks = RecentClicks(seconds=3600, capacity=10, clock=lambda: now[0])
    written: list[str] = []

    async def write() -> str:
        written.append(f"clk_{len(written)}")
        return written[-1]

    assert await clicks.once("K:v", write) == ("clk_0", True)
    now[0] += 3599
    assert await clicks.once("K:v", write) == ("clk_0", False)
    now[0] += 2  # an hour after the first click, although a repeat came a second ago
    assert await clicks.once("K:v", write) == ("clk_1", True)


async def test_the_memory_is_bounded() -> None:
    clicks = RecentClicks(seconds=3600, capacity=2)

    async def write() -> str:
        return "clk"

    for key in ("a", "b", "c"):
        await clicks.once(key, write)
    assert "a" not in clicks and "b" in clicks and "c" in clicks


async def test_replicas_give_one_visitor_the_same_visitor_hash(
        web: httpx.AsyncClient, tracker_settings, programme: Programme,
        kafka_bootstrap: str, topics: TopicRegistry) -> None:
    # Each replica remembers its own clicks, so a repeat reaching another replica is
    # published again; it carries the same visitor_hash, by which consumers dedupe.
    web.cookies.clear()
    first = await web.get(f"/r/{programme.code}")
    async with running_tracker(tracker_settings) as other_replica:
        second = await other_replica.get(f"/r/{programme.code}")
    assert first.cookies["ref_vid"] == second.cookies["ref_vid"]
    clicks = await read_all(kafka_bootstrap, topics.clicks)
    assert {c.envelope.data.click_id for c in clicks} == {_click_id(first), _click_id(second)}
    assert len({c.envelope.data.visitor_hash for c in clicks}) == 1
