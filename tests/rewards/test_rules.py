"""Reward rules: pure, no I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rewards.holds import InvalidDuration, add_duration, parse_duration
from rewards.identifiers import CODE_ALPHABET, new_referral_code
from rewards.rules import ProgramRules, RewardKind, RewardRule, decide_rewards, rule_from_json

CASH_10 = RewardRule(RewardKind.CASH, amount=1000)


def test_flat_amount_for_the_referrer_only() -> None:
    [d] = decide_rewards(ProgramRules(CASH_10, None), order_amount=4999)
    assert (d.beneficiary, d.kind, d.amount, d.status) == ("referrer", "cash", 1000, "pending")


def test_two_sided() -> None:
    rules = ProgramRules(CASH_10, RewardRule(RewardKind.DISCOUNT, amount=500))
    assert [(d.beneficiary, d.amount) for d in decide_rewards(rules, order_amount=100)] == [
        ("referrer", 1000), ("friend", 500)]


@pytest.mark.parametrize(("percent", "order", "cap", "expected"), [
    ("10", 4999, None, 499),        # rounded down: never pay more than promised
    ("12.5", 1000, None, 125),
    ("10", 100_000, 5000, 5000),    # max_amount caps it
    ("0.01", 99, None, 0),
])
def test_percent_of_order(percent: str, order: int, cap: int | None, expected: int) -> None:
    rule = RewardRule(RewardKind.CREDIT, percent=Decimal(percent), max_amount=cap)
    [d] = decide_rewards(ProgramRules(rule, None), order_amount=order)
    assert d.amount == expected


def test_below_minimum_order_is_rejected_with_the_reason() -> None:
    rules = ProgramRules(CASH_10, RewardRule(RewardKind.POINTS, amount=50), min_order_amount=2000)
    decisions = decide_rewards(rules, order_amount=1999)
    assert [d.status for d in decisions] == ["rejected", "rejected"]
    assert all("min_order_amount" in (d.reason or "") for d in decisions)
    assert [d.status for d in decide_rewards(rules, order_amount=2000)] == ["pending", "pending"]


def test_no_rules_no_rewards() -> None:
    assert decide_rewards(ProgramRules(None, None), order_amount=10_000) == []


def test_rule_from_stored_json() -> None:
    rule = rule_from_json({"kind": "credit", "percent": "7.5", "max_amount": 300,
                           "expires_after": "P1Y"})
    assert rule == RewardRule(RewardKind.CREDIT, percent=Decimal("7.5"), max_amount=300,
                              expires_after="P1Y")
    assert rule_from_json(None) is None


def test_hold_periods() -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 1, 31, tzinfo=UTC)
    assert add_duration(start, "PT2S") == start + timedelta(seconds=2)
    assert add_duration(start, "P14D") == start + timedelta(days=14)
    assert add_duration(start, "P1M").month == 2  # calendar-aware
    for bad in ("14 days", "", "P", "-P1D"):
        with pytest.raises(InvalidDuration):
            parse_duration(bad)


def test_codes_are_unambiguous_and_distinct() -> None:
    codes = {new_referral_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert not set("".join(codes)) & set("01OIL")
    assert set("".join(codes)) <= set(CODE_ALPHABET)
