"""The notifier as operators run it: its console script, as a real process."""

from __future__ import annotations

import asyncio
import os
from importlib import resources
from pathlib import Path

import asyncpg

from tests.notifier.support import address, reward
from tests.support import eventually, free_port
from tests.support.kafka import publish

NOTIFIER = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "notifier")


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        NOTIFIER, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_migrate_creates_the_schema_once(platform_env, database_url):
    code, out = await _cli("migrate", env=platform_env)
    assert code == 0, out
    shipped = len(list(resources.files("notifier").joinpath("migrations").glob("*.sql")))
    assert f"{shipped} migration(s) applied" in out
    code, out = await _cli("migrate", env=platform_env)
    assert code == 0 and "0 migration(s) applied" in out, out
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('notifier.notifications') IS NOT NULL")
    finally:
        await conn.close()


async def test_run_serves_health_and_emails_from_the_rewards_topic(
        platform_env, smtp_sink, kafka_bootstrap, topics, run_service):
    # run_service last: its process stops before the test database is dropped.
    port = free_port()
    env = {**platform_env, "SMTP_HOST": smtp_sink.host, "SMTP_PORT": str(smtp_sink.port),
           "NOTIFIER_PORT": str(port), "NOTIFIER_FROM_EMAIL": "rewards@shop.example"}
    service = await run_service("notifier", [NOTIFIER, "run"], env, port=port)

    to = address()
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", reward(email=to, locale="da")))
    [message] = await eventually(lambda: smtp_sink.handler.to(to), timeout=30,
                                 message=f"no email; see {service.log_path}")
    assert message["From"] == "Referrals <rewards@shop.example>"
    assert message["Message-ID"].endswith("@shop.example>")


async def test_run_refuses_the_development_secret_in_production(platform_env):
    code, out = await _cli("run", env={**platform_env, "ENVIRONMENT": "production",
                                        "NOTIFIER_UNSUBSCRIBE_SECRET": "dev-unsubscribe-secret",
                                        "NOTIFIER_PORT": str(free_port())})
    assert code == 2
    assert "NOTIFIER_UNSUBSCRIBE_SECRET" in out
