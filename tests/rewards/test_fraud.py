"""Fraud checks: pure, no I/O. Each fires with {signal, value, threshold, action}."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from referral_events import FraudAction, FraudSignal
from rewards.fraud import (
    FraudSettings,
    FraudVerdict,
    Observation,
    disposable_domain,
    email_alias,
    evaluate,
)

DEFAULTS = FraudSettings()
CLEAN = Observation(referrer_email="ann@example.com", friend_email="bo@example.org",
                    ip_hash="h-friend", device_id="dev-friend",
                    referrer_ip_hashes=frozenset({"h-ann"}),
                    referrer_device_ids=frozenset({"dev-ann"}), country="NL",
                    referrals_last_hour=1, code_clicks=100, code_conversions=10)


def _only(obs: Observation, settings: FraudSettings = DEFAULTS) -> FraudSignal:
    [signal] = evaluate(settings, obs).signals
    return signal


def test_a_clean_referral_fires_nothing() -> None:
    assert evaluate(DEFAULTS, CLEAN) == FraudVerdict(())
    assert evaluate(DEFAULTS, Observation()).signals == ()  # nothing known: nothing fires


def test_velocity_per_hour() -> None:
    assert evaluate(DEFAULTS, Observation(referrals_last_hour=10)).signals == ()
    signal = _only(Observation(referrals_last_hour=11))
    assert signal == FraudSignal(signal="velocity_per_hour", value=11, threshold=10,
                                 action=FraudAction.FLAG)


@pytest.mark.parametrize(("ip", "device", "value"), [
    ("h-ann", None, "ip_hash"), (None, "dev-ann", "device_id"),
    ("h-ann", "dev-ann", "ip_hash+device_id")])
def test_same_ip_or_device_as_the_referrer(ip: str | None, device: str | None,
                                          value: str) -> None:
    obs = Observation(ip_hash=ip, device_id=device, referrer_ip_hashes=frozenset({"h-ann"}),
                      referrer_device_ids=frozenset({"dev-ann"}))
    assert _only(obs).model_dump() == {"signal": "same_ip_or_device", "value": value,
                                       "threshold": None, "action": "flag"}


@pytest.mark.parametrize(("email", "domain"), [
    ("x@mailinator.com", "mailinator.com"), ("x@MAILINATOR.com", "mailinator.com"),
    ("x@inbox.mailinator.com", "mailinator.com"), ("x@example.org", None),
    ("x@gmail.com", None)])
def test_disposable_email_domain(email: str, domain: str | None) -> None:
    assert disposable_domain(email) == domain
    signals = evaluate(DEFAULTS, Observation(friend_email=email)).signals
    assert [(s.signal, s.value) for s in signals] == (
        [("disposable_email", domain)] if domain else [])


@pytest.mark.parametrize(("friend", "referrer", "how"), [
    ("Ann@Example.com", "ann@example.com", "same_mailbox"),
    ("a.n.n+promo@gmail.com", "ann@googlemail.com", "same_mailbox"),
    ("ann+friend@example.com", "ann@example.com", "plus_tag"),
    ("ann+1@shop.example", "ann+2@shop.example", "plus_tag"),
    ("ann@example.org", "ann@example.com", None),
    ("anna@example.com", "ann@example.com", None),
    ("a.nn@example.com", "ann@example.com", None),  # dots matter outside gmail
])
def test_email_alias_of_the_referrer(friend: str, referrer: str, how: str | None) -> None:
    assert email_alias(friend, referrer) == how
    signals = evaluate(DEFAULTS, Observation(friend_email=friend, referrer_email=referrer))
    assert [(s.signal, s.value, s.action) for s in signals.signals] == (
        [("email_alias", how, FraudAction.REJECT)] if how else [])
    if how:
        assert signals.reason == "fraud:email_alias"


@pytest.mark.parametrize(("clicks", "conversions", "fires"), [
    (None, None, False),  # no stats rows: no data
    (19, 19, False),      # below the minimum sample
    (20, 10, False),      # exactly the threshold is not above it
    (20, 11, True), (100, 80, True)])
def test_conversion_rate_of_the_code(clicks: int | None, conversions: int | None,
                                     fires: bool) -> None:
    signals = evaluate(DEFAULTS, Observation(code_clicks=clicks, code_conversions=conversions))
    assert bool(signals.signals) is fires
    if fires:
        [s] = signals.signals
        assert (s.signal, s.value, s.threshold) == ("conversion_rate",
                                                    round(conversions / clicks, 4), 0.5)


def test_blocked_countries() -> None:
    settings = FraudSettings.model_validate({"blocked_countries": {"countries": ["ru", "KP"]}})
    assert settings.blocked_countries.countries == ["RU", "KP"]
    signal = _only(Observation(country="RU"), settings)
    assert (signal.signal, signal.value, signal.threshold, signal.action) == (
        "blocked_countries", "RU", "KP,RU", FraudAction.REJECT)
    assert evaluate(settings, Observation(country="NL")).signals == ()
    assert evaluate(settings, Observation(country=None)).signals == ()  # unknown: skipped
    assert evaluate(DEFAULTS, Observation(country="RU")).signals == ()  # empty list: off


def test_thresholds_actions_and_switches_are_per_programme() -> None:
    settings = FraudSettings.model_validate({
        "velocity_per_hour": {"max_per_hour": 2, "action": "extend_hold"},
        "email_alias": {"enabled": False},
        "disposable_email": {"action": "reject"},
        "extend_hold_by": "PT30M"})
    verdict = evaluate(settings, Observation(referrals_last_hour=3, friend_email="ann+x@a.io",
                                             referrer_email="ann@a.io"))
    assert [(s.signal, s.action) for s in verdict.signals] == [
        ("velocity_per_hour", FraudAction.EXTEND_HOLD)]
    assert verdict.extends_hold and not verdict.flagged and verdict.reason is None
    rejected = evaluate(settings, Observation(friend_email="x@mailinator.com",
                                              referrals_last_hour=9))
    assert rejected.reason == "fraud:disposable_email" and rejected.extends_hold


def test_verdict_statuses() -> None:
    flag = FraudSignal(signal="a", value=1, action=FraudAction.FLAG)
    reject = FraudSignal(signal="b", value=1, action=FraudAction.REJECT)
    assert FraudVerdict((flag,)).status_of("pending") == "in_review"
    assert FraudVerdict((flag,)).status_of("rejected") == "rejected"  # a rule's no stays no
    assert FraudVerdict((flag, reject)).reason == "fraud:b"
    assert FraudVerdict(()).status_of("pending") == "pending"


def test_settings_accept_empty_and_refuse_nonsense() -> None:
    assert FraudSettings.model_validate({}) == DEFAULTS
    dumped = DEFAULTS.model_dump(mode="json")
    assert dumped["email_alias"] == {"enabled": True, "action": "reject"}
    assert dumped["conversion_rate"]["min_clicks"] == 20 and dumped["extend_hold_by"] == "P7D"
    for bad in ({"velocity": {}}, {"velocity_per_hour": {"max_per_hour": 0}},
                {"email_alias": {"action": "shrug"}}, {"extend_hold_by": "a week"},
                {"blocked_countries": {"countries": ["Netherlands"]}}):
        with pytest.raises(ValidationError):
            FraudSettings.model_validate(bad)


@given(local=st.from_regex(r"[a-z][a-z0-9.]{0,10}", fullmatch=True),
       tag=st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
       domain=st.sampled_from(["example.com", "gmail.com", "shop.example", "outlook.com"]))
def test_a_plus_tag_is_always_an_alias(local: str, tag: str, domain: str) -> None:
    assert email_alias(f"{local}+{tag}@{domain}", f"{local}@{domain}") is not None
    assert email_alias(f"{local}@{domain}", f"{local}x@{domain}.test") is None
