"""Hold periods and expiries: ISO 8601 durations (``P14D``, ``PT2S``, ``P1Y``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

import isodate


class InvalidDuration(ValueError):
    pass


@lru_cache(maxsize=1024)
def parse_duration(text: str) -> timedelta | isodate.Duration:
    """Parse an ISO 8601 duration; raises :class:`InvalidDuration` with a hint otherwise.
    (Cached: a programme's hold is parsed for every referral.)"""
    try:
        value = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError, TypeError):
        raise InvalidDuration(
            f"{text!r} is not an ISO 8601 duration; use e.g. P14D, PT2S or P1Y") from None
    if (value if isinstance(value, timedelta) else value.totimedelta(start=datetime(2000, 1, 1))
            ) < timedelta(0):
        raise InvalidDuration(f"{text!r} is negative; a duration must be zero or more")
    return value


def add_duration(start: datetime, text: str) -> datetime:
    """``start`` plus the duration (calendar-aware for months and years)."""
    return start + parse_duration(text)
