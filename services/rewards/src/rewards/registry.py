"""Registry entries (programmes, referral codes) as published to the compacted topic.

Both are written to the outbox in the transaction that changed the row, so the registry
never misses a change and never announces one that was rolled back.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from referral_events import ProgramEntry, ReferralCodeEntry, TopicRegistry, new_event
from referral_events.identity import email_hash, key_hash

from .outbox import enqueue

SOURCE = "rewards"


def program_entry(row: Any) -> ProgramEntry:
    """The public snapshot of a programme row: keys only as hashes."""
    return ProgramEntry(
        program_id=row["id"], name=row["name"], landing_url=row["landing_url"],
        currency=row["currency"], locale=row["locale"],
        attribution_window_days=row["attribution_window_days"],
        attribution_model=row["attribution_model"],
        code_only_attribution=row["code_only_attribution"],
        new_customers_only=row["new_customers_only"], active=row["active"],
        publishable_key_hash=key_hash(row["publishable_key"]),
        secret_key_hash=row["secret_key_hash"], version=row["version"],
        updated_at=row["updated_at"],
    )


def code_entry(row: Any) -> ReferralCodeEntry:
    """The public snapshot of a referrer's code: the email only as its hash."""
    return ReferralCodeEntry(
        code=row["code"], program_id=row["program_id"], referrer_id=row["id"],
        referrer_external_id=row["external_id"], referrer_email_hash=email_hash(row["email"]),
        active=row["active"], version=row["version"],
        updated_at=row.get("updated_at") or row["created_at"],
    )


async def publish_program(conn: asyncpg.Connection, topics: TopicRegistry, row: Any) -> None:
    entry = program_entry(row)
    await enqueue(conn, topics.registry, key=entry.registry_key(),
                  envelope=new_event(entry, source=SOURCE))


async def publish_code(conn: asyncpg.Connection, topics: TopicRegistry, row: Any) -> None:
    entry = code_entry(row)
    await enqueue(conn, topics.registry, key=entry.registry_key(),
                  envelope=new_event(entry, source=SOURCE))
