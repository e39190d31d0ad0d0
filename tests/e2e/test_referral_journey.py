"""The thin slice end to end, every service a real OS process on real infrastructure:

admin API creates a programme and a referrer → a friend opens the referral link (302 with a
click id) → the checkout posts a conversion carrying that click id → attribution credits the
referrer → rewards writes a pending reward → the notifier emails the referrer.
"""

from __future__ import annotations

import subprocess
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from referral_events import ReferralAttributed, decode

from tests.support import eventually, free_port

pytestmark = pytest.mark.e2e
BROWSER_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0 Safari/537.36")
ROOT_BIN = ".venv/bin/"


@pytest.fixture
async def stack(platform_env, smtp_sink, run_service):
    ports = {name: free_port() for name in ("tracker", "rewards", "notifier", "attribution")}
    env = {
        **platform_env,
        "TRACKER_PORT": str(ports["tracker"]),
        "REWARDS_PORT": str(ports["rewards"]),
        "NOTIFIER_PORT": str(ports["notifier"]),
        "ATTRIBUTION_WEB_PORT": str(ports["attribution"]),
        "REWARDS_TRACKER_PUBLIC_URL": f"http://127.0.0.1:{ports['tracker']}",
        "NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{ports['notifier']}",
        "SMTP_HOST": smtp_sink.host,
        "SMTP_PORT": str(smtp_sink.port),
    }
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for service in ("rewards", "notifier"):
        subprocess.run([str(root / ROOT_BIN / service), "migrate"], env={**os.environ, **env},
                       check=True, capture_output=True, timeout=60)
    rewards_api = await run_service("rewards-api", [ROOT_BIN + "rewards", "api"], env,
                                    port=ports["rewards"])
    await run_service("rewards-worker", [ROOT_BIN + "rewards", "worker"], env)
    tracker = await run_service("tracker", [ROOT_BIN + "tracker"], env, port=ports["tracker"])
    attribution = await run_service("attribution", [ROOT_BIN + "attribution"], env,
                                    port=ports["attribution"])
    notifier = await run_service("notifier", [ROOT_BIN + "notifier", "run"], env,
                                 port=ports["notifier"])
    return {"env": env, "tracker": tracker.url, "rewards": rewards_api.url,
            "attribution": attribution.url, "notifier": notifier.url, "smtp": smtp_sink}


async def test_click_to_conversion_to_reward_to_email(stack, admin_token, topics, kafka_bootstrap):
    admin = httpx.AsyncClient(base_url=stack["rewards"], timeout=10,
                              headers={"Authorization": f"Bearer {admin_token}"})
    web = httpx.AsyncClient(base_url=stack["tracker"], timeout=10,
                            headers={"User-Agent": BROWSER_UA})
    async with admin, web:
        created = await admin.post("/v1/programs", json={
            "name": "Journey Shop", "landing_url": "https://shop.example/welcome?lang=en",
            "currency": "EUR", "hold_period": "P14D",
            "referrer_reward": {"kind": "cash", "amount": 1000},
        })
        assert created.status_code == 201, created.text
        program = created.json()
        assert program["publishable_key"].startswith("pk_")
        assert program["secret_key"].startswith("sk_")

        referrer_email = f"ann.{uuid.uuid4().hex[:6]}@example.com"
        enrolled = await admin.post(f"/v1/programs/{program['id']}/referrers", json={
            "external_id": "cust-ann", "email": referrer_email, "name": "Ann", "locale": "en"})
        assert enrolled.status_code == 201, enrolled.text
        referrer = enrolled.json()
        assert referrer["referral_url"].endswith(f"/r/{referrer['code']}")

        # The tracker learns the new code from the registry topic within moments.
        redirect = await eventually(
            lambda: _redirect(web, f"/r/{referrer['code']}?ch=whatsapp"),
            timeout=30, message="referral link never redirected")
        location = urlsplit(redirect.headers["location"])
        query = parse_qs(location.query)
        assert (location.scheme, location.netloc, location.path) == ("https", "shop.example",
                                                                     "/welcome")
        assert query["lang"] == ["en"] and query["ref"] == [referrer["code"]]
        click_id = query["rclid"][0]

        conversion_id = f"order-{uuid.uuid4().hex[:8]}"
        accepted = await web.post("/v1/conversions", headers={
            "Authorization": f"Bearer {program['secret_key']}"}, json={
            "conversion_id": conversion_id, "click_id": click_id,
            "customer": {"id": "cust-friend", "email": "friend@example.org", "is_new": True},
            "amount": 4999, "currency": "EUR"})
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "accepted"

        attributed = await _attribution_of(kafka_bootstrap, topics.attributions.name,
                                           conversion_id)
        assert attributed.referrer_id == referrer["id"]
        assert attributed.click_id == click_id
        assert attributed.channel == "whatsapp"

        async def pending_reward():
            response = await admin.get(f"/v1/programs/{program['id']}/rewards",
                                       params={"status": "pending"})
            body = response.json()
            items = body if isinstance(body, list) else body.get("items", [])
            return [r for r in items if r["conversion_id"] == conversion_id]

        [reward] = await eventually(pending_reward, timeout=30, message="no pending reward")
        assert (reward["beneficiary"], reward["amount"], reward["kind"]) == ("referrer", 1000,
                                                                             "cash")
        assert reward["status"] == "pending" and reward["available_at"]

        [email] = await eventually(lambda: stack["smtp"].handler.to(referrer_email), timeout=30,
                                   message="referrer never got an email")
        assert email["Subject"]
        text = email.get_body(preferencelist=("plain",)).get_content()
        assert "10.00" in text, text


async def _redirect(client: httpx.AsyncClient, path: str) -> httpx.Response | None:
    response = await client.get(path)
    return response if response.status_code == 302 else None


async def _attribution_of(bootstrap: str, topic: str, conversion_id: str) -> ReferralAttributed:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        async def find():
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    data = decode(record.value).data
                    if getattr(data, "conversion_id", None) == conversion_id:
                        return data
            return None

        decision = await eventually(find, timeout=60, message="no attribution decision")
        assert isinstance(decision, ReferralAttributed), decision
        return decision
    finally:
        await consumer.stop()
