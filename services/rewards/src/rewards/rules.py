"""Reward rules: what an attributed referral earns, and for whom. Pure: no I/O, no framework.

Amounts are integers in minor units (points for ``points``). A percentage reward is rounded
down to the minor unit, so the platform never pays more than the programme promised.

**Successful referral.** Tiers and milestones count the referrer's *successful referrals*: an
attributed conversion whose referrer reward (purpose ``referral``) is not rejected and not
reversed. A referral refused only because a cap was full (``cap_reached``) still counts, since
the friend did buy; one below the minimum order, rejected by a fraud check or a reviewer, or
reversed (refund, chargeback) does not. The *N*-th successful referral is the one that finds
*N - 1* before it. Programmes without a referrer reward have no tiers or milestones.

**Tiers.** The *N*-th successful referral earns the referrer the amount or percent of the tier
with the highest ``from_referral`` ≤ *N* among those that set one (kind, ``max_amount`` and
expiry stay those of the programme's referrer reward; below the first tier, its own amount).
A tier with a ``bonus`` pays it once, as a separate ``milestone`` reward, on the referral
that makes the count reach its ``from_referral``.

**Caps** limit what is granted (pending, in review or approved; rejected and reversed rewards
give their room back), in reward amount: per referrer per UTC day and calendar month of the
decision, per referrer lifetime (the referrer's rewards only), and the programme budget (both
sides). A reward that does not fit is, in mode ``cap`` (default), reduced to what is left and
stays pending, or, when nothing is left or in mode ``reject``, rejected with ``cap_reached``.
Rewards are fitted in the order referrer, friend, milestone bonus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

CAP_REACHED = "cap_reached"
MIN_ORDER = "min_order_amount"


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
class Tier:
    """From the ``from_referral``-th successful referral on: ``amount`` or ``percent`` (if
    given) instead of the referrer reward's own; ``bonus`` once when the count reaches it."""

    from_referral: int
    amount: int | None = None
    percent: Decimal | None = None
    bonus: int | None = None


@dataclass(frozen=True)
class Caps:
    per_referrer_day: int | None = None
    per_referrer_month: int | None = None
    per_referrer_lifetime: int | None = None
    program_budget: int | None = None
    mode: Literal["cap", "reject"] = "cap"

    @cached_property  # frozen: computed once (read for every referral)
    def any(self) -> bool:
        return any(v is not None for v in (self.per_referrer_day, self.per_referrer_month,
                                          self.per_referrer_lifetime, self.program_budget))


@dataclass(frozen=True)
class ProgramRules:
    referrer_reward: RewardRule | None
    friend_reward: RewardRule | None
    min_order_amount: int = 0
    tiers: tuple[Tier, ...] = ()
    caps: Caps = field(default_factory=Caps)

    @cached_property
    def has_milestones(self) -> bool:
        return self.referrer_reward is not None and any(t.bonus for t in self.tiers)

    @cached_property
    def needs_standing(self) -> bool:
        """Whether deciding needs the referrer's and programme's totals at all."""
        return self.caps.any or (self.referrer_reward is not None and bool(self.tiers))


@dataclass(frozen=True)
class Standing:
    """What had been granted before this referral (see the module doc for what counts)."""

    successful_referrals: int = 0
    referrer_day: int = 0
    referrer_month: int = 0
    referrer_lifetime: int = 0
    program_spent: int = 0
    milestones_granted: frozenset[int] = frozenset()


@dataclass(frozen=True)
class RewardDecision:
    beneficiary: str  # "referrer" | "friend"
    kind: RewardKind
    amount: int
    status: str  # "pending" | "rejected"
    reason: str | None = None
    expires_after: str | None = None
    purpose: str = "referral"  # "referral" | "milestone"
    milestone: int | None = None  # the successful-referral count a milestone bonus is for
    basis: str = "flat"  # "flat" | "percent": how the amount was computed (tier included)


def tier_for(tiers: Sequence[Tier], count: int) -> Tier | None:
    """The tier of the ``count``-th successful referral: highest ``from_referral`` ≤ count."""
    eligible = [t for t in tiers if t.from_referral <= count]
    return max(eligible, key=lambda t: t.from_referral) if eligible else None


