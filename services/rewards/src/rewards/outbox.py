"""Transactional outbox: events are written with the change they announce, published later.

``enqueue`` must run inside the caller's transaction; the relay (``relay.py``) publishes rows
in id order and marks them. A NOTIFY wakes the relay at commit, so latency stays low without
busy polling.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from referral_events import Envelope, Topic, encode

CHANNEL = "rewards_outbox"


async def enqueue_many(conn: asyncpg.Connection, topic: Topic,
                       events: list[tuple[str, Envelope[Any]]]) -> None:
    """Several (key, envelope) rows in one statement, in order; one NOTIFY."""
    if not events:
        return
    await conn.execute(
        "INSERT INTO outbox (topic, key, value)"
        " SELECT $1, k, v FROM unnest($2::text[], $3::bytea[]) AS u (k, v)",
        topic.name, [key for key, _ in events], [encode(envelope) for _, envelope in events])
    await conn.execute(f"NOTIFY {CHANNEL}")


async def enqueue(conn: asyncpg.Connection, topic: Topic, *, key: str,
                  envelope: Envelope[Any]) -> None:
    await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)",
                       topic.name, key, encode(envelope))
    await conn.execute(f"NOTIFY {CHANNEL}")
