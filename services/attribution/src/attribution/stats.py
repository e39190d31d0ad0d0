"""Hourly counts per programme, code and channel, kept as plain dicts (table values). Pure.

Counts are absolute and carry a ``version`` (events counted so far), so the stats events
built from them are idempotent: whoever stores them keeps the highest version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from referral_events import ReferralStatsCounted

NO_CHANNEL = "none"
"""Channel of rejected conversions: nobody's link gets them."""

Counts = dict[str, Any]


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def bucket_key(program_id: str, code: str, channel: str, at: datetime) -> str:
    hour = int(at.timestamp() // 3600)
    label = _HOUR_LABELS.get(hour)
    if label is None:  # once per hour seen: every click and decision needs its hour's label
        if len(_HOUR_LABELS) > 10_000:
            _HOUR_LABELS.clear()
        label = _HOUR_LABELS[hour] = hour_of(at).isoformat()
    return f"{program_id}|{code}|{channel}|{label}"


_HOUR_LABELS: dict[int, str] = {}


def _fresh() -> Counts:
    return {"clicks": 0, "conversions": 0, "attributed": 0, "rejected": {}, "revenue": 0,
            "version": 0}


def count_click(counts: Counts | None) -> Counts:
    out = {**(counts or _fresh())}
    out["clicks"] += 1
    out["version"] += 1
    return out


def count_decision(counts: Counts | None, *, reason: str | None, revenue: int = 0,
                   conversion: bool = True) -> Counts:
    """A decided conversion: attributed when ``reason`` is None. A duplicate submission is
    counted as a rejection (``conversion=False``), not as another conversion."""
    out = {**(counts or _fresh()), "rejected": dict((counts or {}).get("rejected") or {})}
    if conversion:
        out["conversions"] += 1
    if reason is None:
        out["attributed"] += 1
        out["revenue"] += revenue
    else:
        out["rejected"][reason] = out["rejected"].get(reason, 0) + 1
    out["version"] += 1
    return out


def stats_event(key: str, counts: Counts) -> ReferralStatsCounted:
    program_id, code, channel, hour = key.split("|", 3)
    return ReferralStatsCounted(
        program_id=program_id, code=code, channel=channel, hour=datetime.fromisoformat(hour),
        clicks=counts["clicks"], conversions=counts["conversions"],
        attributed=counts["attributed"], rejected=counts["rejected"],
        revenue=counts["revenue"], version=counts["version"])
