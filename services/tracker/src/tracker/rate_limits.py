"""Per-key event budgets: a key that sends more than its budget gets 429 + Retry-After.

Budgets count events, not requests (a batch of 500 costs 500), and are kept per replica in
memory: behind N replicas a key may send up to N times its budget. That is the point of
them: they stop one runaway or abused key (publishable keys are public) from starving the
others on a replica, not from ever exceeding a global quota.

A token bucket per key: it refills at the budget's rate and holds at most one period's
worth, so a quiet key may burst up to its whole budget at once. Chosen over the ``limits``
package after measuring both at 3,000 calls/s on the target machine: ``limits``' in-memory
strategies cost 20-40 µs per call on average with a p99 of 0.4-0.6 ms (its storage starts
a timer thread every 10 ms), this bucket about 3 µs with a p99 of 10 µs.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_BUDGET = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
UNLIMITED = "unlimited"


@dataclass(frozen=True)
class Budget:
    """``events`` per ``period_seconds``."""

    events: int
    period_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.period_seconds

    def __str__(self) -> str:
        period = next(name for name, secs in _PERIODS.items() if secs == self.period_seconds)
        return f"{self.events}/{period}"


def parse_budget(text: str) -> Budget | None:
    """``"600/second"``, ``"5000 per minute"``…; None (no limit) for ``0`` or ``unlimited``."""
    text = text.strip()
    if text.lower() in ("0", UNLIMITED, ""):
        return None
    match = _BUDGET.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a budget; write e.g. '600/second', '20000/minute', "
                         f"or '{UNLIMITED}' (or 0) for none")
    events = int(match.group(1))
    if events == 0:
        return None
    return Budget(events, _PERIODS[match.group(2).lower()])


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens, self.stamp = tokens, stamp


class RateLimited(Exception):
    """The key's budget cannot pay for this request now."""

    def __init__(self, *, retry_after: int, budget: Budget, cost: int) -> None:
        super().__init__(f"budget {budget} exhausted")
        self.retry_after, self.budget, self.cost = retry_after, budget, cost

    @property
    def never_fits(self) -> bool:
        """True when the request alone costs more than the whole budget."""
        return self.cost > self.budget.events


class KeyBudget:
    """Token buckets of one budget, one bucket per key (``None`` budget: never refuses).

    Memory is bounded by the keys that authenticate, i.e. by the programmes in the registry.
    """

    def __init__(self, budget: Budget | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def spend(self, key: str, events: int = 1) -> None:
        """Take ``events`` from ``key``'s bucket or raise :class:`RateLimited` (taking nothing)."""
        budget = self.budget
        if budget is None:
            return
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(budget.events), now)
        else:
            bucket.tokens = min(float(budget.events),
                                bucket.tokens + (now - bucket.stamp) * budget.rate)
            bucket.stamp = now
        if bucket.tokens >= events:
            bucket.tokens -= events
            return
        missing = min(events, budget.events) - bucket.tokens
        raise RateLimited(retry_after=max(1, math.ceil(missing / budget.rate)), budget=budget,
                          cost=events)
