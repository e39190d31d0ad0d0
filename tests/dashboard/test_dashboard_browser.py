"""The dashboard in a real browser (Debian chromium through Playwright) against the real admin
API and PostgreSQL: exact figures, live refresh, review actions, CSV export, login, phones.
Screenshots go to tests/artifacts/screenshots/."""

from __future__ import annotations

import csv
import io
import time
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from rewards.stats_store import store_hourly_counts

from tests.dashboard import seed as known
from tests.support import eventually

pytestmark = pytest.mark.e2e
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def norm(text: str | None) -> str:
    """ICU puts no-break spaces in money and dates; compare with plain spaces."""
    return " ".join((text or "").replace("\u00a0", " ").replace("\u202f", " ").split())


async def open_page(browser: Any, viewport: dict[str, int]) -> tuple[Any, Any, list[str]]:
    """A new context and page; the list collects console errors and CSP violations."""
    context = await browser.new_context(viewport=viewport, accept_downloads=True)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return context, page, problems


async def log_in(page: Any, base: str, token: str, program: str | None = None) -> None:
    await page.goto(f"{base}/dashboard" + (f"?program={program}" if program else ""))
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await page.locator("#kpis").wait_for()


async def text(page: Any, selector: str) -> str:
    return norm(await page.locator(selector).first.text_content())


async def rows(page: Any, table: str) -> list[list[str]]:
    cells = await page.eval_on_selector_all(
        f"#{table} tbody tr", "trs => trs.map(tr => [...tr.cells].map(c => c.textContent))")
    return [[norm(c) for c in row] for row in cells]


async def shows(page: Any, expected: dict[str, str], timeout: float = 10) -> None:
    async def check() -> bool:
        seen = {key: await text(page, f"#{key}") for key in expected}
        assert seen == expected
        return True

    await eventually(check, timeout=timeout, interval=0.1)


async def table_is(page: Any, table: str, expected: list[list[str]], timeout: float = 10) -> None:
    async def check() -> bool:
        assert await rows(page, table) == expected
        return True

    await eventually(check, timeout=timeout, interval=0.1)


