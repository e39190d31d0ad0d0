"""The dashboard's session: login, the cookie's flags, the cookie accepted by the admin API,
CSRF protection of writes made with it, expiry and tampering, and the page's headers."""

from __future__ import annotations

import re

import httpx
import pytest
from rewards.api.app import create_app
from rewards.config import RewardsSettings
from rewards.dashboard import auth
from rewards.dashboard.pages import CSP

from tests.dashboard import seed as known


async def logged_in(client: httpx.AsyncClient, token: str) -> str:
    """Log in with the form; returns the page's CSRF token."""
    response = await client.post("/dashboard/login", data={"token": token})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    page = await client.get("/dashboard")
    assert page.status_code == 200
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


@pytest.fixture
async def client(dashboard_url):
    async with httpx.AsyncClient(base_url=dashboard_url) as client:
        yield client


async def test_cookie_reads_and_writes_with_csrf(client, admin_token, pool, topics):
    async with pool.acquire() as conn:
        data = await known.seed(conn, topics)
    pid, reward = data.program["id"], data.rewards["a2"]["id"]
    paths = [f"/v1/programs/{pid}/stats", f"/v1/programs/{pid}", "/v1/programs",
             f"/dashboard/api/programs/{pid}/review-queue", f"/v1/programs/{pid}/rewards.csv"]
    for path in paths:
        assert (await client.get(path)).status_code == 401, path
    assert (await client.get("/dashboard")).headers["location"] == (
        "/dashboard/login?next=%2Fdashboard")

    csrf = await logged_in(client, admin_token)
    for path in paths:
        assert (await client.get(path)).status_code == 200, path
    queue = (await client.get(f"/dashboard/api/programs/{pid}/review-queue")).json()
    assert [r["id"] for r in queue["in_review"]["items"]] == [reward]
    assert queue["in_review"]["items"][0]["referrer"]["name"] == "Ann"
    assert (queue["pending"]["total"], queue["pending"]["more"]) == (2, False)

    approve = f"/v1/rewards/{reward}/approve"
    origin = str(client.base_url).rstrip("/")
    refused = [
        {},                                                     # no CSRF token
        {"X-CSRF-Token": "forged"},                             # a wrong one
        {"X-CSRF-Token": csrf, "Origin": "https://evil.example"},  # right token, other site
        {"X-CSRF-Token": csrf, "Origin": "null"},
    ]
    for headers in refused:
        response = await client.post(approve, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["field"] == "X-CSRF-Token"
    response = await client.post(approve, headers={"X-CSRF-Token": csrf, "Origin": origin})
    assert response.status_code == 200 and response.json()["status"] == "approved"
    # A reject needs its reason, and the same protection.
    pending = queue["pending"]["items"][0]["id"]
    response = await client.post(f"/v1/rewards/{pending}/reject", json={"reason": "test"},
                                 headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200 and response.json()["reason"] == "test"


async def test_bearer_still_works_and_bad_cookies_do_not(client, admin_token, pool, topics,
                                                         rewards_settings):
    async with pool.acquire() as conn:
        data = await known.seed(conn, topics)
    stats = f"/v1/programs/{data.program['id']}/stats"
    assert (await client.get(stats, headers={"Authorization": f"Bearer {admin_token}"})
            ).status_code == 200
    value, _ = auth.issue(admin_token, lifetime_seconds=60)
    expired, _ = auth.issue(admin_token, lifetime_seconds=60, now=1_000_000)
    other, _ = auth.issue("another-token", lifetime_seconds=60)
    payload, signature = value.split(".")
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    for bad in (expired, other, tampered, "garbage", value + "x"):
        response = await client.get(stats, cookies={auth.SESSION_COOKIE: bad})
        assert response.status_code == 401, bad
        assert "log in again" in response.json()["detail"]
    assert (await client.get(stats, cookies={auth.SESSION_COOKIE: value})).status_code == 200
    # A wrong bearer token is refused even with a good cookie next to it.
    response = await client.get(stats, cookies={auth.SESSION_COOKIE: value},
                                headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401


async def test_login_form_and_cookie_flags(client, admin_token):
    wrong = await client.post("/dashboard/login", data={"token": "nope"})
    assert wrong.status_code == 401 and "admin token (ADMIN_TOKEN)" in wrong.text
    assert "set-cookie" not in wrong.headers
    foreign = await client.post("/dashboard/login", data={"token": admin_token},
                                headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers

    response = await client.post("/dashboard/login", data={
        "token": admin_token, "next": "/dashboard?program=prg_x&from=2026-01-01"})
    assert response.headers["location"] == "/dashboard?program=prg_x&from=2026-01-01"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{auth.SESSION_COOKIE}=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= flags
    assert "secure" not in flags  # plain http on 127.0.0.1 keeps working
    assert admin_token not in cookie

    for target in ("https://evil.example/", "//evil.example/dashboard", "/v1/programs",
                   "/dashboard/../v1", "/dashboardx"):
        response = await client.post("/dashboard/login",
                                     data={"token": admin_token, "next": target})
        assert response.headers["location"] == "/dashboard", target

    csrf = await logged_in(client, admin_token)
    assert (await client.post("/dashboard/logout", data={"csrf": "forged"})).status_code == 403
    out = await client.post("/dashboard/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/login?out=1"
    assert 'max-age=0' in out.headers["set-cookie"].lower()


@pytest.mark.parametrize(("base_url", "environment"), [("https://dash.example", "test"),
                                                       ("http://127.0.0.1", "production")])
async def test_cookie_is_secure_over_https_and_in_production(platform_env, admin_token,
                                                             base_url, environment):
    env = {**platform_env, "ENVIRONMENT": environment}
    if environment == "production":
        env["IP_HASH_SALT"] = "a-long-random-production-salt"
    settings = RewardsSettings(**env)
    # Login needs no database: the app's lifespan is not run here.
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        response = await client.post("/dashboard/login", data={"token": admin_token})
    assert response.status_code == 303
    assert "secure" in {p.strip().lower() for p in response.headers["set-cookie"].split(";")}


async def test_pages_send_a_strict_csp_and_load_only_own_assets(client, admin_token):
    login = await client.get("/dashboard/login")
    assert login.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    await logged_in(client, admin_token)
    page = await client.get("/dashboard")
    for header, value in {"content-security-policy": CSP, "x-frame-options": "DENY",
                          "x-content-type-options": "nosniff",
                          "cache-control": "no-store"}.items():
        assert page.headers[header] == value
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith(("/", "#", "data:")) for s in sources), sources
    assert "<script>" not in page.text and " on" + "click=" not in page.text
    for src in re.findall(r'src="([^"]+)"', page.text):
        asset = await client.get(src)
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith("text/javascript")


def test_session_lifetime_setting_is_listed_in_env_example(monkeypatch):
    from pathlib import Path

    default = RewardsSettings.model_fields["dashboard_session_hours"].default
    listed = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    assert f"REWARDS_DASHBOARD_SESSION_HOURS={default:g}" in listed
    monkeypatch.setenv("REWARDS_DASHBOARD_SESSION_HOURS", "0.5")
    assert RewardsSettings().dashboard_session_hours == 0.5
