"""The stats store: attribution's hourly counts (``ReferralStatsCounted``) kept per programme,
code, channel and hour, only ever replaced by a higher version.

Counts are absolute, so storing is idempotent by construction: a replay, a duplicate or an
older version arriving late changes nothing. The roll-ups by day (channel, code, rejection
reason) follow in the same statement through the ``hourly_stats`` trigger.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import asyncpg
from referral_events import ReferralStatsCounted

_UPSERT = """
INSERT INTO hourly_stats AS h (program_id, code, channel, hour, clicks, conversions, attributed,
                               rejected, revenue, version, updated_at)
SELECT program_id, code, channel, hour, clicks, conversions, attributed, rejected::jsonb,
       revenue, version, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[], $6::bigint[],
            $7::bigint[], $8::text[], $9::bigint[], $10::bigint[])
     AS u(program_id, code, channel, hour, clicks, conversions, attributed, rejected, revenue,
          version)
ON CONFLICT (program_id, code, channel, hour) DO UPDATE SET
    clicks = excluded.clicks, conversions = excluded.conversions,
    attributed = excluded.attributed, rejected = excluded.rejected,
    revenue = excluded.revenue, version = excluded.version, updated_at = excluded.updated_at
WHERE h.version < excluded.version
"""


def newest_per_bucket(counts: Iterable[ReferralStatsCounted]) -> list[ReferralStatsCounted]:
    """One entry per bucket, the highest version, in bucket order (a fixed lock order)."""
    best: dict[tuple[str, str, str, str], ReferralStatsCounted] = {}
    for c in counts:
        key = (c.program_id, c.code, c.channel, c.hour.isoformat())
        if key not in best or best[key].version < c.version:
            best[key] = c
    return [best[k] for k in sorted(best)]


async def store_hourly_counts(conn: asyncpg.Connection,
                              counts: Iterable[ReferralStatsCounted]) -> int:
    """Upsert a batch in one statement (run it in a transaction with the roll-ups); returns
    the number of buckets given after de-duplication."""
    rows = newest_per_bucket(counts)
    if not rows:
        return 0
    await conn.execute(
        _UPSERT,
        [r.program_id for r in rows], [r.code for r in rows], [r.channel for r in rows],
        [r.hour for r in rows], [r.clicks for r in rows], [r.conversions for r in rows],
        [r.attributed for r in rows],
        [json.dumps({str(k): v for k, v in sorted(r.rejected.items())}) for r in rows],
        [r.revenue for r in rows], [r.version for r in rows])
    return len(rows)