async def test_dashboard_shows_exact_figures_updates_live_and_reviews(
        browser, dashboard_url, admin_token, pool, topics, screenshot_dir):
    async with pool.acquire() as conn:
        data = await known.seed(conn, topics)
    context, page, problems = await open_page(browser, DESKTOP)
    try:
        await log_in(page, dashboard_url, admin_token)
        # The newest programme comes first, in its own locale and currency; pick the other.
        assert await page.locator("#program option:checked").text_content() == (
            "Other shop · USD")
        await shows(page, {"kpi-clicks": "77", "kpi-revenue": "$0.00", "kpi-roi": known.NONE})
        await page.locator("select").and_(page.get_by_label("Programme")).select_option(
            label="Winkel · EUR")

        await shows(page, known.EXPECTED_TILES)
        await table_is(page, "channels", known.EXPECTED_CHANNELS)
        await table_is(page, "referrers", [
            [c.format(ann=data.ann["code"], bob=data.bob["code"]) for c in row]
            for row in known.EXPECTED_REFERRERS])
        await table_is(page, "rejections", known.EXPECTED_REJECTIONS)
        await table_is(page, "statuses", known.EXPECTED_STATUSES)
        assert [norm(t) for t in await page.locator("#funnel li").all_text_contents()] == (
            known.EXPECTED_FUNNEL)
        daily = await rows(page, "daily")
        assert len(daily) == 30 and daily[2][1:] == ["334", "11", "8", "2", "€ 570,50", "€ 17,00"]
        assert await page.locator("#chart-activity canvas").count() == 1
        assert await page.locator("#chart-money canvas").count() == 1

        in_review = await rows(page, "queue-in_review")
        assert len(in_review) == 1 and in_review[0][1:6] == [
            "€ 10,00 cash", "Referrer", f"Ann{data.ann['code']}", "€ 100,00whatsapp · order-a2",
            "velocity = 12 (threshold 10) → flag"]
        pending = await rows(page, "queue-pending")
        assert sorted(r[1:4] for r in pending) == [
            ["€ 10,00 cash", "Referrer", f"Ann{data.ann['code']}"],
            ["€ 5,00 discount", "Friendfriend-a1@example.org", f"Ann{data.ann['code']}"]]
        assert await text(page, "#count-in_review") == "(1)"
        await page.screenshot(path=screenshot_dir / "dashboard-1280.png", full_page=True)

        # A new conversion of Bob's (attribution's count for that hour, a higher version)
        # shows without a reload, within 5 s.
        await page.evaluate("window.__sameDocument = true")
        async with pool.acquire() as conn, conn.transaction():
            await store_hourly_counts(conn, [known.counts(
                data.program["id"], data.bob["code"], "email", known.at(known.D2, 23), 2,
                clicks=34, conversions=3, attributed=3, revenue=13575)])
        stored = time.monotonic()
        await shows(page, {"kpi-conversions": "45", "kpi-attributed": "34",
                           "kpi-revenue": "€ 3.115,75"}, timeout=5)
        assert time.monotonic() - stored < 5
        assert await page.evaluate("window.__sameDocument") is True

        # Approve the flagged reward: it leaves the queue and counts as approved.
        await page.get_by_role("button", name="Approve € 10,00 cash referrer reward, "
                                               "referrer Ann, order order-a2").click()
        await table_is(page, "queue-in_review", [["Nothing waits for review."]])
        await table_is(page, "statuses", [["Pending (hold period)", "2"], ["In review", "0"],
                                          ["Approved", "2"], ["Rejected", "1"],
                                          ["Reversed", "0"]])
        assert norm(await page.locator("#announce").text_content()).startswith("Approved:")
        # Reject the friend's discount with a reason, through the dialog.
        await page.get_by_role("button", name="Reject € 5,00 discount friend reward, "
                                               "referrer Ann, order order-a1").click()
        dialog = page.get_by_role("dialog", name="Reject reward")
        await dialog.get_by_label("Reason (the beneficiary reads it)").fill("Duplicate account")
        await dialog.get_by_role("button", name="Reject reward").click()
        await table_is(page, "statuses", [["Pending (hold period)", "1"], ["In review", "0"],
                                          ["Approved", "2"], ["Rejected", "2"],
                                          ["Reversed", "0"]])
        assert len(await rows(page, "queue-pending")) == 1
        async with pool.acquire() as conn:
            assert await conn.fetchrow(
                "SELECT status, reason FROM rewards WHERE id = $1",
                data.rewards["a1f"]["id"]) == ("rejected", "Duplicate account")
            assert await conn.fetchval("SELECT status FROM rewards WHERE id = $1",
                                       data.rewards["a2"]["id"]) == "approved"

        # One day only: the figures follow the range, and so does the export link.
        day = known.D1.isoformat()
        await page.get_by_label("From", exact=True).fill(day)
        await page.get_by_label("To", exact=True).fill(day)
        await shows(page, {"kpi-clicks": "1.200", "kpi-conversions": "33",
                           "kpi-attributed": "25", "kpi-revenue": "€ 2.500,00"})
        assert f"from={day}&to={day}" in page.url
        async with page.expect_download() as info:
            await page.get_by_role("link", name="Export the rewards of this programme and "
                                                "date range as CSV").click()
        download = await info.value
        exported = list(csv.DictReader(io.StringIO(
            (await download.path()).read_text(encoding="utf-8"))))
        assert download.suggested_filename == f"rewards-{data.program['id']}.csv"
        assert sorted((r["id"], r["status"], r["beneficiary"], r["amount"], r["currency"],
                       r["referrer_code"]) for r in exported) == sorted([
            (data.rewards["a1"]["id"], "pending", "referrer", "1000", "EUR", data.ann["code"]),
            (data.rewards["a1f"]["id"], "rejected", "friend", "500", "EUR", data.ann["code"]),
        ])
        assert not problems, problems  # no CSP violation, no script error
    finally:
        await context.close()


