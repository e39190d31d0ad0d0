"""Reward rules: pure, no I/O."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rewards.holds import InvalidDuration, add_duration, parse_duration
from rewards.identifiers import CODE_ALPHABET, new_referral_code
from rewards.rules import (
    Caps,
    ProgramRules,
    RewardKind,
    RewardRule,
    Standing,
    Tier,
    decide_rewards,
    rule_from_json,
    rules_from_program,
    tier_for,
)

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


# --- tiers and milestones ---------------------------------------------------------------

TIERED = ProgramRules(CASH_10, None, tiers=(
    Tier(5, amount=1500), Tier(10, bonus=10_000), Tier(20, percent=Decimal(5))))


@pytest.mark.parametrize(("before", "amount"), [
    (0, 1000), (3, 1000), (4, 1500), (8, 1500), (9, 1500), (18, 1500), (19, 2500), (50, 2500)])
def test_tiers_by_successful_referrals(before: int, amount: int) -> None:
    """The Nth successful referral (N = before + 1) pays the tier with the highest
    from_referral <= N; a bonus-only tier keeps the amount of the tier below it."""
    decisions = decide_rewards(TIERED, order_amount=50_000,
                               standing=Standing(successful_referrals=before))
    assert decisions[0].amount == amount and decisions[0].purpose == "referral"


def test_milestone_bonus_once_when_the_count_reaches_it() -> None:
    reached = decide_rewards(TIERED, order_amount=100, standing=Standing(successful_referrals=9))
    assert [(d.purpose, d.amount, d.milestone) for d in reached] == [
        ("referral", 1500, None), ("milestone", 10_000, 10)]
    assert reached[1].kind == "cash" and reached[1].status == "pending"
    for standing in (Standing(successful_referrals=10), Standing(successful_referrals=8),
                     Standing(successful_referrals=9, milestones_granted=frozenset({10}))):
        assert [d.purpose for d in decide_rewards(TIERED, order_amount=100, standing=standing)
                ] == ["referral"]


def test_no_milestone_for_a_refused_referral() -> None:
    rules = replace(TIERED, min_order_amount=500)
    for decisions in (decide_rewards(rules, order_amount=499,
                                     standing=Standing(successful_referrals=9)),
                      decide_rewards(TIERED, order_amount=1000, refused="fraud:email_alias",
                                     standing=Standing(successful_referrals=9))):
        assert [(d.purpose, d.status) for d in decisions] == [("referral", "rejected")]


def test_percent_tier_keeps_the_referrer_rules_max_amount_and_expiry() -> None:
    base = RewardRule(RewardKind.CREDIT, amount=100, max_amount=700, expires_after="P1Y")
    rules = ProgramRules(base, None, tiers=(Tier(2, percent=Decimal(10)),))
    [d] = decide_rewards(rules, order_amount=9_000, standing=Standing(successful_referrals=1))
    assert (d.amount, d.kind, d.expires_after, d.basis) == (700, "credit", "P1Y", "percent")
    [first] = decide_rewards(rules, order_amount=9_000)
    assert (first.amount, first.basis) == (100, "flat")


def test_tier_for_picks_the_highest_reached() -> None:
    tiers = (Tier(10, amount=3), Tier(1, amount=1), Tier(5, amount=2))
    assert [tier_for(tiers, n).amount for n in (1, 4, 5, 9, 10, 99)] == [1, 1, 2, 2, 3, 3]
    assert tier_for((Tier(3, amount=1),), 2) is None


# --- caps ---------------------------------------------------------------------------------

def _caps(**caps: int) -> ProgramRules:
    return ProgramRules(CASH_10, RewardRule(RewardKind.DISCOUNT, amount=500), caps=Caps(**caps))


@pytest.mark.parametrize(("cap", "standing"), [
    ("per_referrer_day", Standing(referrer_day=2600)),
    ("per_referrer_month", Standing(referrer_month=2600)),
    ("per_referrer_lifetime", Standing(referrer_lifetime=2600)),
    ("program_budget", Standing(program_spent=2600)),
])
def test_each_cap_reduces_then_rejects(cap: str, standing: Standing) -> None:
    rules = _caps(**{cap: 3000})
    referrer, friend = decide_rewards(rules, order_amount=1, standing=standing)
    assert (referrer.amount, referrer.status) == (400, "pending")
    assert referrer.reason == f"capped: 1000 reduced to 400 by the {cap} cap of 3000"
    if cap == "program_budget":  # the budget covers both sides: nothing left for the friend
        assert friend.status == "rejected" and friend.reason.startswith("cap_reached:")
    else:  # per-referrer caps leave the friend alone
        assert (friend.amount, friend.status) == (500, "pending")
    full = replace(standing, **{f: 3000 for f in ("referrer_day", "referrer_month",
                                                   "referrer_lifetime", "program_spent")})
    [rejected, *_] = decide_rewards(rules, order_amount=1, standing=full)
    assert rejected.status == "rejected" and rejected.amount == 1000
    assert rejected.reason == f"cap_reached: the {cap} cap of 3000 has 0 left, 1000 asked"


def test_reject_mode_refuses_what_does_not_fit_whole() -> None:
    rules = ProgramRules(CASH_10, None, caps=Caps(per_referrer_lifetime=3000, mode="reject"))
    [d] = decide_rewards(rules, order_amount=1, standing=Standing(referrer_lifetime=2600))
    assert (d.status, d.amount) == ("rejected", 1000) and d.reason.startswith("cap_reached")
    [ok] = decide_rewards(rules, order_amount=1, standing=Standing(referrer_lifetime=2000))
    assert (ok.status, ok.amount) == ("pending", 1000)


def test_the_tightest_cap_names_the_reason_and_bonus_is_capped_too() -> None:
    rules = replace(TIERED, caps=Caps(per_referrer_day=5000, per_referrer_lifetime=12_000))
    decisions = decide_rewards(rules, order_amount=1, standing=Standing(
        successful_referrals=9, referrer_day=1000, referrer_lifetime=9000))
    assert [(d.purpose, d.amount, d.status) for d in decisions] == [
        ("referral", 1500, "pending"), ("milestone", 1500, "pending")]
    assert "per_referrer_lifetime cap of 12000" in decisions[1].reason


def test_zero_cap_rejects_and_already_rejected_rewards_use_no_room() -> None:
    rules = ProgramRules(CASH_10, None, min_order_amount=10, caps=Caps(program_budget=0))
    [d] = decide_rewards(rules, order_amount=5)
    assert d.reason.startswith("min_order_amount")
    [d] = decide_rewards(rules, order_amount=50)
    assert d.reason.startswith("cap_reached") and d.status == "rejected"


def test_rules_from_a_stored_programme() -> None:
    rules = rules_from_program({
        "referrer_reward": {"kind": "credit", "amount": 300}, "friend_reward": None,
        "min_order_amount": 100, "caps": {"per_referrer_day": 900, "mode": "reject"},
        "tiers": [{"from_referral": 3, "percent": "2.5", "bonus": 50}]})
    assert rules.caps == Caps(per_referrer_day=900, mode="reject")
    assert rules.tiers == (Tier(3, percent=Decimal("2.5"), bonus=50),)
    assert rules.has_milestones and rules.needs_standing and rules.min_order_amount == 100
    assert rules_from_program({"caps": {}, "tiers": []}).needs_standing is False


# --- properties: caps are never exceeded, in any order ----------------------------------

caps_strategy = st.builds(
    Caps,
    per_referrer_day=st.none() | st.integers(0, 6000),
    per_referrer_month=st.none() | st.integers(0, 15_000),
    per_referrer_lifetime=st.none() | st.integers(0, 30_000),
    program_budget=st.none() | st.integers(0, 40_000),
    mode=st.sampled_from(["cap", "reject"]),
)
referral_strategy = st.tuples(
    st.integers(0, 2),            # referrer
    st.integers(0, 3),            # day (months of 2 days, to exercise both periods)
    st.integers(0, 60_000),       # order amount
)


@settings(max_examples=300, deadline=None)
@given(caps=caps_strategy, referrals=st.lists(referral_strategy, max_size=60),
       percent=st.sampled_from([None, Decimal(5), Decimal("12.5")]))
def test_granted_rewards_never_exceed_any_cap(caps: Caps, referrals: list[tuple[int, int, int]],
                                              percent: Decimal | None) -> None:
    """Feed referrals one at a time, each decided against the totals granted so far (as the
    worker does under the referrer's lock): no cap is ever exceeded, and in mode cap a
    reward is only refused when a cap it counts against is full."""
    referrer_rule = RewardRule(RewardKind.CASH, amount=None if percent else 1000, percent=percent)
    rules = ProgramRules(referrer_rule, RewardRule(RewardKind.CREDIT, amount=700),
                         tiers=(Tier(3, amount=1800, bonus=2500), Tier(6, amount=2500)),
                         caps=caps)
    day: dict[tuple[int, int], int] = {}
    month: dict[tuple[int, int], int] = {}
    life: dict[int, int] = {}
    success: dict[int, int] = {}
    milestones: dict[int, set[int]] = {}
    spent = 0
    for who, d, order in referrals:
        m = d // 2
        standing = Standing(success.get(who, 0), day.get((who, d), 0), month.get((who, m), 0),
                            life.get(who, 0), spent, frozenset(milestones.get(who, ())))
        for dec in decide_rewards(rules, order_amount=order, standing=standing):
            if dec.reason and dec.reason.startswith("cap_reached") and caps.mode == "cap":
                room = [caps.program_budget - spent] if caps.program_budget is not None else []
                if dec.beneficiary == "referrer":
                    room += [c - u for c, u in ((caps.per_referrer_day, day.get((who, d), 0)),
                                                (caps.per_referrer_month,
                                                 month.get((who, m), 0)),
                                                (caps.per_referrer_lifetime, life.get(who, 0)))
                             if c is not None]
                assert min(room) <= 0, "refused although every cap had room"
            if dec.status != "pending":
                continue
            spent += dec.amount
            if dec.beneficiary == "referrer":
                day[who, d] = day.get((who, d), 0) + dec.amount
                month[who, m] = month.get((who, m), 0) + dec.amount
                life[who] = life.get(who, 0) + dec.amount
                if dec.purpose == "milestone":
                    milestones.setdefault(who, set()).add(dec.milestone)
        if order >= rules.min_order_amount:
            success[who] = success.get(who, 0) + 1
        for total, cap in ((spent, caps.program_budget),
                           *((v, caps.per_referrer_day) for v in day.values()),
                           *((v, caps.per_referrer_month) for v in month.values()),
                           *((v, caps.per_referrer_lifetime) for v in life.values())):
            assert cap is None or total <= cap
    for got in milestones.values():
        assert got <= {3}  # one tier has a bonus; paid at most once per referrer


@settings(max_examples=200, deadline=None)
@given(tiers=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 5000)), min_size=1,
                      max_size=6, unique_by=lambda t: t[0]),
       order=st.integers(0, 100_000))
def test_increasing_tiers_pay_monotonically(tiers: list[tuple[int, int]], order: int) -> None:
    """With tier amounts rising with from_referral, the Nth referral never earns less than
    an earlier one."""
    amounts = sorted(a for _, a in tiers)
    rules = ProgramRules(RewardRule(RewardKind.POINTS, amount=0), None, tiers=tuple(
        Tier(f, amount=a) for f, a in zip(sorted(f for f, _ in tiers), amounts, strict=True)))
    paid = [decide_rewards(rules, order_amount=order,
                           standing=Standing(successful_referrals=n))[0].amount
            for n in range(40)]
    assert paid == sorted(paid)
