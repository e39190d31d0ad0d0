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
                       events: list[tuple[str, Envelope[Any] | bytes]]) -> None:
    """Several (key, envelope or its encoding) rows in one statement, in order; one NOTIFY."""
    if not events:
        return
    await conn.copy_records_to_table(  # COPY: the cheapest way in for rows that cannot clash
        "outbox", columns=["topic", "key", "value"],
        records=[(topic.name, key, value if isinstance(value, bytes) else encode(value))
                 for key, value in events])
    await conn.execute(f"NOTIFY {CHANNEL}")


async def enqueue(conn: asyncpg.Connection, topic: Topic, *, key: str,
                  envelope: Envelope[Any]) -> None:
    await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)",
                       topic.name, key, encode(envelope))
    await conn.execute(f"NOTIFY {CHANNEL}")
