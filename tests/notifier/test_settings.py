"""Notifier settings: names from CONTRACT.md / .env.example, safe defaults, refused secrets."""

from __future__ import annotations

import pytest
from notifier.config import NotifierSettings
from pydantic import ValidationError

CLEAN = ("SMTP_HOST", "SMTP_PORT", "ENVIRONMENT", "NOTIFIER_PORT", "NOTIFIER_FROM_EMAIL",
         "NOTIFIER_PUBLIC_URL", "NOTIFIER_UNSUBSCRIBE_SECRET", "NOTIFIER_HOST")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in CLEAN:
        monkeypatch.delenv(name, raising=False)


def test_defaults_suit_local_use() -> None:
    settings = NotifierSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8003)
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)
    assert settings.public_url == "http://127.0.0.1:8003"
    assert settings.message_id_domain == "localhost"


def test_smtp_is_unprefixed_and_the_rest_prefixed(monkeypatch) -> None:
    monkeypatch.setenv("SMTP_HOST", "mail.internal")
    monkeypatch.setenv("SMTP_PORT", "2525")
    monkeypatch.setenv("NOTIFIER_PORT", "9003")
    monkeypatch.setenv("NOTIFIER_FROM_EMAIL", "rewards@shop.example")
    settings = NotifierSettings()
    assert (settings.smtp_host, settings.smtp_port, settings.port) == ("mail.internal", 2525, 9003)
    assert settings.message_id_domain == "shop.example"


def test_production_refuses_the_development_unsubscribe_secret(monkeypatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="NOTIFIER_UNSUBSCRIBE_SECRET"):
        NotifierSettings()
    monkeypatch.setenv("NOTIFIER_UNSUBSCRIBE_SECRET", "s3cr3t-" + "x" * 40)
    settings = NotifierSettings()
    assert "s3cr3t" not in repr(settings)  # secrets never print
