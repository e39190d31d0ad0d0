"""The console script as real processes: `rewards migrate`, `rewards api`, `rewards worker`."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
from referral_events import (
    AttributionModel,
    Customer,
    ReferralAttributed,
    RewardPending,
    new_event,
    utcnow,
)

from tests.support import eventually, free_port
from tests.support.kafka import collect, of_type, publish

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "rewards"


async def test_api_and_worker_processes(platform_env, run_service, admin_token, kafka_bootstrap,
                                        topics) -> None:
    port = free_port()
    env = {**platform_env, "REWARDS_PORT": str(port),
           "REWARDS_TRACKER_PUBLIC_URL": "https://go.shop.example"}
    migrated = subprocess.run([str(BIN), "migrate"], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=60, check=False)
    assert migrated.returncode == 0, migrated.stderr
    again = subprocess.run([str(BIN), "migrate"], env={**os.environ, **env},
                           capture_output=True, text=True, timeout=60, check=False)
    assert "0 migration(s) applied" in again.stderr

    api = await run_service("rewards-api", [str(BIN), "api"], env, port=port)
    # Two worker replicas share the attribution partitions through the consumer group.
    workers = [await run_service(f"rewards-worker-{n}", [str(BIN), "worker"], env)
               for n in (1, 2)]

    async with httpx.AsyncClient(base_url=api.url, timeout=10,
                                 headers={"Authorization": f"Bearer {admin_token}"}) as admin:
        program = (await admin.post("/v1/programs", json={
            "name": "Shop", "landing_url": "https://shop.example/", "currency": "EUR",
            "referrer_reward": {"kind": "credit", "percent": 5}})).json()
        referrer = (await admin.post(f"/v1/programs/{program['id']}/referrers", json={
            "external_id": "cust-1", "email": "bo@example.com"})).json()
        assert referrer["referral_url"] == f"https://go.shop.example/r/{referrer['code']}"

        now = utcnow()
        conversions = [f"order-{uuid.uuid4().hex[:8]}" for _ in range(6)]
        await publish(kafka_bootstrap, topics.attributions.name, *[
            (referrer["code"], new_event(ReferralAttributed(
                program_id=program["id"], conversion_id=cid, referrer_id=referrer["id"],
                code=referrer["code"], channel="copy",
                attribution_model=AttributionModel.LAST_CLICK,
                customer=Customer(id=f"friend-{cid}", is_new=True), amount=10_000,
                currency="EUR", converted_at=now, decided_at=now), source="attribution"))
            for cid in conversions])

        async def all_pending():
            rewards = (await admin.get(f"/v1/programs/{program['id']}/rewards",
                                       params={"status": "pending"})).json()
            return rewards if len(rewards) == len(conversions) else None

        rewards = await eventually(all_pending, timeout=60, message="rewards not all pending")
        assert {r["conversion_id"] for r in rewards} == set(conversions)
        assert {r["amount"] for r in rewards} == {500}

    events = await collect(kafka_bootstrap, topics.rewards.name,
                           until=lambda ev: len(of_type(ev, RewardPending)) >= len(conversions))
    assert {p.conversion_id for p in of_type(events, RewardPending)} == set(conversions)

    for worker in workers:  # SIGTERM: a clean, prompt shutdown
        worker.stop()
        assert worker.proc is not None and worker.proc.returncode == 0, worker.tail()
