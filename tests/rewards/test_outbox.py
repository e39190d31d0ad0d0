"""The transactional outbox: nothing lost while the broker is away, order kept across relays."""

from __future__ import annotations

import asyncpg
import httpx
from referral_events import ProgramEntry
from rewards.api.app import create_app

from tests.support import eventually, free_port, serve_asgi
from tests.support.kafka import collect, of_type

PROGRAM = {"name": "Shop", "landing_url": "https://shop.example/", "currency": "EUR"}


async def _unpublished(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM rewards.outbox WHERE published_at IS NULL")
    finally:
        await conn.close()


async def test_admin_api_works_without_broker_and_publishes_later(
        rewards_settings, admin_token, kafka_bootstrap, topics, database_url) -> None:
    closed = free_port()  # nothing listens there: the broker is "away"
    offline = rewards_settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{closed}"})
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with serve_asgi(create_app(offline)) as url, httpx.AsyncClient(
            base_url=url, headers=headers) as client:
        assert (await client.get("/readyz")).status_code == 200
        created = await client.post("/v1/programs", json=PROGRAM)
        assert created.status_code == 201, created.text
        assert await _unpublished(database_url) == 1

    # Any process with a broker connection (here a second API) relays what was kept.
    async with serve_asgi(create_app(rewards_settings)):
        await eventually(lambda: _none_left(database_url), message="outbox not drained")
    events = await collect(kafka_bootstrap, topics.registry.name,
                           until=lambda ev: bool(of_type(ev, ProgramEntry)))
    assert of_type(events, ProgramEntry)[0].program_id == created.json()["id"]


async def _none_left(database_url: str) -> bool:
    return await _unpublished(database_url) == 0


async def test_two_relays_publish_each_change_once_in_order(
        rewards_settings, admin_token, kafka_bootstrap, topics) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with serve_asgi(create_app(rewards_settings)) as one, \
            serve_asgi(create_app(rewards_settings)) as two, \
            httpx.AsyncClient(headers=headers) as client:
        program = (await client.post(f"{one}/v1/programs", json=PROGRAM)).json()
        for n in range(1, 9):  # alternate replicas, as a load balancer would
            base = one if n % 2 else two
            patched = await client.patch(f"{base}/v1/programs/{program['id']}",
                                         json={"name": f"Shop {n}"})
            assert patched.status_code == 200
        events = await collect(kafka_bootstrap, topics.registry.name,
                               until=lambda ev: len(of_type(ev, ProgramEntry)) >= 9)
    entries = of_type(events, ProgramEntry)
    assert [e.version for e in entries] == list(range(1, 10))
    assert entries[-1].name == "Shop 8"
