"""Settings: env prefix, defaults for local use, default secrets refused in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rewards.config import RewardsSettings


def test_defaults_suit_local_use(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENVIRONMENT", "ADMIN_TOKEN", "REWARDS_PORT", "REWARDS_TRACKER_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = RewardsSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8002)
    assert settings.tracker_public_url == "http://127.0.0.1:8001"
    assert settings.admin_token.get_secret_value() == "dev-admin-token"
    assert "dev-admin-token" not in repr(settings)


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDS_PORT", "9102")
    monkeypatch.setenv("REWARDS_TRACKER_PUBLIC_URL", "https://go.shop.example")
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret-token-for-tests")
    monkeypatch.setenv("TOPIC_PREFIX", "stack1.")
    settings = RewardsSettings()
    assert settings.port == 9102 and settings.tracker_public_url == "https://go.shop.example"
    assert settings.admin_token.get_secret_value() == "s3cret-token-for-tests"
    assert settings.topic_registry().attributions.name == "stack1.referral.attributions"


def test_production_refuses_the_default_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("IP_HASH_SALT", "a-long-random-production-salt")
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        RewardsSettings()
    monkeypatch.setenv("ADMIN_TOKEN", "a-long-random-production-token")
    assert RewardsSettings().environment == "production"


def test_ip_hash_salt_is_platform_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewards hashes referrers' IPs with the tracker's salt: IP_HASH_SALT, or the older
    TRACKER_IP_HASH_SALT; production refuses the development default."""
    from tracker.config import TrackerSettings

    for name in ("IP_HASH_SALT", "TRACKER_IP_HASH_SALT", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    assert RewardsSettings().uses_default_ip_hash_salt
    monkeypatch.setenv("TRACKER_IP_HASH_SALT", "older-name")
    assert RewardsSettings().ip_hash_salt.get_secret_value() == "older-name"
    assert TrackerSettings().ip_hash_salt.get_secret_value() == "older-name"
    monkeypatch.setenv("IP_HASH_SALT", "shared")
    assert RewardsSettings().ip_hash_salt.get_secret_value() == "shared"
    assert TrackerSettings().ip_hash_salt.get_secret_value() == "shared"
    assert "shared" not in repr(RewardsSettings())
    monkeypatch.delenv("IP_HASH_SALT")
    monkeypatch.delenv("TRACKER_IP_HASH_SALT")
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("ADMIN_TOKEN", "a-long-random-production-token")
    with pytest.raises(ValidationError, match="IP_HASH_SALT"):
        RewardsSettings()
