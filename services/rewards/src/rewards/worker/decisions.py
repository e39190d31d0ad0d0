"""Handle attribution decisions a poll at a time: one transaction per batch of events.

The consumer hands over one poll (up to ``REWARDS_DECISION_BATCH_SIZE`` events) and commits
its offsets only after this transaction has committed. Per batch:

1. the programmes are read and the referrers' rows locked in id order (``FOR UPDATE``), then
   the budget rows of the programmes, in id order: workers deciding overlapping referrers or
   programmes wait for each other instead of deadlocking, and each referrer's tiers and caps
   and each programme's budget are decided by one transaction at a time, however many
   workers run. An event naming no such referrer or programme is refused here (poison, to
   the dead-letter topic) before anything is written;
2. the event ids go into processed_events (``ON CONFLICT DO NOTHING``): an event already
   processed, by this or another worker, changes nothing (a replay is a no-op);
3. what the fraud checks and the rules need (velocity, the code's conversion rate, the
   referrers' totals, the budgets' spend, standing milestone bonuses) is read in two queries,
   then the decision rows are written, one per conversion: a second event about a decided
   conversion changes nothing;
4. rules and fraud checks run in memory, referral after referral in partition order, each
   seeing the rewards decided before it (:class:`~.standing.Standings` counts them as the
   triggers will);
5. the rewards, then their events (outbox), are inserted with one statement each (the
   totals and roll-ups follow once per statement, migration 0006), unique keys still making
   a second reward per conversion, side and purpose impossible; reversals
   recorded before their conversion was decided are applied (the batch is cut after such a
   referral, so the next ones see the reversal's effect on the totals).

An event the rules or the database refuse (a programme whose stored rules cannot be applied,
a value the database rejects) rolls the batch back; it is then redone with a SAVEPOINT per
event, so that event alone is rolled back and dead-lettered and the others commit together.
A deadlock or serialisation failure (another process locking in another order) retries the
batch a few times; its effects are keyed by event, conversion and reward, so that is safe.
"""

from __future__ import annotations

import asyncio
import json
import random
from bisect import bisect_right, insort
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import structlog
from prometheus_client import Counter
from referral_events import (
    Envelope,
    ReferralAttributed,
    ReferralRejected,
    TopicRegistry,
    encode,
)
from referral_kit.consuming import PoisonEvent

from ..fraud import FraudSettings, Observation, evaluate
from ..holds import add_duration
from ..identifiers import new_id
from ..lifecycle import creation_event
from ..outbox import enqueue_many
from ..reversals import apply_pending_reversals
from ..rules import ProgramRules, decide_rewards, rules_from_program
from .standing import Probe, Seen, Standings, observe_many

log = structlog.get_logger(__name__)
CONSUMER = "rewards-worker"
BATCHES = Counter("rewards_decision_batches_total",
                  "Decision batches committed: in one go, or event by event with savepoints",
                  ["mode"])
BATCH_RETRIES = Counter("rewards_decision_batch_retries_total",
                        "Decision batches retried after a deadlock or serialisation failure")
DECIDED = Counter("rewards_referrals_decided_total", "Attribution events taking effect",
                  ["outcome"])

# Another transaction took locks in another order: the whole batch is retried.
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# The database refused a value: the event at fault is poison. Unique and foreign-key
# violations can come from races, so those stay transient (retried).
_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
_RACES = (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError)
HOUR = timedelta(hours=1)
T = TypeVar("T")
R = TypeVar("R")


class _Refused(Exception):
    """The rules could not be applied to one event (found while deciding in memory)."""

    def __init__(self, event_id: str, cause: Exception) -> None:
        super().__init__(f"event {event_id}: {cause!r}")
        self.cause = cause


class _Inexact(Exception):
    """Fewer rewards were inserted than decided (a writer outside the referrer locks): the
    totals counted in memory are off, so the batch is redone event by event."""


def _refusal(exc: BaseException) -> bool:
    return isinstance(exc, _Refused) or (isinstance(exc, _REFUSED)
                                         and not isinstance(exc, _RACES))


