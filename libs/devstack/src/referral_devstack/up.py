"""`make up`: the whole platform on one machine, in the foreground, Ctrl-C to stop.

Order: PostgreSQL (embedded, data in .data/postgres) → broker (embedded Tansu) → SMTP
catcher → topics → migrations → services (each its own process) → demo programme → banner.
Any external component named by KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL is used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import asyncpg
import httpx
from dotenv import dotenv_values
from referral_events import TopicRegistry
from referral_kit.kafka import ensure_topics

from .broker import CLIENT_ENV, broker_command, broker_env
from .demo import link_is_live, seed_demo
from .net import port_open
from .postgres import EmbeddedPostgres, with_database
from .supervisor import Supervisor

BIN = Path(sys.executable).parent


def _defaults(root: Path) -> dict[str, str]:
    env = {
        "ENVIRONMENT": "local",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        **CLIENT_ENV,
        "ADMIN_TOKEN": "dev-admin-token",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": "1025",
        "MAILCATCHER_WEB_PORT": "8025",
        "TRACKER_PORT": "8001",
        "REWARDS_PORT": "8002",
        "NOTIFIER_PORT": "8003",
        "ATTRIBUTION_WEB_PORT": "8004",
        "ATTRIBUTION_DATA_DIR": str(root / ".data" / "attribution"),
        "PYTHONUNBUFFERED": "1",
    }
    dotenv = root / ".env"
    if dotenv.is_file():
        env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    env.update(os.environ)
    return env


async def _ensure_database(server_uri: str, name: str) -> str:
    conn = await asyncpg.connect(server_uri)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_uri, name)


async def _wait_ready(sup: Supervisor, name: str, url: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if sup.failed.is_set():
                raise RuntimeError(sup.failure)
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    sup.say("up", f"{name} ready ({url})")
                    return
            await asyncio.sleep(0.25)
    raise TimeoutError(f"{name} not ready at {url} after {within:.0f}s")


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


async def run(root: Path) -> int:
    env = _defaults(root)
    data = root / ".data"
    data.mkdir(exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    embedded_kafka = "KAFKA_BOOTSTRAP_SERVERS" not in os.environ
    embedded_pg = "DATABASE_URL" not in os.environ
    broker_host, broker_port = _host_port(env["KAFKA_BOOTSTRAP_SERVERS"])
    for what, port in [("broker", broker_port if embedded_kafka else None),
                       ("SMTP catcher", int(env["SMTP_PORT"])),
                       ("tracker", int(env["TRACKER_PORT"])),
                       ("rewards", int(env["REWARDS_PORT"]))]:
        if port and port_open("127.0.0.1", port):
            print(f"Port {port} ({what}) is already in use: is another `make up` running? "
                  f"Stop it, or set the port's variable (see .env.example).", file=sys.stderr)
            return 1

    sup = Supervisor(env)
    pg: EmbeddedPostgres | None = None
    try:
        if embedded_pg:
            sup.say("postgres", f"starting embedded PostgreSQL in {data / 'postgres'}")
            pg = await asyncio.to_thread(EmbeddedPostgres(data / "postgres").start)
            env["DATABASE_URL"] = await _ensure_database(pg.uri, "referrals")
            sup.base_env = env
        if embedded_kafka:
            await sup.start("broker", broker_command(broker_host, broker_port),
                            env=broker_env(sup.base_env))
            await _wait_port(sup, broker_host, broker_port, "broker")
        mail_dir = data / "mail"
        await sup.start("mail", [str(BIN / "referral-dev"), "mailcatcher",
                                 "--port", env["SMTP_PORT"], "--web-port",
                                 env["MAILCATCHER_WEB_PORT"], "--dir", str(mail_dir),
                                 "--demo-state", str(data / "demo.json")])
        await _wait_port(sup, "127.0.0.1", int(env["SMTP_PORT"]), "SMTP catcher")

        topics = TopicRegistry(env.get("TOPIC_PREFIX", ""), int(env.get("TOPIC_PARTITIONS", 4)))
        created = await ensure_topics(env["KAFKA_BOOTSTRAP_SERVERS"], topics.all())
        sup.say("up", f"topics ready ({len(created)} created)")
        await sup.run_once("migrate", [str(BIN / "rewards"), "migrate"])
        await sup.run_once("migrate", [str(BIN / "notifier"), "migrate"])

        tracker = f"http://127.0.0.1:{env['TRACKER_PORT']}"
        rewards = f"http://127.0.0.1:{env['REWARDS_PORT']}"
        notifier = f"http://127.0.0.1:{env['NOTIFIER_PORT']}"
        attribution = f"http://127.0.0.1:{env['ATTRIBUTION_WEB_PORT']}"
        await sup.start("tracker", [str(BIN / "tracker")])
        await sup.start("attribution", [str(BIN / "attribution")])
        await sup.start("rewards-api", [str(BIN / "rewards"), "api"])
        await sup.start("rewards-wkr", [str(BIN / "rewards"), "worker"])
        await sup.start("notifier", [str(BIN / "notifier"), "run"])
        for name, url in [("rewards-api", rewards), ("tracker", tracker),
                          ("notifier", notifier), ("attribution", attribution)]:
            await _wait_ready(sup, name, f"{url}/readyz")

        mail_web = f"http://127.0.0.1:{env['MAILCATCHER_WEB_PORT']}"
        demo = await seed_demo(rewards_url=rewards, tracker_url=tracker,
                               admin_token=env["ADMIN_TOKEN"], landing_url=f"{mail_web}/landing",
                               state_path=data / "demo.json")
        for _ in range(120):
            if await link_is_live(tracker, demo.code):
                break
            await asyncio.sleep(0.25)
        _banner(sup, env, demo, tracker, rewards, mail_web, mail_dir)
        waiter = asyncio.create_task(stop.wait())
        failure = asyncio.create_task(sup.failed.wait())
        await asyncio.wait({waiter, failure}, return_when=asyncio.FIRST_COMPLETED)
        if sup.failed.is_set():
            sup.say("up", f"stopping: {sup.failure}")
            return 1
        sup.say("up", "stopping (Ctrl-C)")
        return 0
    except (RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
        sup.say("up", f"start-up failed: {exc}")
        return 1
    finally:
        await sup.stop_all()
        if pg is not None:
            await asyncio.to_thread(pg.stop)
        sup.say("up", "stopped; nothing left running")


async def _wait_port(sup: Supervisor, host: str, port: int, what: str) -> None:
    for _ in range(200):
        if sup.failed.is_set():
            raise RuntimeError(sup.failure)
        if port_open(host, port):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} did not open {host}:{port}")


def _banner(sup: Supervisor, env: dict[str, str], demo, tracker: str, rewards: str,
            mail_web: str, mail_dir: Path) -> None:
    conversion = json.dumps({
        "conversion_id": "order-$(date +%s)", "code": demo.code,
        "customer": {"id": "friend-$(date +%s)", "email": "friend@demo-customer.example",
                     "is_new": True},
        "amount": 4999, "currency": demo.currency,
    })
    curl = (f"curl -sS -X POST {tracker}/v1/conversions "
            f"-H {shlex.quote('Authorization: Bearer ' + demo.secret_key)} "
            "-H 'Content-Type: application/json' "
            f"-d \"{conversion.replace(chr(34), chr(92) + chr(34))}\"")
    lines = [
        "",
        "Referral platform is up. Ctrl-C stops everything.",
        f"  Dashboard          {rewards}/dashboard   (log in with {env['ADMIN_TOKEN']})",
        f"  Admin API docs     {rewards}/docs   (Authorization: Bearer {env['ADMIN_TOKEN']})",
        f"  Tracker API docs   {tracker}/docs",
        f"  Caught mail        {mail_web}   (files: {mail_dir}/*.eml)",
        f"  Demo programme     {demo.program_id}   referrer {demo.referrer_id} (code {demo.code})",
        f"  Referral link      {demo.referral_url}?ch=email   (open it in a browser: curl and"
        " bots are redirected but not counted)",
        "  Post a conversion (the checkout's call):",
        f"    {curl}",
        "",
    ]
    for line in lines:
        sup.say("up", line)
