"""Rewards as CSV, streamed from a server-side cursor: one row per reward, safe to open in a
spreadsheet (cells that a spreadsheet would run as a formula are prefixed with a quote)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

COLUMNS = ("id", "created_at", "status", "beneficiary", "recipient_id", "referrer_id",
           "referrer_code", "referrer_email", "conversion_id", "kind", "amount", "currency",
           "order_amount", "channel", "available_at", "reason", "fraud_signals")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: strings starting with = + - @ (or a tab or carriage
    return) get a leading ``'`` (OWASP's advice against CSV injection); numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def signals_summary(signals: list[dict[str, Any]] | None) -> str:
    """``velocity=12 (threshold 10) -> flag; disposable_email=true -> reject``"""
    parts = []
    for s in signals or []:
        value = str(s.get("value")).lower() if isinstance(s.get("value"), bool) else s.get("value")
        text = f"{s.get('signal')}={value}"
        if s.get("threshold") is not None:
            text += f" (threshold {s['threshold']})"
        parts.append(f"{text} -> {s.get('action')}")
    return "; ".join(parts)


def csv_row(row: Any) -> list[Any]:
    values = {**dict(row), "fraud_signals": signals_summary(row["fraud_signals"])}
    return [safe_cell(values[c]) for c in COLUMNS]


async def reward_csv(pool: asyncpg.Pool, program_id: str, *, status: str | None,
                     start: date | None, end: date | None, chunk: int = 500
                     ) -> AsyncIterator[str]:
    """The CSV text, header first, a chunk of rows at a time (oldest first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield buffer.getvalue()
    since = datetime.combine(start, time(), UTC) if start else None
    until = datetime.combine(end + timedelta(days=1), time(), UTC) if end else None
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = conn.cursor(
            "SELECT w.*, r.code AS referrer_code, r.email AS referrer_email"
            " FROM rewards w JOIN referrers r ON r.id = w.referrer_id"
            " WHERE w.program_id = $1 AND ($2::text IS NULL OR w.status = $2)"
            " AND ($3::timestamptz IS NULL OR w.created_at >= $3)"
            " AND ($4::timestamptz IS NULL OR w.created_at < $4)"
            " ORDER BY w.created_at, w.id", program_id, status, since, until, prefetch=chunk)
        batch = 0
        buffer.seek(0)
        buffer.truncate()
        async for row in cursor:
            writer.writerow(csv_row(row))
            batch += 1
            if batch >= chunk:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                batch = 0
        if batch:
            yield buffer.getvalue()
