"""Secrets never reach the logs: the services run as real processes (DEBUG logging, access
logs on), are exercised with real keys, the admin token, an SMTP password and client IPs, and
their captured output is searched for each of them."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from referral_events.identity import ip_hash

from tests.notifier.support import reward
from tests.support import eventually, free_port
from tests.support.kafka import publish

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CLIENT_IP, FORWARDED_IP = "203.0.113.77", "198.51.100.23"


async def test_no_secret_or_raw_ip_in_any_log(platform_env, run_service, admin_token,
                                              smtp_sink, kafka_bootstrap, topics):
    smtp_password = "smtp-pw-" + uuid.uuid4().hex
    salt = "salt-" + uuid.uuid4().hex
    ports = {name: free_port() for name in ("tracker", "rewards", "notifier")}
    env = {**platform_env, "LOG_LEVEL": "DEBUG", "IP_HASH_SALT": salt,
           "TRACKER_PORT": str(ports["tracker"]), "REWARDS_PORT": str(ports["rewards"]),
           "NOTIFIER_PORT": str(ports["notifier"]), "SMTP_HOST": smtp_sink.host,
           "SMTP_PORT": str(smtp_sink.port), "SMTP_USERNAME": "mailer",
           "SMTP_PASSWORD": smtp_password}
    for service in ("rewards", "notifier"):
        subprocess.run([str(ROOT / ".venv/bin" / service), "migrate"],
                       env={**os.environ, **env}, check=True, capture_output=True, timeout=60)
    rewards = await run_service("rewards-api", [".venv/bin/rewards", "api"], env,
                                port=ports["rewards"])
    tracker = await run_service("tracker", [".venv/bin/tracker"], env, port=ports["tracker"])
    notifier = await run_service("notifier", [".venv/bin/notifier", "run"], env,
                                 port=ports["notifier"])

    async with httpx.AsyncClient(base_url=rewards.url, timeout=10) as admin:
        auth = {"Authorization": f"Bearer {admin_token}"}
        program = (await admin.post("/v1/programs", headers=auth, json={
            "name": "Logs", "landing_url": "https://shop.example/", "currency": "EUR",
            "referrer_reward": {"kind": "cash", "amount": 1000}})).json()
        referrer = (await admin.post(f"/v1/programs/{program['id']}/referrers", headers=auth,
                                     json={"external_id": "c-1",
                                           "email": "ann@example.com"})).json()
        await admin.get("/v1/programs", headers={"Authorization": "Bearer " + admin_token[::-1]})
        login = await admin.post("/dashboard/login", data={"token": admin_token})
        assert login.status_code < 500
    sk, pk, code = program["secret_key"], program["publishable_key"], referrer["code"]

    async with httpx.AsyncClient(base_url=tracker.url, timeout=10) as web:
        await eventually(lambda: _redirects(web, code), timeout=30)
        fwd = {"X-Forwarded-For": FORWARDED_IP}
        click = await web.post("/v1/clicks", json={"code": code}, headers={
            "X-Publishable-Key": pk, **fwd})
        assert click.status_code == 202, click.text
        conversion = await web.post("/v1/conversions", headers={
            "Authorization": f"Bearer {sk}", **fwd}, json={
            "conversion_id": "o-1", "code": code, "customer": {"id": "c-9"}, "amount": 100,
            "currency": "EUR", "ip": CLIENT_IP, "device_id": "dev-1"})
        assert conversion.status_code == 202, conversion.text
        await web.post("/v1/conversions", headers={"Authorization": f"Bearer {sk}x"}, json={})
        await web.post("/v1/clicks", headers={"X-Publishable-Key": sk}, json={"code": code})
        await web.get(f"/r/{code}", headers=fwd)

    # The notifier tries to log in to the SMTP sink with its password (the sink may refuse
    # AUTH: the failure path is the one most likely to log what it tried).
    await publish(kafka_bootstrap, topics.rewards.name,
                  ("ref_1", reward(email=f"x.{uuid.uuid4().hex[:6]}@example.com")))
    async with httpx.AsyncClient(base_url=notifier.url, timeout=10) as client:
        await eventually(lambda: _counted(client), timeout=30,
                         message="the notifier never handled the reward")

    for proc in (rewards, tracker, notifier):
        proc.stop()
    secrets = {"secret key": sk, "admin token": admin_token, "SMTP password": smtp_password,
               "IP hash salt": salt, "client IP": CLIENT_IP, "forwarded IP": FORWARDED_IP}
    for proc in (rewards, tracker, notifier):
        text = proc.log_path.read_text(errors="replace")
        assert text.strip(), f"{proc.name} logged nothing"
        leaked = [what for what, value in secrets.items() if value in text]
        assert not leaked, f"{proc.name} logged {leaked}; see {proc.log_path}"
    # The hashed form is what may appear (and does, in events, never the raw address).
    assert ip_hash(CLIENT_IP, salt) != CLIENT_IP


async def _redirects(client: httpx.AsyncClient, code: str) -> bool:
    return (await client.head(f"/r/{code}")).status_code == 302


async def _counted(client: httpx.AsyncClient) -> bool:
    metrics = (await client.get("/metrics")).text
    return any(line.startswith(("events_consumed_total", "events_dead_lettered_total"))
               and not line.rstrip().endswith(" 0.0") for line in metrics.splitlines())