def decide_rewards(rules: ProgramRules, *, order_amount: int, standing: Standing | None = None,
                   refused: str | None = None) -> list[RewardDecision]:
    """The rewards an attributed referral of ``order_amount`` earns: one per side that has a
    rule, plus a milestone bonus when this referral reaches one. Orders below the programme's
    minimum, and referrals ``refused`` by a fraud check (the reason given), earn rejected
    rewards with the reason, so the ledger explains why nothing was paid. Caps are applied
    against ``standing`` (nothing granted before, when omitted)."""
    standing = standing or Standing()
    if refused is None and order_amount < rules.min_order_amount:
        refused = (f"{MIN_ORDER}: order {order_amount} is below the programme's minimum of "
                   f"{rules.min_order_amount}")
    count = standing.successful_referrals + 1
    decisions: list[RewardDecision] = []
    referrer_rule = rules.referrer_reward
    paying = [t for t in rules.tiers if t.amount is not None or t.percent is not None]
    if referrer_rule is not None and (tier := tier_for(paying, count)) is not None:
        referrer_rule = replace(referrer_rule, amount=tier.amount, percent=tier.percent)
    for beneficiary, rule in (("referrer", referrer_rule), ("friend", rules.friend_reward)):
        if rule is not None:
            decisions.append(RewardDecision(
                beneficiary, rule.kind, rule.value_for(order_amount),
                "rejected" if refused else "pending", reason=refused,
                expires_after=rule.expires_after,
                basis="flat" if rule.amount is not None else "percent"))
    if refused is None and rules.referrer_reward is not None:
        decisions.extend(_milestones(rules, count, standing))
    return apply_caps(decisions, rules.caps, standing)


def _milestones(rules: ProgramRules, count: int, standing: Standing) -> list[RewardDecision]:
    assert rules.referrer_reward is not None
    return [RewardDecision("referrer", rules.referrer_reward.kind, tier.bonus, "pending",
                           expires_after=rules.referrer_reward.expires_after,
                           purpose="milestone", milestone=count)
            for tier in rules.tiers
            if tier.bonus and tier.from_referral == count
            and count not in standing.milestones_granted][:1]


def apply_caps(decisions: Sequence[RewardDecision], caps: Caps, standing: Standing
               ) -> list[RewardDecision]:
    """Fit pending rewards, in order, into what each cap has left (see the module doc)."""
    if not caps.any:
        return list(decisions)
    used = {"per_referrer_day": standing.referrer_day,
            "per_referrer_month": standing.referrer_month,
            "per_referrer_lifetime": standing.referrer_lifetime,
            "program_budget": standing.program_spent}
    out: list[RewardDecision] = []
    for decision in decisions:
        if decision.status != "pending":
            out.append(decision)
            continue
        names = ["program_budget"] if decision.beneficiary == "friend" else list(used)
        limits = {n: getattr(caps, n) for n in names if getattr(caps, n) is not None}
        if not limits:
            out.append(decision)
            continue
        left = {n: max(limit - used[n], 0) for n, limit in limits.items()}
        tightest = min(left, key=lambda n: left[n])
        room = left[tightest]
        granted = decision.amount
        if decision.amount > room:
            if room == 0 or caps.mode == "reject":
                out.append(replace(decision, status="rejected", reason=(
                    f"{CAP_REACHED}: the {tightest} cap of {limits[tightest]} has {room} left, "
                    f"{decision.amount} asked")))
                continue
            granted = room
            decision = replace(decision, amount=room, reason=(
                f"capped: {decision.amount} reduced to {room} by the {tightest} cap of "
                f"{limits[tightest]}"))
        for n in limits:
            used[n] += granted
        out.append(decision)
    return out


def rule_from_json(spec: Mapping[str, Any] | None) -> RewardRule | None:
    """A rule from its stored JSON form (as accepted by the admin API)."""
    if not spec:
        return None
    return RewardRule(kind=RewardKind(spec["kind"]), amount=spec.get("amount"),
                      percent=_decimal(spec.get("percent")),
                      max_amount=spec.get("max_amount"), expires_after=spec.get("expires_after"))


def rules_from_program(program: Mapping[str, Any]) -> ProgramRules:
    """The rules of a stored programme row (JSON columns as the admin API wrote them)."""
    caps = program.get("caps") or {}
    return ProgramRules(
        referrer_reward=rule_from_json(program.get("referrer_reward")),
        friend_reward=rule_from_json(program.get("friend_reward")),
        min_order_amount=program.get("min_order_amount") or 0,
        tiers=tuple(Tier(from_referral=t["from_referral"], amount=t.get("amount"),
                         percent=_decimal(t.get("percent")), bonus=t.get("bonus"))
                    for t in program.get("tiers") or ()),
        caps=Caps(per_referrer_day=caps.get("per_referrer_day"),
                  per_referrer_month=caps.get("per_referrer_month"),
                  per_referrer_lifetime=caps.get("per_referrer_lifetime"),
                  program_budget=caps.get("program_budget"),
                  mode=caps.get("mode") or "cap"),
    )


def _decimal(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value is not None else None
