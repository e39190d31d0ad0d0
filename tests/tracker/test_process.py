"""The tracker as a real OS process (its console script), as `make up` runs it."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
from referral_events import ConversionRecorded, TopicRegistry

from tests.support import free_port

from .support import BROWSER_UA, Programme, TopicReader

TRACKER = ".venv/bin/tracker"


async def test_console_script_serves_links_and_conversions(
        run_service, platform_env: dict[str, str], programme: Programme,
        kafka_bootstrap: str, topics: TopicRegistry) -> None:
    port = free_port()
    tracker = await run_service("tracker", [TRACKER], {**platform_env,
                                                       "TRACKER_PORT": str(port)}, port=port)
    async with httpx.AsyncClient(base_url=tracker.url, timeout=15,
                                 headers={"User-Agent": BROWSER_UA}) as web:
        redirect = await web.get(f"/r/{programme.code}?ch=email")
        assert redirect.status_code == 302, redirect.text
        click_id = parse_qs(urlsplit(redirect.headers["location"]).query)["rclid"][0]
        conversion_id = f"order-{uuid.uuid4().hex[:8]}"
        accepted = await web.post("/v1/conversions", headers={
            "Authorization": f"Bearer {programme.secret_key}"}, json={
            "conversion_id": conversion_id, "click_id": click_id,
            "customer": {"id": "c-1"}, "amount": 1200, "currency": "EUR"})
        assert accepted.status_code == 202 and accepted.json() == {"status": "accepted"}
        assert (await web.get("/healthz")).json() == {"status": "ok"}
        assert "tracker_conversions_total" in (await web.get("/metrics")).text

    async with TopicReader(kafka_bootstrap, topics.conversions.name) as conversions:
        got = await conversions.wait_for(lambda e: e.data.conversion_id == conversion_id,
                                         message="the process's conversion was not published")
    assert isinstance(got.envelope.data, ConversionRecorded) and got.key == programme.code


async def test_tracker_without_a_broker_answers_503_with_retry_after_never_202(
        run_service, platform_env: dict[str, str]) -> None:
    port, closed = free_port(), free_port()  # nothing listens on the second port
    env = {**platform_env, "TRACKER_PORT": str(port),
           "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}", "TRACKER_RETRY_AFTER_SECONDS": "7"}
    tracker = await run_service("tracker-no-broker", [TRACKER], env, port=port,
                                ready_path="/healthz")
    async with httpx.AsyncClient(base_url=tracker.url, timeout=15,
                                 headers={"User-Agent": BROWSER_UA}) as web:
        ready = await web.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"broker": False, "registry": False}

        conversion = await web.post("/v1/conversions", headers={
            "Authorization": "Bearer sk_whatever"}, json={
            "conversion_id": "order-1", "code": "K1", "customer": {"id": "c-1"},
            "amount": 100, "currency": "EUR"})
        assert conversion.status_code == 503, conversion.text
        assert conversion.headers["retry-after"] == "7"
        assert conversion.headers["content-type"] == "application/problem+json"
        assert "again" in conversion.json()["detail"]

        click = await web.post("/v1/clicks", json={"code": "K1"},
                               headers={"X-Publishable-Key": "pk_whatever"})
        assert click.status_code == 503 and click.headers["retry-after"] == "7"
        link = await web.get("/r/K1")
        assert link.status_code == 503 and link.headers["retry-after"] == "7"
        assert link.headers["content-type"].startswith("text/html")
