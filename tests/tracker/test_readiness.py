"""/readyz: ready only when a broker answers and the registry has been read to its end."""

from __future__ import annotations

import httpx
from referral_events import TopicRegistry
from referral_kit.kafka import ensure_topics
from tracker.app import create_app
from tracker.config import TrackerSettings

from tests.support import eventually, serve_asgi

from .support import random_ref


async def test_ready_means_broker_and_registry(web: httpx.AsyncClient) -> None:
    ready = await web.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"broker": True, "registry": True}}


async def test_not_ready_until_the_registry_is_loaded(
        tracker_settings: TrackerSettings, kafka_bootstrap: str) -> None:
    topics = TopicRegistry(random_ref("t") + ".")  # its topics do not exist yet
    settings = tracker_settings.model_copy(update={"topic_prefix": topics.prefix,
                                                   "registry_catch_up_seconds": 1.0})
    async with serve_asgi(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as web:
            async def broker_but_no_registry() -> dict[str, bool] | None:
                response = await web.get("/readyz")
                checks: dict[str, bool] = response.json()["checks"]
                return checks if response.status_code == 503 and checks["broker"] else None

            assert await eventually(broker_but_no_registry) == {"broker": True,
                                                                "registry": False}
            await ensure_topics(kafka_bootstrap, topics.all())

            async def ready() -> bool:
                return (await web.get("/readyz")).status_code == 200

            await eventually(ready, timeout=30, message="never ready once the registry existed")

