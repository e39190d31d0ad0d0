"""What a reversal (refund, chargeback, cancellation) does to one reward. Pure: no I/O.

The policy, in integer arithmetic (minor units, or points):

* Reversals of one order add up: ``reversed`` is the total reversed so far, at most the order
  amount. A reversal without an amount reverses the whole order.
* The reward is **reversed** (its value goes to zero) when the whole order is reversed, or
  when what remains of the order falls below the programme's ``min_order_amount``: the order
  would not have earned a reward in the first place.
* Otherwise a **percent** reward shrinks with the order: its value becomes
  ``original * remaining // order``, rounded down (as rewards are rounded down when earned),
  and never grows back. A **flat** reward keeps its value: the order still qualifies.
* During the hold (pending, in review) the value is simply lowered; no money moved yet.
  After approval the part taken away is clawed back with a negative ledger entry.
* Rejected and reversed rewards are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["reversed", "reduced", "unchanged", "ignored"]
OPEN = ("pending", "in_review")


@dataclass(frozen=True)
class RewardState:
    status: str
    amount: int                 # current value
    original_amount: int        # value when created
    basis: str                  # "flat" | "percent"
    order_amount: int
    reversed_order_amount: int  # reversed so far


@dataclass(frozen=True)
class ReversalEffect:
    status: str
    amount: int                 # value after (the value it had, when reversed)
    reversed_order_amount: int
    taken: int                  # value removed by this reversal
    clawback: int               # the part of ``taken`` already paid: a negative ledger entry
    outcome: Outcome


def reversal_effect(reward: RewardState, *, reversed_amount: int | None,
                    min_order_amount: int) -> ReversalEffect:
    """The reward after a reversal of ``reversed_amount`` of its order (None: all of it)."""
    if reward.status not in (*OPEN, "approved"):
        return ReversalEffect(reward.status, reward.amount, reward.reversed_order_amount, 0, 0,
                              "ignored")
    order = reward.order_amount
    requested = order if reversed_amount is None else reversed_amount
    reversed_total = min(order, reward.reversed_order_amount + requested)
    remaining = order - reversed_total
    whole = reversed_total >= order or remaining < min_order_amount
    if whole:
        value = 0
    elif reward.basis == "percent":
        value = min(reward.amount, reward.original_amount * remaining // order)
    else:
        value = reward.amount
    taken = reward.amount - value
    clawback = taken if reward.status == "approved" else 0
    if whole or (value == 0 and taken > 0):  # a percent reward shrunk to nothing is gone too
        return ReversalEffect("reversed", reward.amount, reversed_total, taken, clawback,
                              "reversed")
    return ReversalEffect(reward.status, value, reversed_total, taken, clawback,
                          "reduced" if taken else "unchanged")