@dataclass
class _Batch:
    envelopes: list[Envelope[Any]]
    outcomes: list[BaseException | None]
    programs: dict[str, Any] = field(default_factory=dict)
    referrers: dict[str, Any] = field(default_factory=dict)
    live: list[int] = field(default_factory=list)  # first occurrences, not refused up front
    hold_ends: list[datetime] = field(default_factory=list)  # of the pending rewards inserted


# The parameters of _INSERT_REWARDS, in order: keys of the reward dicts _decide_one makes.
_REWARD_COLUMNS = (
    "id", "program_id", "referrer_id", "beneficiary", "conversion_id", "kind", "amount",
    "currency", "status", "available_at", "expires_after", "recipient_id", "recipient_email",
    "recipient_name", "recipient_locale", "order_amount", "channel", "reason",
    "source_event_id", "created_at", "purpose", "milestone", "fraud_json", "reward_basis")
_INSERT_REWARDS = (
    "INSERT INTO rewards (id, program_id, referrer_id, beneficiary, conversion_id, kind, amount,"
    " currency, status, available_at, expires_after, recipient_id, recipient_email,"
    " recipient_name, recipient_locale, order_amount, channel, reason, source_event_id,"
    " created_at, updated_at, purpose, milestone, fraud_signals, original_amount, reward_basis)"
    " SELECT id, program_id, referrer_id, beneficiary, conversion_id, kind, amount, currency,"
    " status, available_at, expires_after, recipient_id, recipient_email, recipient_name,"
    " recipient_locale, order_amount, channel, reason, source_event_id, created_at, created_at,"
    " purpose, milestone, fraud_json::jsonb, amount, reward_basis"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    "             $7::bigint[], $8::text[], $9::text[], $10::timestamptz[], $11::text[],"
    "             $12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[],"
    "             $17::text[], $18::text[], $19::text[], $20::timestamptz[], $21::text[],"
    "             $22::int[], $23::text[], $24::text[])"
    " AS u (id, program_id, referrer_id, beneficiary, conversion_id, kind, amount, currency,"
    "       status, available_at, expires_after, recipient_id, recipient_email, recipient_name,"
    "       recipient_locale, order_amount, channel, reason, source_event_id, created_at,"
    "       purpose, milestone, fraud_json, reward_basis)"
    " ON CONFLICT DO NOTHING")
_INSERT_DECISIONS = (
    "INSERT INTO referral_decisions (program_id, conversion_id, outcome, reason, referrer_id,"
    " code, channel, order_amount, currency, converted_at, decided_at, event_id)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
    "                      $6::text[], $7::text[], $8::bigint[], $9::text[],"
    "                      $10::timestamptz[], $11::timestamptz[], $12::text[])"
    " ON CONFLICT DO NOTHING")


