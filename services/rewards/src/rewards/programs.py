"""Programmes and referrers: create, read, change, each change published via the outbox."""

from __future__ import annotations

from typing import Any

import asyncpg
from referral_events import TopicRegistry
from referral_events.identity import ip_hash, key_hash

from .identifiers import new_id, new_publishable_key, new_referral_code, new_secret_key
from .registry import publish_code, publish_program
from .schemas import ProgramCreate, ProgramUpdate, ReferrerCreate

_JSON_FIELDS = ("referrer_reward", "friend_reward", "tiers", "caps", "fraud")
KNOWN_IDS = 20  # IP hashes and device ids kept per referrer (the latest)


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    if "landing_url" in out and out["landing_url"] is not None:
        out["landing_url"] = str(out["landing_url"])
    if "marketer_emails" in out and out["marketer_emails"] is not None:
        out["marketer_emails"] = [str(e) for e in out["marketer_emails"]]
    return out


async def create_program(*, conn: asyncpg.Connection, topics: TopicRegistry,
                         body: ProgramCreate) -> tuple[Any, str]:
    """Insert a programme and announce it; returns the row and its secret key (shown once)."""
    secret_key = new_secret_key()
    fields = _columns(body.model_dump(mode="json"))
    fields.update(id=new_id("prg"), publishable_key=new_publishable_key(),
                  secret_key_hash=key_hash(secret_key))
    # Column names come from the schema's own fields, never from the request: no injection.
    names = list(fields)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"INSERT INTO programs ({', '.join(names)}) VALUES "  # noqa: S608
            f"({', '.join(f'${i + 1}' for i in range(len(names)))}) RETURNING *",
            *fields.values())
        await publish_program(conn, topics, row)
    return row, secret_key


async def get_program(*, conn: asyncpg.Connection, program_id: str) -> Any | None:
    return await conn.fetchrow("SELECT * FROM programs WHERE id = $1", program_id)


async def update_program(*, conn: asyncpg.Connection, topics: TopicRegistry, program_id: str,
                         body: ProgramUpdate) -> Any | None:
    changes = _columns(body.model_dump(mode="json", exclude_unset=True))
    async with conn.transaction():
        if not changes:
            return await get_program(conn=conn, program_id=program_id)
        sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(changes))
        row = await conn.fetchrow(
            f"UPDATE programs SET {sets}, version = version + 1, updated_at = now() "  # noqa: S608
            f"WHERE id = $1 RETURNING *", program_id, *changes.values())
        if row is not None:
            await publish_program(conn, topics, row)
    return row


async def enrol_referrer(*, conn: asyncpg.Connection, topics: TopicRegistry, program_id: str,
                         body: ReferrerCreate, ip_hash_salt: str = "") -> tuple[Any, bool]:
    """The referrer with this external id, created if new; returns (row, created). An IP
    (kept only as a salted hash, as the tracker hashes buyers' IPs) and a device id given
    are remembered for the same-IP-or-device fraud check, also when enrolling again."""
    ips = [ip_hash(body.ip, ip_hash_salt)] if body.ip else []
    devices = [body.device_id] if body.device_id else []
    existing = await conn.fetchrow(
        "SELECT * FROM referrers WHERE program_id = $1 AND external_id = $2",
        program_id, body.external_id)
    if existing is not None:
        if set(ips) - set(existing["ip_hashes"]) or set(devices) - set(existing["device_ids"]):
            existing = await _remember(conn, existing["id"], ips, devices)
        return existing, False
    for _ in range(5):  # a code collision is astronomically rare; retry a few times anyway
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO referrers (id, program_id, external_id, email, name, locale, code,"
                    " ip_hashes, device_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    " ON CONFLICT (program_id, external_id) DO NOTHING RETURNING *",
                    new_id("ref"), program_id, body.external_id, str(body.email), body.name,
                    body.locale, new_referral_code(), ips, devices)
                if row is None:  # enrolled concurrently by another request
                    raced = await conn.fetchrow(
                        "SELECT * FROM referrers WHERE program_id = $1 AND external_id = $2",
                        program_id, body.external_id)
                    if ips or devices:
                        raced = await _remember(conn, raced["id"], ips, devices)
                    return raced, False
                await publish_code(conn, topics, row)
                return row, True
        except asyncpg.UniqueViolationError:
            continue
    raise RuntimeError("could not allocate a unique referral code")


async def _remember(conn: asyncpg.Connection, referrer_id: str, ips: list[str],
                    devices: list[str]) -> Any:
    """Add IP hashes and device ids to a referrer's known ones (the latest KNOWN_IDS)."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT ip_hashes, device_ids FROM referrers WHERE id = $1"
                                  " FOR UPDATE", referrer_id)
        return await conn.fetchrow(
            "UPDATE referrers SET ip_hashes = $2, device_ids = $3 WHERE id = $1 RETURNING *",
            referrer_id, _latest(row["ip_hashes"], ips), _latest(row["device_ids"], devices))


def _latest(known: list[str], new: list[str]) -> list[str]:
    return ([k for k in known if k not in new] + new)[-KNOWN_IDS:]


async def referrer_summary(*, conn: asyncpg.Connection, referrer_id: str
                           ) -> tuple[Any, dict[str, int], dict[str, int]] | None:
    """The referrer, its counts (referrals and rewards by status) and its balance per kind:
    ledger credits minus clawbacks, referrer-side rewards only, without expired credits (an
    expired credit leaves the balance with its clawbacks, which carry its expiry)."""
    referrer = await conn.fetchrow("SELECT * FROM referrers WHERE id = $1", referrer_id)
    if referrer is None:
        return None
    counts = {"referrals": await conn.fetchval(
        "SELECT count(*) FROM referral_decisions WHERE referrer_id = $1 "
        "AND outcome = 'attributed'", referrer_id)}
    for row in await conn.fetch(
            "SELECT status, count(*) AS n FROM rewards WHERE referrer_id = $1 "
            "AND beneficiary = 'referrer' GROUP BY status", referrer_id):
        counts[f"rewards_{row['status']}"] = row["n"]
    balance = {row["kind"]: int(row["total"]) for row in await conn.fetch(
        "SELECT kind, sum(amount) AS total FROM ledger_entries WHERE referrer_id = $1 "
        "AND beneficiary = 'referrer' AND (expires_at IS NULL OR expires_at > now()) "
        "GROUP BY kind", referrer_id)}
    return referrer, counts, balance
