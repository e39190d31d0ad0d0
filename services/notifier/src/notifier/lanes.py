"""Claims of new emails and outcomes of claimed ones, gathered into one statement each.

With one claim and one outcome statement per email, most of the notifier's PostgreSQL time
went into the statements themselves (a round trip, a function call, a commit that waits for
its WAL to be flushed) rather than into the rows. A :class:`ClaimLane` is one connection whose
session holds the advisory locks of the emails it claimed. Whatever is asked of it while a
statement runs waits for the next one: the claims that came in together go in one
``claim_new_notifications`` call, the outcomes in one ``UPDATE`` that also releases their
locks. Under no load a statement carries one email; the more emails are in flight, the more
each statement carries (docs/performance.md, "the notifier's statements").

Only new emails are claimed here. An email whose row exists already (a redelivered event, a
second worker during a rebalance) is left to :meth:`NotificationStore.claim`, which claims
it alone on its own connection and waits for its lock: a lane never waits for a lock, so
one busy email cannot hold up the others.

The lane keeps its connection while any email it claimed is unsettled and gives it back to
the pool only when it holds no lock: advisory locks are re-entrant within a session, so a
session holding one must never serve another claim of the same email. If the connection
breaks, the locks go with its session (as with any claim); the outcomes of those emails are
still written, by the next connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from prometheus_client import Histogram

log = structlog.get_logger(__name__)
EMAILS_PER_STATEMENT = Histogram(
    "notifier_lane_emails_per_statement", "Emails carried by one claim or outcome statement",
    ["statement"], buckets=(1, 2, 4, 8, 16, 32, 64))

_CLAIM_NEW = ("SELECT notification, unsubscribed FROM claim_new_notifications("
              "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
              " $7::text[], $8::text[], $9)")
# The outcome of each email (ids, states, errors), written as the row's final state: the one
# definition of what "sent", "failed" and "suppressed" write, for a lane and a lone claim.
OUTCOMES = (
    "UPDATE notifications n SET state = u.state,"
    " sent_at = CASE WHEN u.state = 'sent' THEN now() ELSE n.sent_at END,"
    " last_error = CASE WHEN u.state = 'sent' THEN NULL"
    "                   WHEN u.state = 'failed' THEN u.error ELSE n.last_error END"
    " FROM unnest($1::text[], $2::text[], $3::text[]) AS u (id, state, error)"
    " WHERE n.id = u.id RETURNING n.*")
# ... and each one's lock released in the same statement (notifications.py says why releasing
# before the commit is safe); $4 is the lock class.
SETTLE = (f"WITH settled AS ({OUTCOMES}) SELECT settled.*,"  # noqa: S608 - our own constants
          " pg_advisory_unlock($4, hashtext(settled.id)) AS unlocked FROM settled")
_UNLOCK = "SELECT pg_advisory_unlock($2, hashtext(id)) FROM unnest($1::text[]) AS id"


@dataclass(frozen=True, slots=True)
class NewEmail:
    """What :func:`claim_new_notifications` needs to insert one notification row."""

    id: str
    source_event_id: str
    recipient: str
    template: str
    locale: str
    message_id: str
    program_id: str
    category: str


@dataclass(slots=True)
class _Ask:
    subject: Any  # NewEmail | (id, state, error) | id
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class ClaimLane:
    """One session's claims and outcomes, each kind batched per statement."""

    def __init__(self, pool: asyncpg.Pool, lock_class: int) -> None:
        self._pool, self._lock_class = pool, lock_class
        # what waits for the next statement of each kind, in the order they run
        self._queues: dict[str, list[_Ask]] = {"claim": [], "settle": [], "release": []}
        self._held: set[str] = set()  # ids whose lock this lane's session holds
        self._conn: Any = None  # a pool connection while needed
        self._drainer: asyncio.Task[None] | None = None

    @property
    def load(self) -> int:
        """Emails claimed here and not settled, plus requests waiting: for picking a lane."""
        return len(self._held) + len(self._queues["claim"]) + len(self._queues["settle"])

    async def claim(self, email: NewEmail) -> Any:
        """The new row (as ``claim_new_notifications`` returns it), locked by this lane's
        session; None if the row existed or its lock was taken: claim it alone then."""
        return await self._ask("claim", email)

    async def settle(self, notification_id: str, state: str, error: str | None) -> Any:
        """Write the outcome of an email claimed here and release its lock; the row, or
        None if there is no such row."""
        return await self._ask("settle", (notification_id, state, error))

    async def release(self, notification_id: str) -> None:
        """Release the lock of an email claimed here, its row left as it is."""
        await self._ask("release", notification_id)

    def _ask(self, kind: str, subject: Any) -> asyncio.Future[Any]:
        ask = _Ask(subject)
        self._queues[kind].append(ask)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="notifier-claim-lane")
        # A caller cancelled while its request runs does not stop the request: it is done
        # all the same, and a claim nobody waits for any more is released (_claim_all).
        return ask.future

    def _waiting(self) -> bool:
        return any(self._queues.values())

    async def _drain(self) -> None:
        while self._waiting():
            await self._drain_once()
            if self._conn is not None and not self._held and not self._waiting():
                conn, self._conn = self._conn, None
                await self._pool.release(conn)  # asks made meanwhile: the loop goes on

    async def _drain_once(self) -> None:
        """One statement for each kind of ask waiting: claims, outcomes, releases."""
        statements = {"claim": self._claim_all, "settle": self._settle_all,
                      "release": self._release_all}
        for kind, statement in statements.items():
            asks, self._queues[kind] = self._queues[kind], []
            if not asks:
                continue
            if self._conn is None:
                try:
                    self._conn = await self._pool.acquire()
                except Exception as exc:  # pool closed, database away: these are told
                    for ask in asks:
                        _fail(ask, exc)
                    continue
            await self._run(asks, statement)

    async def _run(self, asks: list[_Ask], statement: Any) -> None:
        try:
            await statement(asks)
        except Exception as exc:
            for ask in asks:
                _fail(ask, exc)
            if not isinstance(exc, asyncpg.PostgresError) or isinstance(
                    exc, asyncpg.PostgresConnectionError):
                self._lose_session(exc)
        except BaseException as exc:  # cancelled: nobody may keep waiting for these
            for ask in asks:
                _fail(ask, asyncio.CancelledError())
            self._lose_session(exc)
            raise

    async def _claim_all(self, asks: list[_Ask]) -> None:
        emails: list[NewEmail] = [ask.subject for ask in asks]
        rows = await self._conn.fetch(
            _CLAIM_NEW, [e.id for e in emails], [e.source_event_id for e in emails],
            [e.recipient for e in emails], [e.template for e in emails],
            [e.locale for e in emails], [e.message_id for e in emails],
            [e.program_id for e in emails], [e.category for e in emails], self._lock_class)
        EMAILS_PER_STATEMENT.labels("claim").observe(len(asks))
        claimed = {row["notification"]["id"]: row for row in rows}
        for ask in asks:
            # The same email asked twice in one statement: the first ask has it, the other
            # claims it alone (and waits for the first one's outcome).
            row = claimed.pop(ask.subject.id, None)
            if row is not None:
                self._held.add(ask.subject.id)
            if not ask.future.done():
                ask.future.set_result(row)
            elif row is not None:  # its caller is gone: nobody will settle it
                self._queues["release"].append(_Ask(ask.subject.id))

    async def _settle_all(self, asks: list[_Ask]) -> None:
        ids, states, errors = zip(*(ask.subject for ask in asks), strict=True)
        rows = await self._conn.fetch(SETTLE, list(ids), list(states), list(errors),
                                      self._lock_class)
        EMAILS_PER_STATEMENT.labels("outcome").observe(len(asks))
        settled = {row["id"]: row for row in rows}
        for ask in asks:
            self._held.discard(ask.subject[0])
            if not ask.future.done():
                ask.future.set_result(settled.get(ask.subject[0]))

    async def _release_all(self, asks: list[_Ask]) -> None:
        await self._conn.execute(_UNLOCK, [ask.subject for ask in asks], self._lock_class)
        for ask in asks:
            self._held.discard(ask.subject)
            if not ask.future.done():
                ask.future.set_result(None)

    def _lose_session(self, error: BaseException) -> None:
        """Drop the connection: its session's locks go with it. The emails claimed on it are
        settled all the same, on the next connection (their unlock then finds nothing)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        log.warning("claim lane lost its database session", error=repr(error),
                    unsettled=len(self._held))
        self._held.clear()
        conn.terminate()  # which also hands its place in the pool back


def _fail(ask: _Ask, error: BaseException) -> None:
    if not ask.future.done():
        if isinstance(error, asyncio.CancelledError):
            ask.future.cancel()
        else:
            ask.future.set_exception(error)
