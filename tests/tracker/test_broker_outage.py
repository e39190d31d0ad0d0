"""A broker that goes away after start-up: 503 + Retry-After, never 202; then recovery.

Uses a private embedded broker (the session's broker must stay up for other tests).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from referral_devstack.broker import EmbeddedBroker
from referral_events import TopicRegistry
from referral_kit.kafka import ensure_topics
from tracker.app import create_app
from tracker.config import TrackerSettings

from tests.support import eventually, serve_asgi

from .support import BROWSER_UA, Programme, publish_registry, random_ref


@pytest.fixture
async def outage_tracker(private_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
                         ) -> AsyncIterator[tuple[str, Programme, TopicRegistry]]:
    topics = TopicRegistry(random_ref("t") + ".")
    await ensure_topics(private_broker.bootstrap, topics.all())
    programme = Programme()
    programme.code = random_ref("K")  # type: ignore[attr-defined]
    await publish_registry(private_broker.bootstrap, topics, programme.entry(),
                           programme.code_entry(programme.code))
    for name, value in {"KAFKA_BOOTSTRAP_SERVERS": private_broker.bootstrap,
                        "TOPIC_PREFIX": topics.prefix, "ENVIRONMENT": "test",
                        "KAFKA_ENABLE_IDEMPOTENCE": "false",
                        "TRACKER_SEND_TIMEOUT_SECONDS": "1",
                        "TRACKER_RETRY_AFTER_SECONDS": "3"}.items():
        monkeypatch.setenv(name, value)
    async with serve_asgi(create_app(TrackerSettings())) as url:
        async with httpx.AsyncClient(base_url=url) as probe:
            await eventually(lambda: _status(probe, "/readyz", 200), timeout=30,
                             message="tracker never ready on the private broker")
        yield url, programme, topics


async def test_broker_lost_after_start_means_503_and_recovery_means_202(
        outage_tracker: tuple[str, Programme, TopicRegistry],
        private_broker: EmbeddedBroker) -> None:
    url, programme, topics = outage_tracker
    auth = {"Authorization": f"Bearer {programme.secret_key}"}
    body = {"conversion_id": f"order-{uuid.uuid4().hex[:8]}", "code": programme.code,
            "customer": {"id": "c-1"}, "amount": 2500, "currency": "EUR"}
    async with httpx.AsyncClient(base_url=url, timeout=20,
                                 headers={"User-Agent": BROWSER_UA}) as web:
        private_broker.stop()

        refused = await web.post("/v1/conversions", json=body, headers=auth)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "3"
        await eventually(lambda: _status(web, "/readyz", 503),
                         message="/readyz stayed ready without a broker")
        # The visitor still lands on the shop, but no click id is handed out unrecorded.
        link = await web.get(f"/r/{programme.code}")
        assert link.status_code == 302
        query = parse_qs(urlsplit(link.headers["location"]).query)
        assert query["ref"] == [programme.code] and "rclid" not in query

        # The broker returns (empty: memory storage); the same request now succeeds, and
        # is "accepted", not "duplicate": the refused attempt was never counted as written.
        private_broker.start()
        await ensure_topics(private_broker.bootstrap, topics.all())

        async def accepted() -> dict[str, str] | None:
            response = await web.post("/v1/conversions", json=body, headers=auth)
            return response.json() if response.status_code == 202 else None

        assert await eventually(accepted, timeout=40,
                                message="tracker never recovered") == {"status": "accepted"}
        await eventually(lambda: _status(web, "/readyz", 200), timeout=30,
                         message="tracker not ready again after the broker came back")


async def _status(client: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await client.get(path)).status_code == status


async def test_paused_broker_means_503_for_singles_and_batches_then_recovery(
        outage_tracker: tuple[str, Programme, TopicRegistry],
        private_broker: EmbeddedBroker) -> None:
    url, programme, _ = outage_tracker
    auth = {"Authorization": f"Bearer {programme.secret_key}"}

    def conversion() -> dict[str, object]:
        return {"conversion_id": f"order-{uuid.uuid4().hex[:8]}", "code": programme.code,
                "customer": {"id": "c-1"}, "amount": 2500, "currency": "EUR"}

    batch = {"events": [{"type": "conversion", **conversion()} for _ in range(3)]
             + [{"type": "conversion", "amount": -1}]}
    async with httpx.AsyncClient(base_url=url, timeout=20) as web:
        private_broker.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            single = await web.post("/v1/conversions", json=conversion(), headers=auth)
            assert single.status_code == 503 and single.headers["retry-after"] == "3"

            refused = await web.post("/v1/batch", json=batch, headers=auth)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "3"
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert "again in 3 s" in problem["detail"]
            assert [r["status"] for r in problem["results"]] == [
                "unavailable", "unavailable", "unavailable", "rejected"]
            assert problem["results"][0]["error"]["retry_after"] == 3
            assert problem["counts"]["accepted"] == 0
            await eventually(lambda: _status(web, "/readyz", 503),
                             message="/readyz stayed ready while the broker was paused")
        finally:
            private_broker.resume()

        # SIGCONT: the same batch is now recorded (none of it was remembered as written
        # while paused, so it is accepted, not a duplicate).
        attempts: list[list[str]] = []

        async def recorded() -> bool:
            response = await web.post("/v1/batch", json=batch, headers=auth)
            if response.status_code in (202, 503):
                attempts.append([r["status"] for r in response.json()["results"]])
            return response.status_code == 202 and "unavailable" not in attempts[-1]

        await eventually(recorded, timeout=40, message="no recovery after SIGCONT")
        first_202 = next(a for a in attempts if "accepted" in a)
        assert "duplicate" not in first_202 and first_202[3] == "rejected"
        await eventually(lambda: _status(web, "/readyz", 200), timeout=30,
                         message="tracker not ready again after SIGCONT")