class DecisionHandler:
    """``handle_batch`` is the consumer's batch handler; calling the handler with one event
    decides a batch of one (as tests and single-event callers do)."""

    def __init__(self, pool: asyncpg.Pool, topics: TopicRegistry, *, attempts: int = 5,
                 on_pending: Callable[[list[datetime]], object] | None = None) -> None:
        """``on_pending`` is told the hold ends of the pending rewards of each committed
        batch (the hold scheduler's :meth:`~rewards.worker.holds.HoldScheduler.due`)."""
        self._pool, self._topics = pool, topics
        self._attempts = attempts
        self._on_pending = on_pending
        # Parsed rules per (programme, version): a changed programme has a new version.
        self._policies: OrderedDict[tuple[str, int], tuple[ProgramRules, FraudSettings]] = (
            OrderedDict())

    async def __call__(self, envelope: Envelope[Any], record: Any = None) -> None:
        [outcome] = await self.handle_batch([(envelope, record)])
        if outcome is not None:
            raise outcome

    async def handle_batch(self, items: Sequence[tuple[Envelope[Any], Any]]
                           ) -> list[BaseException | None]:
        """Decide the events of one poll in one transaction; one outcome per event: None
        (done, or already done before) or the PoisonEvent to dead-letter it with."""
        envelopes = [envelope for envelope, _ in items]
        attempt = 1
        while True:
            try:
                return await self._decide_batch(envelopes)
            except RETRYABLE as exc:
                if attempt >= self._attempts:
                    raise
                BATCH_RETRIES.inc()
                log.warning("decision batch hit a lock conflict; retrying it", error=repr(exc),
                            attempt=attempt, events=len(envelopes))
                await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311
                attempt += 1

    async def _decide_batch(self, envelopes: list[Envelope[Any]]) -> list[BaseException | None]:
        batch = await self._commit_batch(envelopes)
        if batch.hold_ends and self._on_pending is not None:
            self._on_pending(batch.hold_ends)
        return batch.outcomes

    async def _commit_batch(self, envelopes: list[Envelope[Any]]) -> _Batch:
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    batch = await self._prepare(conn, envelopes)
                    await self._decide(conn, batch, batch.live, exact=True)
                BATCHES.labels("batch").inc()
                return batch
            except (_Refused, _Inexact, *_REFUSED) as exc:
                if not (_refusal(exc) or isinstance(exc, _Inexact)):
                    raise
                log.warning("decision batch rolled back; deciding its events one by one",
                            error=repr(exc), events=len(envelopes))
            async with conn.transaction():
                batch = await self._prepare(conn, envelopes)
                for i in batch.live:
                    try:
                        async with conn.transaction():  # a savepoint per event
                            await self._decide(conn, batch, [i], exact=False)
                    except (_Refused, *_REFUSED) as exc:
                        if not _refusal(exc):
                            raise
                        cause = exc.cause if isinstance(exc, _Refused) else exc
                        batch.outcomes[i] = PoisonEvent(f"the event cannot be decided: {cause}")
            BATCHES.labels("savepoints").inc()
            return batch

    # -- step 1: read programmes, lock referrers and budgets ---------------------------------

    async def _prepare(self, conn: asyncpg.Connection, envelopes: list[Envelope[Any]]) -> _Batch:
        batch = _Batch(envelopes, [None] * len(envelopes))
        seen: set[str] = set()
        candidates: list[int] = []
        for i, envelope in enumerate(envelopes):
            if envelope.id not in seen:  # the same event twice in a poll: once is enough
                seen.add(envelope.id)
                candidates.append(i)
        attributed = [envelopes[i].data for i in candidates
                      if isinstance(envelopes[i].data, ReferralAttributed)]
        if attributed:
            batch.programs = {r["id"]: r for r in await conn.fetch(
                "SELECT * FROM programs WHERE id = ANY($1::text[])",
                sorted({d.program_id for d in attributed}))}
            batch.referrers = {r["id"]: r for r in await conn.fetch(
                "SELECT * FROM referrers WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                sorted({d.referrer_id for d in attributed}))}
        budgets: set[str] = set()
        for i in candidates:
            data = envelopes[i].data
            if isinstance(data, ReferralAttributed):
                referrer = batch.referrers.get(data.referrer_id)
                if (data.program_id not in batch.programs or referrer is None
                        or referrer["program_id"] != data.program_id):
                    batch.outcomes[i] = PoisonEvent(
                        f"no referrer {data.referrer_id} in programme {data.program_id}",
                        field="data.referrer_id")
                    continue
                budgets.add(data.program_id)
            batch.live.append(i)
        if budgets:
            # Every reward changes its programme's spend (the totals trigger, 0003/0006), so
            # the budget rows are locked up front, in one order, for the whole batch.
            await conn.execute(
                "INSERT INTO program_budgets AS b (program_id) SELECT unnest($1::text[])"
                " ON CONFLICT (program_id) DO UPDATE SET spent = b.spent", sorted(budgets))
        return batch

    # -- steps 2 to 5 -------------------------------------------------------------------------

    async def _decide(self, conn: asyncpg.Connection, batch: _Batch, indices: list[int], *,
                      exact: bool) -> None:
        envelopes = batch.envelopes
        fresh = {r["event_id"] for r in await conn.fetch(
            "INSERT INTO processed_events (event_id, consumer) SELECT unnest($1::text[]), $2"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            sorted(envelopes[i].id for i in indices), CONSUMER)}
        todo = [i for i in indices if envelopes[i].id in fresh]
        rejected = [i for i in todo if isinstance(envelopes[i].data, ReferralRejected)]
        if rejected:
            await self._record_rejections(conn, batch, rejected)
        attributed = [i for i in todo if isinstance(envelopes[i].data, ReferralAttributed)]
        if not attributed:
            return
        reversed_first = {(r["program_id"], r["conversion_id"]) for r in await conn.fetch(
            "SELECT DISTINCT r.program_id, r.conversion_id FROM conversion_reversals r"
            " JOIN unnest($1::text[], $2::text[]) AS u (program_id, conversion_id)"
            "   USING (program_id, conversion_id)",
            [envelopes[i].data.program_id for i in attributed],
            [envelopes[i].data.conversion_id for i in attributed])}
        for chunk in _cut_after(attributed, lambda i: (envelopes[i].data.program_id,
                                                       envelopes[i].data.conversion_id)
                                in reversed_first):
            await self._reward(conn, batch, chunk, reversed_first, exact=exact)

    async def _record_rejections(self, conn: asyncpg.Connection, batch: _Batch,
                                 indices: list[int]) -> None:
        rows = [batch.envelopes[i].data for i in indices]
        await conn.execute(
            _INSERT_DECISIONS,
            [d.program_id for d in rows], [d.conversion_id for d in rows],
            ["rejected"] * len(rows), [d.reason.value for d in rows],
            [d.referrer_id for d in rows], [d.code for d in rows], [d.channel for d in rows],
            [d.amount for d in rows], [d.currency for d in rows],
            [d.converted_at for d in rows], [d.decided_at for d in rows],
            [batch.envelopes[i].id for i in indices])
        DECIDED.labels("rejected").inc(len(rows))

    def _policy(self, program: Any) -> tuple[ProgramRules, FraudSettings]:
        key = (program["id"], program["version"])
        if (policy := self._policies.get(key)) is None:
            policy = (rules_from_program(program),
                      FraudSettings.model_validate(program["fraud"] or {}))
            self._policies[key] = policy
            if len(self._policies) > 1000:
                self._policies.popitem(last=False)
        return policy

    async def _reward(self, conn: asyncpg.Connection, batch: _Batch, chunk: list[int],
                      reversed_first: set[tuple[str, str]], *, exact: bool) -> None:
        events: list[tuple[str, ReferralAttributed]] = [
            (batch.envelopes[i].id, batch.envelopes[i].data) for i in chunk]
        policies: dict[str, tuple[ProgramRules, FraudSettings]] = {}
        for event_id, data in events:
            if data.program_id not in policies:
                try:
                    policies[data.program_id] = self._policy(batch.programs[data.program_id])
                except Exception as exc:  # stored rules that cannot be parsed: deterministic
                    raise _Refused(event_id, exc) from exc
        # Reads first: velocity counts the referrals decided before this chunk's.
        seen = await observe_many(conn, [
            Probe(velocity=fraud.velocity_per_hour.enabled, referrer_id=data.referrer_id,
                  converted_at=data.converted_at, rate=fraud.conversion_rate.enabled,
                  program_id=data.program_id, code=data.code,
                  window_hours=fraud.conversion_rate.window_hours)
            for _, data in events for fraud in (policies[data.program_id][1],)])
        standing_of = [(data.program_id, data.referrer_id) for _, data in events
                       if policies[data.program_id][0].needs_standing]
        standings = Standings()
        if standing_of:
            standings = await Standings.load(
                conn, program_ids=[p for p, _ in standing_of],
                referrer_ids=[r for _, r in standing_of],
                at=[data.decided_at for _, data in events],
                milestone_referrers=[data.referrer_id for _, data in events
                                     if policies[data.program_id][0].has_milestones])
        # The rules run while the database writes the decision rows, on the likely guess
        # that every conversion is new; one decided before is left out and the rest redone.
        before = standings.copy()
        status, rewards = await _meanwhile(conn.execute(
            _INSERT_DECISIONS,
            [d.program_id for _, d in events], [d.conversion_id for _, d in events],
            ["attributed"] * len(events), [None] * len(events),
            [d.referrer_id for _, d in events], [d.code for _, d in events],
            [d.channel for _, d in events], [d.amount for _, d in events],
            [d.currency for _, d in events], [d.converted_at for _, d in events],
            [d.decided_at for _, d in events], [event_id for event_id, _ in events]),
            lambda: self._guess(batch, events, seen, policies, standings))
        decided = {event_id for event_id, _ in events}
        if _rows(status) < len(events):  # which conversions were decided before?
            decided &= {r["event_id"] for r in await conn.fetch(
                "SELECT d.event_id FROM referral_decisions d"
                " JOIN unnest($1::text[], $2::text[]) AS u (program_id, conversion_id)"
                "   USING (program_id, conversion_id)",
                [d.program_id for _, d in events], [d.conversion_id for _, d in events])}
        if rewards is None or len(decided) < len(events):
            for event_id, data in events:
                if event_id not in decided:
                    log.info("conversion already decided; no second reward",
                             program_id=data.program_id, conversion_id=data.conversion_id)
            rewards = self._apply_rules(batch, events, seen, policies, before, decided)
        DECIDED.labels("attributed").inc(len(decided))
        if rewards:
            await self._insert(conn, batch, rewards, reversed_first, exact=exact)

    def _guess(self, batch: _Batch, events: list[tuple[str, ReferralAttributed]],
               seen: list[Seen], policies: dict[str, tuple[ProgramRules, FraudSettings]],
               standings: Standings) -> list[dict[str, Any]] | None:
        """The rewards if every conversion is new; None if the rules refused one (which
        may have been decided before, and then is no error)."""
        try:
            return self._apply_rules(batch, events, seen, policies, standings, None)
        except _Refused:
            return None

    def _apply_rules(self, batch: _Batch, events: list[tuple[str, ReferralAttributed]],
                     seen: list[Seen], policies: dict[str, tuple[ProgramRules, FraudSettings]],
                     standings: Standings, decided: set[str] | None) -> list[dict[str, Any]]:
        """The rewards of the chunk's referrals (those ``decided``; None: all), in order."""
        rewards: list[dict[str, Any]] = []
        # This chunk's referrals per referrer, by conversion time (for the velocity).
        recent: defaultdict[str, list[datetime]] = defaultdict(list)
        known: dict[str, tuple[frozenset[str], frozenset[str]]] = {}  # referrer's IPs, devices
        for (event_id, data), observed in zip(events, seen, strict=True):
            if decided is not None and event_id not in decided:
                continue
            mine = recent[data.referrer_id]
            insort(mine, data.converted_at)
            at = data.converted_at
            referrer = batch.referrers[data.referrer_id]
            if (seen_on := known.get(referrer["id"])) is None:
                seen_on = known[referrer["id"]] = (frozenset(referrer["ip_hashes"] or ()),
                                                   frozenset(referrer["device_ids"] or ()))
            try:
                rewards.extend(self._decide_one(
                    event_id, data, batch.programs[data.program_id], referrer, seen_on,
                    policies[data.program_id], observed,
                    bisect_right(mine, at) - bisect_right(mine, at - HOUR), standings))
            except Exception as exc:  # pure code: the same input fails the same way again
                raise _Refused(event_id, exc) from exc
        return rewards

    async def _insert(self, conn: asyncpg.Connection, batch: _Batch,
                      rewards: list[dict[str, Any]], reversed_first: set[tuple[str, str]], *,
                      exact: bool) -> None:
        """Insert the rewards and enqueue their events. The events are built while the
        database inserts the rows (and runs their triggers): both take a while."""
        columns = [[reward[c] for reward in rewards] for c in _REWARD_COLUMNS]
        # All or nothing in a batch (counted); event by event, the ones inserted (returned).
        query = (conn.execute(_INSERT_REWARDS, *columns) if exact
                 else conn.fetch(_INSERT_REWARDS + " RETURNING id", *columns))
        result, events = await _meanwhile(
            query, lambda: [(reward["referrer_id"],
                             encode(creation_event(reward, batch.programs[reward["program_id"]])))
                            for reward in rewards])
        if exact:
            if _rows(result) != len(rewards):
                raise _Inexact(f"{len(rewards) - _rows(result)} of {len(rewards)} rewards "
                               "not inserted")
            inserted = {reward["id"] for reward in rewards}
        else:
            inserted = {row["id"] for row in result}
            events = [e for e, r in zip(events, rewards, strict=True) if r["id"] in inserted]
        await enqueue_many(conn, self._topics.rewards, events)
        # (an event's savepoint rolled back after this leaves a hold end told of for nothing:
        # the scheduler then looks once and finds no reward due)
        batch.hold_ends.extend(reward["available_at"] for reward in rewards
                               if reward["status"] == "pending" and reward["id"] in inserted)
        for reward in rewards:
            if reward["id"] in inserted and (
                    (reward["program_id"], reward["conversion_id"]) in reversed_first):
                stored = await conn.fetchrow("SELECT * FROM rewards WHERE id = $1", reward["id"])
                await apply_pending_reversals(conn, self._topics, stored)  # refund came first

    def _decide_one(self, event_id: str, data: ReferralAttributed, program: Any, referrer: Any,
                    seen_on: tuple[frozenset[str], frozenset[str]],
                    policy: tuple[ProgramRules, FraudSettings], observed: Seen,
                    in_chunk: int, standings: Standings) -> list[dict[str, Any]]:
        """The rewards of one referral, as rows (pure; counts them into ``standings``)."""
        rules, fraud = policy
        email = str(data.customer.email) if data.customer.email else None
        verdict = evaluate(fraud, Observation(
            referrer_email=referrer["email"], friend_email=email,
            ip_hash=data.ip_hash, device_id=data.device_id,
            referrer_ip_hashes=seen_on[0], referrer_device_ids=seen_on[1],
            country=data.customer.country,
            # The referrals decided before, plus this chunk's up to this one (itself too).
            referrals_last_hour=(observed.velocity or 0) + in_chunk
            if fraud.velocity_per_hour.enabled else None,
            code_clicks=observed.clicks, code_conversions=observed.conversions))
        standing = (standings.standing(data.program_id, data.referrer_id, data.decided_at)
                    if rules.needs_standing else None)
        available_at = add_duration(data.decided_at, program["hold_period"])
        if verdict.extends_hold:
            available_at = add_duration(available_at, fraud.extend_hold_by)
        signals = [s.model_dump(mode="json") for s in verdict.signals]
        signals_json = json.dumps(signals) if signals else "[]"
        rows = []
        for decision in decide_rewards(rules, order_amount=data.amount, standing=standing,
                                       refused=verdict.reason):
            if decision.beneficiary == "referrer":
                recipient = (referrer["id"], referrer["email"], referrer["name"],
                             referrer["locale"])
            else:
                recipient = (data.customer.id, email, None, None)
            status = verdict.status_of(decision.status)
            rows.append({
                "id": new_id("rwd"), "program_id": data.program_id,
                "referrer_id": data.referrer_id, "beneficiary": decision.beneficiary,
                "conversion_id": data.conversion_id, "kind": decision.kind.value,
                "amount": decision.amount, "currency": program["currency"], "status": status,
                "available_at": available_at, "expires_after": decision.expires_after,
                "recipient_id": recipient[0], "recipient_email": recipient[1],
                "recipient_name": recipient[2], "recipient_locale": recipient[3],
                "order_amount": data.amount, "channel": data.channel,
                "reason": decision.reason, "source_event_id": event_id,
                "created_at": data.decided_at, "purpose": decision.purpose,
                "milestone": decision.milestone, "fraud_signals": signals,
                "fraud_json": signals_json, "reward_basis": decision.basis})
            standings.add(program_id=data.program_id, referrer_id=data.referrer_id,
                          beneficiary=decision.beneficiary, purpose=decision.purpose,
                          status=status, reason=decision.reason, amount=decision.amount,
                          milestone=decision.milestone, created_at=data.decided_at)
        return rows


def _rows(status: str) -> int:
    """Rows an INSERT wrote, from its command status (``INSERT 0 <rows>``)."""
    return int(status.rsplit(" ", 1)[1])


async def _meanwhile(query: Awaitable[T], work: Callable[[], R]) -> tuple[T, R]:
    """Send ``query``, run ``work`` (in-memory) while the database executes it, return both.
    The query's result is awaited even if ``work`` fails, so the connection is free after."""
    task = asyncio.ensure_future(query)
    try:
        await asyncio.sleep(0)  # the statement goes out
        result = work()
    except BaseException:
        await asyncio.gather(task, return_exceptions=True)
        raise
    return await task, result


def _cut_after(indices: list[int], last: Any) -> Iterator[list[int]]:
    """``indices`` in order, in runs that end after each index for which ``last`` holds."""
    run: list[int] = []
    for i in indices:
        run.append(i)
        if last(i):
            yield run
            run = []
    if run:
        yield run
