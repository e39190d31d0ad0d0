"""Every tracker setting is listed in .env.example with its default, and the less obvious
ones do what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
from dotenv import dotenv_values
from referral_kit.settings import PlatformSettings
from tracker.app import create_app
from tracker.config import TrackerSettings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_env_example_lists_every_tracker_setting_with_its_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listed = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if k.startswith("TRACKER_")}
    own = [name for name in TrackerSettings.model_fields
           if name not in PlatformSettings.model_fields]
    missing = {f"TRACKER_{name.upper()}" for name in own} - set(listed)
    assert not missing, f".env.example lacks {sorted(missing)}"
    for name in listed:
        monkeypatch.delenv(name, raising=False)
    defaults = TrackerSettings()
    for name, value in listed.items():
        monkeypatch.setenv(name, value or "")
    from_example = TrackerSettings()
    for name in own:
        assert getattr(from_example, name) == getattr(defaults, name), name


@pytest.mark.parametrize("enabled", [False, True])
def test_fastapis_own_opentelemetry_follows_the_setting(enabled: bool) -> None:
    # FastAPI 0.165 looks for a configured OpenTelemetry SDK on every request unless all
    # three signals are off; TRACKER_OPENTELEMETRY (default false) turns them back on.
    app = create_app(TrackerSettings(opentelemetry=enabled))
    config = app._telemetry
    assert (config["tracing"], config["metrics"], config["logs"]) == (enabled,) * 3


async def test_the_registry_view_fetches_with_the_background_wait(tracker_settings,
                                                                  monkeypatch) -> None:
    """No conversion waits for the tracker's registry view, and every fetch costs the
    embedded broker CPU: it reads with KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS."""
    from referral_kit.registry_cache import RegistryCache
    from tracker import runtime

    waits: list[int] = []

    class Spy(RegistryCache):
        def __init__(self, **options: object) -> None:
            waits.append(int(options["fetch_max_wait_ms"]))
            super().__init__(**options)

    monkeypatch.setattr(runtime, "RegistryCache", Spy)
    settings = tracker_settings.model_copy(update={"kafka_fetch_max_wait_ms": 41,
                                                   "kafka_background_fetch_max_wait_ms": 733})
    tracker = runtime.TrackerRuntime(settings)
    await tracker.publisher.start()
    try:
        registry = await tracker._load_registry()
        await registry.stop()
    finally:
        await tracker.stop()
    assert waits == [733]
