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
