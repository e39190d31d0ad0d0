"""Reward rules: what an attributed referral earns, and for whom. Pure: no I/O, no framework.

Amounts are integers in minor units (points for ``points``). A percentage reward is rounded
down to the minor unit, so the platform never pays more than the programme promised.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum


class RewardKind(StrEnum):
    CASH = "cash"
    CREDIT = "credit"
    DISCOUNT = "discount"
    POINTS = "points"


@dataclass(frozen=True)
class RewardRule:
    """One side's reward: a flat ``amount`` or a ``percent`` of the order, capped by
    ``max_amount``."""

    kind: RewardKind
    amount: int | None = None
    percent: Decimal | None = None
    max_amount: int | None = None
    expires_after: str | None = None

    def value_for(self, order_amount: int) -> int:
        if self.amount is not None:
            value = self.amount
        elif self.percent is not None:
            value = int((Decimal(order_amount) * self.percent / 100).to_integral_value(ROUND_FLOOR))
        else:
            value = 0
        if self.max_amount is not None:
            value = min(value, self.max_amount)
        return max(value, 0)


@dataclass(frozen=True)
class ProgramRules:
    referrer_reward: RewardRule | None
    friend_reward: RewardRule | None
    min_order_amount: int = 0


@dataclass(frozen=True)
class RewardDecision:
    beneficiary: str  # "referrer" | "friend"
    kind: RewardKind
    amount: int
    status: str  # "pending" | "rejected"
    reason: str | None = None
    expires_after: str | None = None


def decide_rewards(rules: ProgramRules, *, order_amount: int) -> list[RewardDecision]:
    """The rewards an attributed referral of ``order_amount`` earns (one per side that has a
    rule). Orders below the programme's minimum earn rejected rewards with the reason, so the
    ledger explains why nothing was paid."""
    decisions: list[RewardDecision] = []
    for beneficiary, rule in (("referrer", rules.referrer_reward),
                              ("friend", rules.friend_reward)):
        if rule is None:
            continue
        amount = rule.value_for(order_amount)
        if order_amount < rules.min_order_amount:
            decisions.append(RewardDecision(
                beneficiary, rule.kind, amount, "rejected",
                reason=f"min_order_amount: order {order_amount} is below the programme's "
                       f"minimum of {rules.min_order_amount}",
                expires_after=rule.expires_after))
        else:
            decisions.append(RewardDecision(beneficiary, rule.kind, amount, "pending",
                                            expires_after=rule.expires_after))
    return decisions


def rule_from_json(spec: dict | None) -> RewardRule | None:
    """A rule from its stored JSON form (as accepted by the admin API)."""
    if not spec:
        return None
    percent = spec.get("percent")
    return RewardRule(kind=RewardKind(spec["kind"]), amount=spec.get("amount"),
                      percent=Decimal(str(percent)) if percent is not None else None,
                      max_amount=spec.get("max_amount"), expires_after=spec.get("expires_after"))
