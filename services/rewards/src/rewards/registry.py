"""Registry entries (programmes, referral codes) as published to the compacted topic."""

from __future__ import annotations

from typing import Any

import asyncpg
from referral_events import ProgramEntry, ReferralCodeEntry, TopicRegistry, new_event, utcnow
from referral_events.identity import email_hash

from .outbox import enqueue

SOURCE = "rewards"


def program_entry(row: Any) -> ProgramEntry:
    return ProgramEntry(
        program_id=row["id"], name=row["name"], landing_url=row["landing_url"],
        currency=row["currency"], locale=row["locale"],
        attribution_window_days=row["attribution_window_days"],
        attribution_model=row["attribution_model"],
        code_only_attribution=row["code_only_attribution"],
        new_customers_only=row["new_customers_only"], active=row["active"],
        publishable_key_hash=_sha(row["publishable_key"]),
        secret_key_hash=row["secret_key_hash"], version=row["version"],
        updated_at=row["updated_at"],
    )


def code_entry(row: Any) -> ReferralCodeEntry:
    return ReferralCodeEntry(
        code=row["code"], program_id=row["program_id"], referrer_id=row["id"],
        referrer_external_id=row["external_id"], referrer_email_hash=email_hash(row["email"]),
        active=row["active"], version=row["version"], updated_at=utcnow(),
    )


def _sha(key: str) -> str:
    from referral_events.identity import key_hash

    return key_hash(key)


async def publish_program(conn: asyncpg.Connection, topics: TopicRegistry, row: Any) -> None:
    entry = program_entry(row)
    await enqueue(conn, topics.registry, key=entry.registry_key(),
                  envelope=new_event(entry, source=SOURCE))


async def publish_code(conn: asyncpg.Connection, topics: TopicRegistry, row: Any) -> None:
    entry = code_entry(row)
    await enqueue(conn, topics.registry, key=entry.registry_key(),
                  envelope=new_event(entry, source=SOURCE))
