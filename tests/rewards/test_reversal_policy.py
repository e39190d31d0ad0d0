"""The reversal policy (pure): full, partial, below the minimum, flat and percent rewards."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rewards.reversal_policy import RewardState, reversal_effect


def _state(**fields):
    base = dict(status="pending", amount=1000, original_amount=1000, basis="percent",
                order_amount=10_000, reversed_order_amount=0)
    return RewardState(**{**base, **fields})


def test_full_reversal_during_hold_cancels_without_clawback():
    effect = reversal_effect(_state(), reversed_amount=None, min_order_amount=0)
    assert (effect.status, effect.outcome, effect.taken, effect.clawback) == (
        "reversed", "reversed", 1000, 0)
    assert effect.reversed_order_amount == 10_000


def test_full_reversal_after_approval_claws_everything_back():
    effect = reversal_effect(_state(status="approved"), reversed_amount=None,
                             min_order_amount=0)
    assert (effect.status, effect.taken, effect.clawback) == ("reversed", 1000, 1000)


def test_a_partial_amount_covering_the_order_is_a_full_reversal():
    effect = reversal_effect(_state(basis="flat", reversed_order_amount=4000),
                             reversed_amount=7000, min_order_amount=0)
    assert (effect.status, effect.reversed_order_amount) == ("reversed", 10_000)


def test_percent_reward_shrinks_with_the_order_rounding_down():
    effect = reversal_effect(_state(amount=999, original_amount=999), reversed_amount=2500,
                             min_order_amount=0)
    # 999 * 7500 // 10000 = 749 (749.25 rounded down)
    assert (effect.status, effect.amount, effect.taken, effect.outcome) == (
        "pending", 749, 250, "reduced")


def test_partial_reversal_of_an_approved_percent_reward_claws_back_the_difference():
    effect = reversal_effect(_state(status="approved"), reversed_amount=4000,
                             min_order_amount=0)
    assert (effect.status, effect.amount, effect.clawback) == ("approved", 600, 400)


def test_flat_reward_stays_while_the_rest_of_the_order_qualifies():
    effect = reversal_effect(_state(basis="flat"), reversed_amount=6000, min_order_amount=4000)
    assert (effect.status, effect.amount, effect.taken, effect.outcome) == (
        "pending", 1000, 0, "unchanged")
    assert effect.reversed_order_amount == 6000


@pytest.mark.parametrize("basis", ["flat", "percent"])
def test_below_the_minimum_order_any_reward_is_reversed(basis):
    effect = reversal_effect(_state(basis=basis, status="in_review"), reversed_amount=6001,
                             min_order_amount=4000)
    assert (effect.status, effect.taken, effect.clawback) == ("reversed", 1000, 0)


@pytest.mark.parametrize("status", ["rejected", "reversed"])
def test_closed_rewards_are_left_alone(status):
    effect = reversal_effect(_state(status=status), reversed_amount=None, min_order_amount=0)
    assert (effect.status, effect.outcome, effect.taken) == (status, "ignored", 0)


def test_zero_order_is_fully_reversed_by_anything():
    effect = reversal_effect(_state(order_amount=0, basis="flat"), reversed_amount=0,
                             min_order_amount=0)
    assert effect.status == "reversed"


@given(order=st.integers(1, 10**9), original=st.integers(0, 10**7),
       basis=st.sampled_from(["flat", "percent"]), approved=st.booleans(),
       minimum=st.integers(0, 10**9),
       parts=st.lists(st.integers(0, 10**9), min_size=1, max_size=6))
def test_successive_reversals_equal_one_reversal_of_their_sum(order, original, basis, approved,
                                                              minimum, parts):
    """Path independence and money conservation: however a refund is split, the reward ends
    at the same value, never grows, and what was taken (and clawed back) adds up exactly."""
    status = "approved" if approved else "pending"
    state = _state(status=status, amount=original, original_amount=original, basis=basis,
                   order_amount=order)
    taken = clawed = 0
    for part in parts:
        effect = reversal_effect(state, reversed_amount=part, min_order_amount=minimum)
        assert 0 <= effect.taken <= state.amount and effect.amount <= state.amount
        assert effect.clawback == (effect.taken if approved else 0)
        taken, clawed = taken + effect.taken, clawed + effect.clawback
        state = RewardState(status=effect.status, amount=effect.amount,
                            original_amount=original, basis=basis, order_amount=order,
                            reversed_order_amount=effect.reversed_order_amount)
    once = reversal_effect(_state(status=status, amount=original, original_amount=original,
                                  basis=basis, order_amount=order),
                           reversed_amount=sum(parts), min_order_amount=minimum)
    assert state.status == once.status
    remaining = 0 if state.status == "reversed" else state.amount
    assert remaining == (0 if once.status == "reversed" else once.amount)
    assert taken == original - remaining
    assert clawed == (taken if approved else 0)
