"""The dashboard under test: the real admin API (in-process uvicorn, this test's database and
topics) and Debian chromium driven by Playwright, one browser per session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from referral_kit.migrations import migrate
from rewards.api.app import create_app
from rewards.config import RewardsSettings
from rewards.db import SCHEMA, create_pool

from tests.support import serve_asgi

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


@pytest.fixture
def rewards_settings(platform_env: dict[str, str]) -> RewardsSettings:
    return RewardsSettings(**platform_env, relay_interval_seconds=0.2)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[object]:
    await migrate(database_url, schema=SCHEMA, package="rewards")
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def dashboard_url(rewards_settings: RewardsSettings, pool: object) -> AsyncIterator[str]:
    """Base URL of the admin API serving the dashboard (the schema is migrated first)."""
    async with serve_asgi(create_app(rewards_settings)) as url:
        yield url


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium); "
                    "`make test` does it for you.")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                    args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
