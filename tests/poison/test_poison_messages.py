"""Poison on every consumed topic: invalid JSON, a schema version nobody reads, a payload over
MAX_EVENT_BYTES, an event type that does not belong on the topic. Each is dead-lettered with
its reason, and the consumer goes on: a valid event published after the poison is handled.

attribution (clicks, conversions: a real Faust process) · rewards worker (attributions,
reversals, stats) · notifier (rewards).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from referral_events import (
    MAX_EVENT_BYTES,
    ClickRecorded,
    ConversionReversed,
    EventDeadLettered,
    ReferralAttributed,
    ReferralStatsCounted,
    encode,
    new_event,
    utcnow,
)
from referral_events.identity import new_click_id
from rewards.api.app import create_app
from rewards.worker.run import run_worker

from tests.attribution.test_worker import _conversion, _decisions, _registry
from tests.notifier.support import address, reward
from tests.rewards.test_worker import _attributed, _programme, _rewards
from tests.support import eventually, free_port, serve_asgi
from tests.support.kafka import collect, of_type, publish

pytestmark = pytest.mark.e2e
EXPECTED_CODES = ["malformed", "unsupported_schema_version", "malformed", "unknown_type"]


def poisons(valid, foreign) -> list[bytes]:
    """The four poisons, built from a valid envelope of the topic and one of another topic."""
    doc = json.loads(encode(valid))
    old_version = json.dumps({**doc, "schemaversion": 99}).encode()
    huge = json.dumps({**doc, "padding": "x" * (MAX_EVENT_BYTES + 16)}).encode()
    assert len(huge) > MAX_EVENT_BYTES
    return [b"{not json", old_version, huge, encode(foreign)]


def assert_dead_lettered(dead, consumer: str) -> None:
    records = of_type(dead, EventDeadLettered)
    assert [r.error_code for r in records] == EXPECTED_CODES, [
        (r.error_code, r.reason) for r in records]
    assert all(r.reason and r.consumer.startswith(consumer) for r in records), records
    assert "exceeds" in records[2].reason and "not kept" in records[2].reason
    assert records[2].original_value is None  # else the dead letter were too big to read
    assert records[0].original_value == "{not json"
    assert "99" in records[1].reason and "belong" in records[3].reason


async def dead_letters(bootstrap: str, topic: str):
    return await collect(bootstrap, topic, timeout=60, until=lambda ev: len(ev) >= 4)


# --- attribution ---------------------------------------------------------------------------

@pytest.fixture
async def attribution(platform_env, run_service):
    port = free_port()
    env = {**platform_env, "ATTRIBUTION_WEB_PORT": str(port), "ATTRIBUTION_GRACE_SECONDS": "2"}
    return await run_service("attribution", [".venv/bin/attribution"], env, port=port,
                             timeout=90)


async def test_attribution_clicks_and_conversions(attribution, kafka_bootstrap, topics):
    code = "PZN" + uuid.uuid4().hex[:5].upper()
    await _registry(kafka_bootstrap, topics, code)
    click = new_event(ClickRecorded(click_id=new_click_id(code), program_id="prg_1", code=code,
                                    channel="whatsapp", occurred_at=utcnow()), source="tracker")
    conversion = _conversion(code, click_id=click.data.click_id)
    reversal = new_event(ConversionReversed(program_id="prg_1", conversion_id="o-1",
                                            reason="refund", occurred_at=utcnow()), source="t")
    await publish(kafka_bootstrap, topics.clicks.name,
                  *[(code, p) for p in poisons(click, reversal)], (code, click))
    await publish(kafka_bootstrap, topics.conversions.name,
                  *[(code, p) for p in poisons(conversion, click)], (code, conversion))

    events = await collect(kafka_bootstrap, topics.attributions.name, timeout=90,
                           until=lambda ev: bool(_decisions(ev, conversion.data.conversion_id)))
    [decision] = _decisions(events, conversion.data.conversion_id)
    # The click after the poison on the clicks topic was handled too: it is the one credited.
    assert isinstance(decision.data, ReferralAttributed), decision.data
    assert decision.data.click_id == click.data.click_id
    assert_dead_lettered(await dead_letters(kafka_bootstrap, topics.clicks.dead_letter),
                         "attribution")
    assert_dead_lettered(await dead_letters(kafka_bootstrap, topics.conversions.dead_letter),
                         "attribution")


# --- rewards worker --------------------------------------------------------------------------

@pytest.fixture
async def rewards_stack(rewards_settings, admin_token):
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(rewards_settings, stop))
    async with serve_asgi(create_app(rewards_settings)) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 20)


async def test_rewards_worker_attributions_reversals_and_stats(rewards_stack, kafka_bootstrap,
                                                               topics, database_url):
    admin = rewards_stack
    program, referrer = await _programme(admin)
    attributed = _attributed(program, referrer)
    conversion_id = attributed.data.conversion_id
    reversal = new_event(ConversionReversed(
        program_id=program["id"], conversion_id=conversion_id, reason="refund",
        occurred_at=utcnow()), source="tracker")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    stats = new_event(ReferralStatsCounted(program_id=program["id"], code=referrer["code"],
                                           channel="email", hour=hour, clicks=7, version=7),
                      source="attribution")
    code = referrer["code"]

    await publish(kafka_bootstrap, topics.attributions.name,
                  *[(code, p) for p in poisons(attributed, reversal)], (code, attributed))

    async def statuses():
        return {r["status"] for r in await _rewards(admin, program["id"])
                if r["conversion_id"] == conversion_id}

    assert await eventually(statuses, timeout=30) == {"pending"}
    key = f"{program['id']}:{conversion_id}"
    await publish(kafka_bootstrap, topics.reversals.name,
                  *[(key, p) for p in poisons(reversal, attributed)], (key, reversal))
    await eventually(lambda: _is(statuses(), {"reversed"}), timeout=30,
                     message="the reversal after the poison was not applied")
    await publish(kafka_bootstrap, topics.stats.name,
                  *[(code, p) for p in poisons(stats, reversal)], (code, stats))

    async def clicks():
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT clicks FROM rewards.hourly_stats"
                                       " WHERE program_id = $1", program["id"])
        finally:
            await conn.close()

    assert await eventually(clicks, timeout=30) == 7
    for topic in (topics.attributions, topics.reversals, topics.stats):
        assert_dead_lettered(await dead_letters(kafka_bootstrap, topic.dead_letter), "rewards")


async def _is(value, expected) -> bool:
    return (await value) == expected


# --- notifier --------------------------------------------------------------------------------

async def test_notifier_rewards(notifier, smtp_sink, kafka_bootstrap, topics):
    to = address()
    valid = reward(email=to)
    foreign = new_event(ConversionReversed(program_id="prg_1", conversion_id="o-1",
                                           reason="refund", occurred_at=utcnow()), source="t")
    await publish(kafka_bootstrap, topics.rewards.name,
                  *[("ref_1", p) for p in poisons(valid, foreign)], ("ref_1", valid))
    await eventually(lambda: smtp_sink.handler.to(to), timeout=30,
                     message="the reward after the poison was never emailed")
    assert_dead_lettered(await dead_letters(kafka_bootstrap, topics.rewards.dead_letter),
                         "notifier")
