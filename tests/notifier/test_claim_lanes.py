"""Claims and outcomes batched per statement (notifier.lanes) on real PostgreSQL: what one
statement carries, and what becomes of locks when callers or sessions go away."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from notifier.notifications import LOCK_CLASS, NotificationKey, NotificationStore, State
from prometheus_client import REGISTRY

from tests.notifier.support import address


def _key() -> NotificationKey:
    return NotificationKey(f"evt-{uuid.uuid4().hex[:8]}", address(), "referrer.pending")


def _claim(store: NotificationStore, key: NotificationKey) -> Any:
    return store.claim(key, locale="en", message_id=key.message_id("shop.example"),
                       program_id="prg-test", category="rewards")


def _statements(kind: str) -> tuple[float, float]:
    """(statements, emails) the lanes' histogram has seen for ``kind``."""
    labels = {"statement": kind}
    count = REGISTRY.get_sample_value("notifier_lane_emails_per_statement_count", labels)
    total = REGISTRY.get_sample_value("notifier_lane_emails_per_statement_sum", labels)
    return count or 0.0, total or 0.0


async def _locked_elsewhere(pool: Any, key: NotificationKey) -> bool:
    async with pool.acquire() as conn:
        free = await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))",
                                   LOCK_CLASS, key.notification_id)
        if free:
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))",
                               LOCK_CLASS, key.notification_id)
        return not free


async def test_emails_claimed_together_share_statements_and_each_is_sent_once(notifier_db):
    store = NotificationStore(notifier_db)
    keys = [_key() for _ in range(40)]
    claims_before, outcomes_before = _statements("claim"), _statements("outcome")

    async def deliver(key: NotificationKey) -> State:
        async with _claim(store, key) as claim:
            assert (claim.notification.state, claim.notification.attempts) == (State.QUEUED, 1)
            await asyncio.sleep(0)  # the others ask meanwhile
            return (await store.mark_sent(claim.notification.id)).state

    assert await asyncio.gather(*map(deliver, keys)) == [State.SENT] * 40
    claims, claimed = (a - b for a, b in zip(_statements("claim"), claims_before, strict=True))
    outcomes, settled = (a - b for a, b in
                         zip(_statements("outcome"), outcomes_before, strict=True))
    assert (claimed, settled) == (40, 40)
    assert claims < 40 and outcomes < 40  # at least one statement carried several emails
    async with notifier_db.acquire() as conn:
        rows = await conn.fetch("SELECT state, attempts, sent_at FROM notifications"
                                " WHERE id = ANY($1::text[])", [k.notification_id for k in keys])
    assert sorted((r["state"], r["attempts"]) for r in rows) == [("sent", 1)] * 40
    assert all(r["sent_at"] is not None for r in rows)
    for key in keys[:3]:  # and no lock is left behind
        assert not await _locked_elsewhere(notifier_db, key)


async def test_an_email_asked_for_twice_at_once_goes_out_once(notifier_db):
    store = NotificationStore(notifier_db)
    key = _key()
    sent: list[int] = []

    async def deliver(n: int) -> None:
        async with _claim(store, key) as claim:
            if claim.notification.state is State.QUEUED:
                sent.append(n)
                await asyncio.sleep(0.05)
                await store.mark_sent(claim.notification.id)

    await asyncio.gather(*(deliver(n) for n in range(5)))
    assert len(sent) == 1


async def test_a_claim_whose_caller_went_away_is_released(notifier_db):
    store = NotificationStore(notifier_db)
    key = _key()

    async def claim_and_hold() -> None:
        async with _claim(store, key):
            await asyncio.Event().wait()

    first = asyncio.create_task(claim_and_hold())
    await asyncio.sleep(0)  # asked: the claim is on its way to the database
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    # another worker (another store, its own sessions) gets the lock without waiting
    async with asyncio.timeout(5), _claim(NotificationStore(notifier_db), key) as claim:
        assert claim.notification.state is State.QUEUED


async def test_outcomes_are_written_after_the_lane_lost_its_session(notifier_db):
    store = NotificationStore(notifier_db)
    keys = [_key() for _ in range(3)]
    async with _claim(store, keys[0]) as a, _claim(store, keys[1]) as b:
        assert await _locked_elsewhere(notifier_db, keys[0])
        async with notifier_db.acquire() as conn:  # the lane's backend dies
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l"
                " WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.granted"
                "   AND l.objid = ((hashtext($2)::bigint + 4294967296) % 4294967296)::oid",
                LOCK_CLASS, keys[0].notification_id)
        assert killed == 1
        # its statement fails with the connection; the lane starts over on another one
        for attempt in range(3):
            try:
                sent = await store.mark_sent(a.notification.id)
                break
            except Exception:
                if attempt == 2:
                    raise
        assert sent.state is State.SENT
        assert not await _locked_elsewhere(notifier_db, keys[1])  # gone with the session
        assert (await store.mark_sent(b.notification.id)).state is State.SENT
    async with asyncio.timeout(5), _claim(store, keys[2]) as c:  # and the lane works on
        assert (c.notification.state, c.notification.attempts) == (State.QUEUED, 1)
        assert (await store.mark_sent(c.notification.id)).state is State.SENT
