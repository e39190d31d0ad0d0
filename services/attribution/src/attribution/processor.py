"""The per-event logic of the attribution agent, independent of Faust's wiring.

Clicks extend the code's click log; conversions are decided with :func:`rules.decide` and the
decision is emitted with an id derived from (programme, conversion), so a replay after a crash
re-emits the same decision, which rewards recognises as a duplicate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from referral_events import (
    AttributionGraceExpired,
    ClickRecorded,
    ConversionRecorded,
    Envelope,
    ReferralAttributed,
    ReferralRejected,
    RejectionReason,
    decode,
    derived_id,
    encode,
    new_event,
    utcnow,
)
from referral_kit.registry_cache import RegistryCache

from . import stats
from .rules import Click, decide, is_repeat_visit, remember_click

log = structlog.get_logger(__name__)
SOURCE = "attribution"
DECISIONS = Counter("attribution_decisions_total", "Attribution decisions", ["outcome", "reason"])
WAITING = Counter("attribution_conversions_held_total",
                  "Conversions held back for a late click (grace buffer)")
CLICK_DELAY = Histogram("attribution_click_to_conversion_seconds", "Click to conversion delay",
                        buckets=(60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400))

Emit = Callable[[str, Envelope[Any]], Awaitable[None]]


class AttributionProcessor:
    """Tables (written only while handling an event of the code, so each entry lives in
    its code's partition): ``clicks`` code → click log; ``decided`` programme:conversion →
    ``{"event": deciding event id, "final": bool}`` (not final while held for a late click);
    ``waiting`` code → conversions held back, with their deadline; ``counts``
    programme|code|channel|hour → absolute counts (see :mod:`attribution.stats`)."""

    def __init__(self, *, registry: RegistryCache, clicks: MutableMapping[str, Any],
                 decided: MutableMapping[str, Any], waiting: MutableMapping[str, Any],
                 emit: Emit, grace_seconds: float,
                 counts: MutableMapping[str, Any] | None = None) -> None:
        self._registry, self._clicks, self._decided = registry, clicks, decided
        self._waiting, self._emit = waiting, emit
        self._counts: MutableMapping[str, Any] = counts if counts is not None else {}
        self._dirty: set[str] = set()
        self._grace = timedelta(seconds=grace_seconds)

    # -- stats -----------------------------------------------------------------------
    def _count(self, key: str, counts: stats.Counts) -> None:
        self._counts[key] = counts
        self._dirty.add(key)

    def stats_due(self) -> list[tuple[str, stats.Counts]]:
        """Buckets changed since the last call, with their current counts."""
        due, self._dirty = self._dirty, set()
        return [(key, self._counts[key]) for key in sorted(due) if key in self._counts]

    def mark_recent_dirty(self, since: datetime) -> None:
        """After a rebalance: send this worker's recent buckets again (a send may have been
        lost with the previous owner; versions make the repeat harmless)."""
        horizon = stats.hour_of(since).isoformat()
        self._dirty.update(k for k in list(self._counts.keys())
                           if k.rsplit("|", 1)[-1] >= horizon)

    # -- click logs --------------------------------------------------------------------
    def click_log(self, code: str) -> list[Click]:
        """The code's click log: the clicks the table holds (:class:`ClickLog`), or a log
        recovered from the changelog, parsed (until the code's next click stores it)."""
        stored = self._clicks.get(code)
        if isinstance(stored, ClickLog):
            return stored.clicks
        return [_click_from(c) for c in stored or []]

    async def on_click(self, click: ClickRecorded) -> None:
        program = self._registry.program(click.program_id)
        window = program.attribution_window_days if program else 30
        log_ = self.click_log(click.code)
        seen = Click(click.click_id, click.occurred_at, click.channel, click.visitor_hash)
        if not is_repeat_visit(log_, seen):
            key = stats.bucket_key(click.program_id, click.code, click.channel,
                                   click.occurred_at)
            self._count(key, stats.count_click(self._counts.get(key)))
        updated = remember_click(log_, seen, window_days=window, now=utcnow())
        if updated != log_:  # a replayed click changes nothing: no table write
            self._clicks[click.code] = ClickLog(updated)
        held = self._waiting.get(click.code) or []
        if held:  # conversions that were waiting for a click of this code: decide them again
            self._waiting[click.code] = []
            for entry in held:
                await self.on_conversion(decode(entry["envelope"]),
                                         deadline=datetime.fromisoformat(entry["deadline"]))

    async def on_grace_expired(self, expiry: AttributionGraceExpired) -> None:
        """Decide the held conversions named by ``expiry`` whose grace is over."""
        now = utcnow()
        held = self._waiting.get(expiry.code) or []
        due = [e for e in held if e["conversion_id"] in expiry.conversion_ids
               and datetime.fromisoformat(e["deadline"]) <= now]
        if not due:
            return
        self._waiting[expiry.code] = [e for e in held if e not in due]
        for entry in due:
            await self.on_conversion(decode(entry["envelope"]), grace_over=True)

    def expired(self, now: datetime) -> list[tuple[str, str, list[str]]]:
        """(programme, code, conversion ids) whose grace is over, from local partitions."""
        out: dict[tuple[str, str], list[str]] = {}
        for code, held in list(self._waiting.items()):
            for entry in held or []:
                if datetime.fromisoformat(entry["deadline"]) <= now:
                    out.setdefault((entry["program_id"], code), []).append(entry["conversion_id"])
        return [(program, code, ids) for (program, code), ids in out.items()]

    async def on_conversion(self, envelope: Envelope[Any], *, grace_over: bool = False,
                            deadline: datetime | None = None) -> None:
        conversion: ConversionRecorded = envelope.data
        key = f"{conversion.program_id}:{conversion.conversion_id}"
        code = self._registry.code(conversion.code)
        caught_up_at = self._registry.caught_up_at
        if code is None and (caught_up_at is None or caught_up_at <= envelope.time):
            # the code may be younger than our view: read the registry to its end once
            await self._registry.wait_caught_up()
            code = self._registry.code(conversion.code)
        program = self._registry.program(conversion.program_id)
        previous = _decided_state(self._decided.get(key))
        duplicate = previous is not None and previous["event"] != envelope.id
        decision = decide(conversion=conversion, code=code, program=program,
                          clicks=self.click_log(conversion.code),
                          already_decided=duplicate, grace_over=grace_over)
        now = utcnow()
        if decision.awaits_click and not grace_over:
            self._hold(envelope, deadline or now + self._grace)
            self._decided[key] = {"event": envelope.id, "final": False}
            return
        if decision.attributed:
            assert code is not None and program is not None
            click = decision.click
            delay = (conversion.occurred_at - click.clicked_at).total_seconds() if click else None
            data: Any = ReferralAttributed(
                program_id=conversion.program_id, conversion_id=conversion.conversion_id,
                referrer_id=code.referrer_id, code=conversion.code,
                click_id=click.click_id if click else None, channel=decision.channel or "code",
                attribution_model=program.attribution_model, customer=conversion.customer,
                amount=conversion.amount, currency=conversion.currency,
                ip_hash=conversion.ip_hash, device_id=conversion.device_id,
                clicked_at=click.clicked_at if click else None,
                converted_at=conversion.occurred_at,
                click_to_conversion_seconds=max(delay, 0.0) if delay is not None else None,
                decided_at=now)
            if delay is not None:
                CLICK_DELAY.observe(max(delay, 0.0))
        else:
            assert decision.reason is not None
            data = ReferralRejected(
                program_id=conversion.program_id, conversion_id=conversion.conversion_id,
                code=conversion.code, referrer_id=code.referrer_id if code else None,
                reason=decision.reason, detail=decision.detail, amount=conversion.amount,
                currency=conversion.currency, converted_at=conversion.occurred_at,
                decided_at=now)
        if decision.reason is RejectionReason.DUPLICATE:
            event_id = derived_id("attribution-duplicate", key, envelope.id)
            seen_key = f"{key}#{envelope.id}"
            if seen_key not in self._decided:  # count each duplicate submission once
                self._decided[seen_key] = {"event": envelope.id, "final": True}
                self._count_decision(conversion, decision.reason.value, "", duplicate=True)
        else:
            event_id = derived_id("attribution", conversion.program_id, conversion.conversion_id)
            if previous is None or not previous["final"]:  # a replay is not counted again
                revenue = conversion.amount if (
                    decision.attributed and program is not None
                    and conversion.currency == program.currency) else 0
                self._count_decision(conversion, decision.reason.value if decision.reason
                                     else None, decision.channel or "", revenue=revenue)
            self._decided[key] = {"event": envelope.id, "final": True}
        DECISIONS.labels("attributed" if decision.attributed else "rejected",
                         decision.reason.value if decision.reason else "").inc()
        await self._emit(conversion.code, new_event(data, source=SOURCE, id=event_id))

    def _count_decision(self, conversion: ConversionRecorded, reason: str | None,
                        channel: str, *, revenue: int = 0, duplicate: bool = False) -> None:
        bucket = stats.bucket_key(conversion.program_id, conversion.code,
                                  channel if reason is None else stats.NO_CHANNEL,
                                  conversion.occurred_at)
        self._count(bucket, stats.count_decision(self._counts.get(bucket), reason=reason,
                                                 revenue=revenue, conversion=not duplicate))

    def _hold(self, envelope: Envelope[Any], deadline: datetime) -> None:
        conversion: ConversionRecorded = envelope.data
        held = [e for e in self._waiting.get(conversion.code) or [] if e["id"] != envelope.id]
        held.append({"id": envelope.id, "conversion_id": conversion.conversion_id,
                     "program_id": conversion.program_id, "deadline": deadline.isoformat(),
                     "envelope": encode(envelope).decode()})
        self._waiting[conversion.code] = held
        WAITING.inc()


class ClickLog:
    """A code's click log as its table holds it: the clicks, oldest first. Its changelog
    record is written compactly (``__json__``, read by Faust's JSON codec), once per commit
    (:mod:`attribution.changelog`), not on every click; :meth:`AttributionProcessor.click_log`
    reads that record back."""

    __slots__ = ("clicks",)

    def __init__(self, clicks: list[Click]) -> None:
        self.clicks = clicks

    def __json__(self) -> list[list[str | int]]:
        return [_click_to(c) for c in self.clicks]


def _decided_state(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if isinstance(raw, str):  # entries written before the "final" flag existed
        return {"event": raw, "final": True}
    return dict(raw)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _click_to(click: Click) -> list[str | int]:
    """A click of the log as its changelog record holds it (compact):
    ``[click_id, clicked_at in µs since the epoch (UTC), channel(, visitor)]``."""
    raw: list[str | int] = [click.click_id, (click.clicked_at - _EPOCH) // _MICROSECOND,
                            click.channel]
    if click.visitor:
        raw.append(click.visitor)
    return raw


def _click_from(raw: list[Any] | dict[str, Any]) -> Click:
    if isinstance(raw, dict):  # the first format: {"click_id", "clicked_at" (ISO), ...}
        return Click(raw["click_id"], datetime.fromisoformat(raw["clicked_at"]),
                     raw["channel"], raw.get("visitor"))
    return Click(raw[0], _EPOCH + timedelta(microseconds=raw[1]), raw[2],
                 raw[3] if len(raw) > 3 else None)
