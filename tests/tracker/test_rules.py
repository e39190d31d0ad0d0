"""Pure rules of the tracker: landing URLs, channels, utm fields, codes, keys, settings."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import ValidationError
from referral_events import AttributionModel, CodeSource, ProgramEntry, utcnow
from referral_events.identity import key_hash, new_click_id
from tracker.codes import CodeUnresolved, referral_code_of
from tracker.config import TrackerSettings
from tracker.keys import KeyKind, KeyRefused, program_for_key
from tracker.links import (
    channel_from,
    keeps_earlier_referral,
    landing_url_for,
    trim_user_agent,
    utm_from,
    utm_from_url,
)


def test_landing_url_keeps_its_query_and_fragment_and_adds_ref_and_click_id() -> None:
    url = landing_url_for("https://shop.example/welcome?lang=en&ref=old#top", code="K7Q2",
                          click_id="clk_K7Q2_abc", utm={"utm_source": "mail", "utm_medium": "x"})
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == (
        "https", "shop.example", "/welcome", "top")
    assert parse_qsl(parts.query) == [("lang", "en"), ("utm_source", "mail"),
                                      ("utm_medium", "x"), ("ref", "K7Q2"),
                                      ("rclid", "clk_K7Q2_abc")]


def test_landing_url_without_click_id_and_own_utm_wins() -> None:
    url = landing_url_for("https://shop.example/?utm_source=shop", code="K7Q2", click_id=None,
                          utm={"utm_source": "link"})
    assert parse_qsl(urlsplit(url).query) == [("utm_source", "shop"), ("ref", "K7Q2")]


@pytest.mark.parametrize(("raw", "channel"), [
    (None, "link"), ("", "link"), ("WhatsApp", "whatsapp"), ("<script>", "script"),
    ("!!!", "link"), ("x" * 80, "x" * 40),
])
def test_channel_is_sanitised(raw: str | None, channel: str) -> None:
    assert channel_from(raw) == channel


def test_utm_fields_are_filtered_bounded_and_first_value_wins() -> None:
    params = [("utm_source", "a"), ("UTM_SOURCE", "b"), ("ch", "x"), ("utm_", "no"),
              ("utm_term", "  "), ("utm_content", "c" * 500)]
    params += [(f"utm_f{i}", "v") for i in range(20)]
    utm = utm_from(params)
    assert utm["utm_source"] == "a" and "ch" not in utm and "utm_term" not in utm
    assert len(utm["utm_content"]) == 200 and len(utm) == 10
    assert utm_from_url("https://x.example/p?utm_campaign=spring&q=1") == {
        "utm_campaign": "spring"}
    assert utm_from_url(None) == {} and utm_from_url("http://[bad") == {}


def test_user_agent_is_trimmed() -> None:
    assert trim_user_agent("a" * 1000) == "a" * 256
    assert trim_user_agent("   ") is None and trim_user_agent(None) is None


def test_first_click_keeps_an_earlier_referral_of_the_same_programme_only() -> None:
    first, last = AttributionModel.FIRST_CLICK, AttributionModel.LAST_CLICK
    assert keeps_earlier_referral(first, earlier_program_id="p1", program_id="p1")
    assert not keeps_earlier_referral(first, earlier_program_id="p2", program_id="p1")
    assert not keeps_earlier_referral(first, earlier_program_id=None, program_id="p1")
    assert not keeps_earlier_referral(last, earlier_program_id="p1", program_id="p1")


def test_conversion_code_comes_from_click_id_or_code() -> None:
    click_id = new_click_id("K7Q2_MX")  # codes may hold '_' themselves
    assert referral_code_of(code=None, click_id=click_id) == ("K7Q2_MX", CodeSource.CLICK_ID)
    assert referral_code_of(code="K7Q2_MX", click_id=click_id) == ("K7Q2_MX",
                                                                    CodeSource.CLICK_ID)
    assert referral_code_of(code="ABC", click_id=None) == ("ABC", CodeSource.CODE)


@pytest.mark.parametrize(("code", "click_id", "field"), [
    (None, None, "code"), (None, "order-17", "click_id"), ("OTHER", new_click_id("K7"),
                                                          "click_id"),
], ids=["no-code", "foreign-click-id", "click-id-of-another-code"])
def test_unresolvable_conversion_code_names_the_field(code: str | None, click_id: str | None,
                                                      field: str) -> None:
    with pytest.raises(CodeUnresolved) as caught:
        referral_code_of(code=code, click_id=click_id)
    assert caught.value.field == field and caught.value.detail


def _program(active: bool = True) -> ProgramEntry:
    return ProgramEntry(program_id="prg_1", name="Shop", landing_url="https://shop.example/",
                        currency="EUR", active=active, publishable_key_hash=key_hash("pk_1"),
                        secret_key_hash=key_hash("sk_1"), version=1, updated_at=utcnow())


def test_keys_find_their_programme_and_refuse_the_wrong_kind() -> None:
    program = _program()
    by_hash = {program.publishable_key_hash: program, program.secret_key_hash: program}
    assert program_for_key("sk_1", needs=KeyKind.SECRET, lookup=by_hash.get,
                           header="Authorization") is program
    assert program_for_key(" pk_1 ", needs=KeyKind.PUBLISHABLE, lookup=by_hash.get,
                           header="X-Publishable-Key") is program
    cases = [(None, KeyKind.SECRET, False), ("sk_nope", KeyKind.SECRET, False),
             ("pk_1", KeyKind.SECRET, True), ("sk_1", KeyKind.PUBLISHABLE, True)]
    for key, needs, authenticated in cases:
        with pytest.raises(KeyRefused) as caught:
            program_for_key(key, needs=needs, lookup=by_hash.get, header="Authorization")
        assert caught.value.authenticated is authenticated, key


def test_keys_of_an_inactive_programme_are_refused() -> None:
    program = _program(active=False)
    with pytest.raises(KeyRefused) as caught:
        program_for_key("sk_1", needs=KeyKind.SECRET, lookup={key_hash("sk_1"): program}.get,
                        header="Authorization")
    assert caught.value.authenticated and "inactive" in caught.value.detail


def test_production_refuses_the_default_ip_hash_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("TRACKER_IP_HASH_SALT", raising=False)
    with pytest.raises(ValidationError, match="TRACKER_IP_HASH_SALT"):
        TrackerSettings()
    monkeypatch.setenv("TRACKER_IP_HASH_SALT", "a-long-random-production-secret")
    settings = TrackerSettings()
    assert settings.environment == "production" and "production-secret" not in repr(settings)


def test_settings_defaults_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRACKER_PORT", "TRACKER_HOST", "ENVIRONMENT", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    settings = TrackerSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8001)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    monkeypatch.setenv("TRACKER_PORT", "9101")
    monkeypatch.setenv("TRACKER_SEND_TIMEOUT_SECONDS", "0.5")
    settings = TrackerSettings()
    assert (settings.port, settings.send_timeout_seconds) == (9101, 0.5)
