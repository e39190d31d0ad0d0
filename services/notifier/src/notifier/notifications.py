"""The ``notifications`` table: one row per email the notifier owes, and its delivery state.

A row is keyed by (source event id, recipient, template); its id and its Message-ID are
derived from that key, so every replay of the same event lands on the same row and any copy
of the email that does go out twice carries the same Message-ID.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg
from referral_events import derived_id

from .lanes import OUTCOMES, SETTLE, ClaimLane, NewEmail

# First half of the two-key advisory lock, so our locks never meet another component's.
LOCK_CLASS = 0x4E4F54  # "NOT"
_ERROR_MAX = 1000


class State(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"  # the recipient unsubscribed from this category: never sent


@dataclass(frozen=True)
class NotificationKey:
    """What makes an email unique: the event that caused it, who gets it, which text."""

    source_event_id: str
    recipient: str
    template: str

    def __post_init__(self) -> None:
        # Mailbox domains are case-insensitive and nobody relies on case in the local part.
        object.__setattr__(self, "recipient", self.recipient.strip().lower())

    @property
    def notification_id(self) -> str:
        return derived_id("notification", self.source_event_id, self.recipient, self.template)

    def message_id(self, domain: str) -> str:
        """The RFC 5322 Message-ID every copy of this email carries."""
        return f"<{self.notification_id}@{domain}>"


@dataclass(frozen=True)
class Notification:
    id: str
    source_event_id: str
    recipient: str
    template: str
    locale: str
    state: State
    attempts: int
    message_id: str
    last_error: str | None
    sent_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Notification:
        return cls(id=row["id"], source_event_id=row["source_event_id"],
                   recipient=row["recipient"], template=row["template"], locale=row["locale"],
                   state=State(row["state"]), attempts=row["attempts"],
                   message_id=row["message_id"], last_error=row["last_error"],
                   sent_at=row["sent_at"])


@dataclass(frozen=True)
class Claim:
    """A notification taken on (:meth:`NotificationStore.claim`)."""

    notification: Notification
    unsubscribed: bool  # the recipient asked for no more emails of this kind


class NotificationStore:
    """Notification rows in PostgreSQL (schema ``notifier`` on the pool's search path)."""

    def __init__(self, pool: asyncpg.Pool, *, lanes: int = 1) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._pool = pool
        self._lanes = [ClaimLane(pool, LOCK_CLASS) for _ in range(lanes)]
        # notification id → the connection, or the lane, whose session holds its lock
        self._holding: dict[str, asyncpg.Connection | ClaimLane] = {}

    @asynccontextmanager
    async def claim(self, key: NotificationKey, *, locale: str, message_id: str,
                    program_id: str, category: str) -> AsyncIterator[Claim]:
        """Record the email as owed (if new), hold its lock for the block, and yield its
        state, in one statement (migrations 0003 and 0004).

        When the row is still queued and the recipient has not unsubscribed from
        ``category`` of ``program_id``, the attempt about to be made is already counted.
        Two workers handed the same event (e.g. during a rebalance) queue behind each other;
        the second then sees the first one's outcome instead of sending again. The lock is a
        session advisory lock, so a worker that dies releases it with its connection. A row
        settled before (sent, failed, suppressed) comes back unlocked: nothing to guard.

        A new email (the usual case) is claimed on a :class:`~notifier.lanes.ClaimLane`,
        in one ``claim_new_notifications`` call with the others asked for meanwhile; one
        whose row exists already is claimed alone (``claim_notification``), on a connection
        of its own.
        """
        lane = min(self._lanes, key=lambda candidate: candidate.load)
        row = await lane.claim(NewEmail(key.notification_id, key.source_event_id,
                                        key.recipient, key.template, locale, message_id,
                                        program_id, category))
        if row is None:
            async with self._claim_alone(key, locale=locale, message_id=message_id,
                                         program_id=program_id, category=category) as claim:
                yield claim
            return
        self._holding[key.notification_id] = lane
        try:
            yield Claim(Notification.from_row(row["notification"]), row["unsubscribed"])
        finally:
            if self._holding.get(key.notification_id) is lane:  # no outcome released it
                del self._holding[key.notification_id]
                await lane.release(key.notification_id)  # done even if we are cancelled

    @asynccontextmanager
    async def _claim_alone(self, key: NotificationKey, *, locale: str, message_id: str,
                           program_id: str, category: str) -> AsyncIterator[Claim]:
        """:meth:`claim` on a connection of its own, waiting for the lock if need be."""
        async with self._pool.acquire() as conn:
            claimed = False
            try:
                row = await conn.fetchrow(
                    "SELECT notification, unsubscribed, locked FROM claim_notification("
                    "$1, $2, $3, $4, $5, $6, $7, $8, $9)", key.notification_id,
                    key.source_event_id, key.recipient, key.template, locale, message_id,
                    program_id, category, LOCK_CLASS)
                claimed = True
                assert row is not None  # a function call returns its one row
                if row["locked"]:
                    # The row's updates inside the block use this connection too: a delivery
                    # holds one connection at a time, so no number of concurrent ones can
                    # drain the pool.
                    self._holding[key.notification_id] = conn
                yield Claim(Notification.from_row(row["notification"]), row["unsubscribed"])
            finally:
                # Held unless an outcome's write released it (_settle) or it was settled.
                # (Compared with our connection: the entry of a concurrent claim of the same
                # email in this process is never ours to drop.)
                held = self._holding.get(key.notification_id) is conn
                if held:
                    del self._holding[key.notification_id]
                if not claimed:
                    # The claim failed or was cancelled: its session may hold the lock all
                    # the same. The session's end releases it (the pool does not reset
                    # sessions: see keep_session).
                    conn.terminate()
                elif held:
                    try:
                        await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))",
                                           LOCK_CLASS, key.notification_id)
                    except BaseException as exc:
                        conn.terminate()  # the same: the lock goes with the session
                        if not isinstance(exc, Exception):
                            raise

    async def attempt_started(self, notification_id: str) -> Notification:
        """Count one hand-over to SMTP (so a resend after a crash is visible in the row)."""
        return await self._update(
            "UPDATE notifications SET attempts = attempts + 1, last_attempt_at = now()"
            " WHERE id = $1 RETURNING *", notification_id)

    async def attempt_failed(self, notification_id: str, error: str) -> Notification:
        return await self._update(
            "UPDATE notifications SET last_error = $2 WHERE id = $1 RETURNING *",
            notification_id, error[:_ERROR_MAX])

    # The outcomes: written with the lock released in the same statement (see claim()).
    async def mark_sent(self, notification_id: str) -> Notification:
        return await self._settle(notification_id, State.SENT, None)

    async def mark_failed(self, notification_id: str, error: str) -> Notification:
        return await self._settle(notification_id, State.FAILED, error[:_ERROR_MAX])

    async def mark_suppressed(self, notification_id: str) -> Notification:
        return await self._settle(notification_id, State.SUPPRESSED, None)

    async def _settle(self, notification_id: str, state: State,
                      error: str | None) -> Notification:
        """Write the outcome (:data:`~notifier.lanes.OUTCOMES`) and release the row's lock in
        the same statement, on the session holding it: the row lock the update takes keeps
        the next holder waiting until it commits. On a lane, the outcome goes with the others
        of its statement."""
        held = self._holding.get(notification_id)
        if isinstance(held, ClaimLane):
            row = await held.settle(notification_id, state.value, error)
        elif held is not None:
            row = await held.fetchrow(SETTLE, [notification_id], [state.value], [error],
                                      LOCK_CLASS)
        else:
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(OUTCOMES, [notification_id], [state.value], [error])
        if row is not None and held is not None and self._holding.get(notification_id) is held:
            del self._holding[notification_id]  # released: claim() has nothing to do
        if row is None:
            raise LookupError(f"notification {notification_id} was never queued")
        return Notification.from_row(row)

    async def _update(self, sql: str, notification_id: str, *args: object) -> Notification:
        """Run ``sql`` (an UPDATE … RETURNING * of the row ``$1``) on the connection holding
        the row's lock, if it is one of its own, else on any: an update that releases
        nothing needs no particular session."""
        held = self._holding.get(notification_id)
        if held is not None and not isinstance(held, ClaimLane):
            row = await held.fetchrow(sql, notification_id, *args)
        else:
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(sql, notification_id, *args)
        if row is None:
            raise LookupError(f"notification {notification_id} was never queued")
        return Notification.from_row(row)


async def keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release (asyncpg already rolls back an open transaction): nothing
    more. asyncpg's default resets every session with a query (advisory locks, cursors,
    LISTEN, settings: none of which a notifier session keeps: the one lock is released or its
    session terminated by :meth:`NotificationStore.claim`), a round trip per release."""