async def test_login_is_required_and_logout_ends_the_session(browser, dashboard_url,
                                                             admin_token, pool, topics):
    async with pool.acquire() as conn:
        data = await known.seed(conn, topics)
    stats_url = f"{dashboard_url}/v1/programs/{data.program['id']}/stats"
    context, page, problems = await open_page(browser, DESKTOP)
    wanted = f"/dashboard?program={data.program['id']}"
    try:
        await page.goto(dashboard_url + wanted)
        assert page.url == f"{dashboard_url}/dashboard/login?next={quote(wanted, safe='')}"
        assert await page.locator("#kpis").count() == 0
        assert (await page.request.get(stats_url)).status == 401
        assert (await page.request.get(f"{dashboard_url}/v1/programs")).status == 401

        await page.get_by_label("Admin token").fill("not-the-token")
        await page.get_by_role("button", name="Log in").click()
        assert "not this platform's admin token" in await text(page, "[role=alert]")
        assert await context.cookies() == []

        await page.get_by_label("Admin token").fill(admin_token)
        await page.get_by_role("button", name="Log in").click()
        await page.locator("#kpis").wait_for()
        [cookie] = await context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["secure"],
                cookie["path"]) == ("rewards_session", True, "Strict", False, "/")
        assert admin_token not in cookie["value"]
        await shows(page, {"kpi-clicks": "1.534"})
        assert (await page.request.get(stats_url)).status == 200

        await page.get_by_role("button", name="Log out of the dashboard").click()
        await page.wait_for_url(f"{dashboard_url}/dashboard/login?out=1")
        assert await text(page, "[role=status]") == "You are logged out."
        assert await context.cookies() == []
        assert (await page.request.get(stats_url)).status == 401
        await page.goto(f"{dashboard_url}/dashboard")
        assert page.url == f"{dashboard_url}/dashboard/login?next=%2Fdashboard"
        # Chromium logs the wrong token's 401 answer; nothing else may go wrong.
        assert [p for p in problems if "status of 401" not in p] == [], problems
    finally:
        await context.close()


async def test_phone_width_is_readable(browser, dashboard_url, admin_token, pool, topics,
                                       screenshot_dir):
    async with pool.acquire() as conn:
        data = await known.seed(conn, topics)
    context, page, problems = await open_page(browser, PHONE)
    try:
        await log_in(page, dashboard_url, admin_token, data.program["id"])
        await shows(page, known.EXPECTED_TILES)
        await eventually(lambda: page.locator("#queue-pending tbody tr").count(), timeout=10)
        # Nothing wider than the screen: tables scroll inside their cards, tiles wrap.
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        tile = await page.locator("#kpi-revenue").bounding_box()
        assert tile and tile["x"] >= 0 and tile["x"] + tile["width"] <= PHONE["width"]
        # Every control has an accessible name.
        unnamed = await page.evaluate("""() => [...document.querySelectorAll(
            'button, select, input:not([type=hidden]), textarea, a[href]')].filter(e =>
            !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
            && !e.textContent.trim()).map(e => e.outerHTML)""")
        assert unnamed == []
        # (uPlot's legends are tables of their own, named by the chart around them.)
        assert await page.locator("table:not(.u-legend):not(:has(caption))").count() == 0
        await page.screenshot(path=screenshot_dir / "dashboard-phone.png", full_page=True)
        assert not problems, problems
    finally:
        await context.close()


def test_expected_range_is_the_default_one():
    # The seeded days lie inside the default range (the last 30 days), OLD outside it.
    assert known.TODAY - timedelta(days=29) <= known.D1 < known.D2 <= known.TODAY
    assert known.OLD < known.TODAY - timedelta(days=29)
