"""Fixtures of the tracker tests: a programme in the registry and a tracker serving it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from referral_devstack.broker import EmbeddedBroker
from referral_events import AttributionModel, TopicRegistry
from tracker.app import create_app
from tracker.config import TrackerSettings

from tests.support import eventually, serve_asgi

from .support import BROWSER_UA, PRIVATE_BROKER_LOG, Programme, publish_registry, random_ref


@pytest.fixture
def private_broker(kafka_component: tuple[str, bool]) -> Iterator[EmbeddedBroker]:
    """An embedded broker of the test's own, to pause, stop or restart (the session's
    broker must stay up for the other tests)."""
    if kafka_component[1]:
        pytest.skip("needs the embedded broker binary (an external Kafka is in use)")
    broker = EmbeddedBroker.on_free_port(log_path=PRIVATE_BROKER_LOG)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tracker_settings(platform_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
                     ) -> TrackerSettings:
    for name, value in platform_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRACKER_SEND_TIMEOUT_SECONDS", "3")
    return TrackerSettings()


@pytest.fixture
async def programme(kafka_bootstrap: str, topics: TopicRegistry) -> Programme:
    """An active last-click programme with one active referral code (``.code``)."""
    prog = Programme()
    prog.code = random_ref("K")  # type: ignore[attr-defined]
    await publish_registry(kafka_bootstrap, topics, prog.entry(), prog.code_entry(prog.code))
    return prog


@pytest.fixture
async def first_click_programme(kafka_bootstrap: str, topics: TopicRegistry) -> Programme:
    prog = Programme(attribution_model=AttributionModel.FIRST_CLICK)
    prog.codes = [random_ref("F"), random_ref("G")]  # type: ignore[attr-defined]
    await publish_registry(kafka_bootstrap, topics, prog.entry(),
                           *(prog.code_entry(c) for c in prog.codes))
    return prog


@pytest.fixture
async def tracker_url(tracker_settings: TrackerSettings, programme: Programme
                      ) -> AsyncIterator[str]:
    """A tracker app in this process, ready (connected and registry loaded)."""
    async with serve_asgi(create_app(tracker_settings)) as url:
        async with httpx.AsyncClient(base_url=url) as probe:
            await eventually(lambda: _ready(probe), timeout=30, message="tracker never ready")
        yield url


@pytest.fixture
async def web(tracker_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the tracker (no redirects followed, no cookie jar reuse)."""
    async with httpx.AsyncClient(base_url=tracker_url, timeout=15,
                                 headers={"User-Agent": BROWSER_UA}) as client:
        yield client


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
