"""Turning what the tracker receives into events on their topics.

Every event carries a deterministic id derived from its idempotency key, so a replay
(a retry after a 503, another replica, a duplicate post) is a no-op downstream. Events are
built by the ``*_event`` methods and sent by the ``record_*`` methods one at a time, or by
:mod:`tracker.batch` many at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

from referral_events import (
    ClickRecorded,
    ConversionRecorded,
    ConversionReversed,
    Topic,
    TopicRegistry,
    derived_id,
    encode_new_event,
    utcnow,
)
from referral_events.identity import ip_hash, new_click_id

from . import metrics
from .codes import referral_code_of
from .links import trim_user_agent
from .publisher import EventPublisher
from .recent import RecentClicks, RecentWrites, WriteStatus
from .schemas import ConversionIn, ReversalIn

SOURCE = "tracker"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event ready to publish: its topic, its key, and (for idempotent writes) the
    idempotency key under which this replica remembers it."""

    topic: Topic
    key: str
    value: bytes
    """The event's envelope as it goes on the topic (``encode_new_event``)."""
    event_id: str
    idempotency_key: str = ""

    def message(self) -> tuple[Topic, str, bytes]:
        return self.topic, self.key, self.value


@dataclass(frozen=True, slots=True)
class ClickOutcome:
    click_id: str
    counted: bool
    """False when this was a repeat of a recent click by the same visitor (not published)."""


class ReferralIngest:
    """Records clicks, conversions and reversals; each ``record_*`` method returns only
    after the broker acknowledged the event, or raises
    :class:`~tracker.publisher.BrokerUnavailable`."""

    def __init__(self, *, publisher: EventPublisher, topics: TopicRegistry, hash_salt: str,
                 recent: RecentWrites, clicks: RecentClicks | None = None) -> None:
        self.publisher = publisher
        self.topics = topics
        self._salt = hash_salt
        self.recent = recent
        self.clicks = clicks or RecentClicks(seconds=0, capacity=0)

    def _hash(self, value: str | None) -> str | None:
        return ip_hash(value, self._salt) if value else None

    def anonymous_visitor_id(self, ip: str | None, user_agent: str | None) -> str | None:
        """A visitor id for a visitor who brings none: a salted hash of IP + user agent.

        Deterministic, so every replica gives the same person the same id (and the same
        ``visitor_hash``) until a cookie carries it; None without an IP."""
        return self._hash(f"ipua:{ip}|{user_agent or ''}") if ip else None

    def repeat_key(self, code: str, visitor_id: str | None) -> str | None:
        """Key of the click-dedupe memory for ``visitor_id`` clicking ``code``: the code
        and the click's ``visitor_hash``, as downstream consumers would compare them. None
        when there is nobody to recognise or dedupe is off."""
        if not visitor_id or not self.clicks.enabled:
            return None
        return f"{code}:{self._hash(visitor_id)}"

    def click_event(self, *, program_id: str, code: str, channel: str, utm: dict[str, str],
                    visitor_id: str | None, ip: str | None, user_agent: str | None,
                    occurred_at: datetime | None = None, now: datetime | None = None
                    ) -> tuple[str, Outgoing]:
        """A fresh click id and its ClickRecorded, keyed by ``code``. ``now`` is when the
        tracker received it (one reading per request)."""
        now = now or utcnow()
        click = ClickRecorded(
            click_id=new_click_id(code), program_id=program_id, code=code, channel=channel,
            utm=utm, visitor_hash=self._hash(visitor_id), ip_hash=self._hash(ip),
            user_agent=trim_user_agent(user_agent), occurred_at=occurred_at or now,
        )
        event_id = derived_id("click", click.click_id)
        return click.click_id, Outgoing(
            self.topics.clicks, code,
            encode_new_event(click, source=SOURCE, id=event_id, time=now), event_id)

    async def record_click(self, *, program_id: str, code: str, channel: str,
                           utm: dict[str, str], visitor_id: str | None, ip: str | None,
                           user_agent: str | None, via: str) -> ClickOutcome:
        """Publish a ClickRecorded keyed by ``code`` and return its fresh click id, unless
        the same visitor clicked ``code`` within the dedupe window: then return that
        click's id and publish nothing."""

        async def publish() -> str:
            click_id, outgoing = self.click_event(
                program_id=program_id, code=code, channel=channel, utm=utm,
                visitor_id=visitor_id, ip=ip, user_agent=user_agent)
            await self.publisher.publish(outgoing.topic, key=outgoing.key,
                                         value=outgoing.value, event_id=outgoing.event_id)
            return click_id

        repeat_key = self.repeat_key(code, visitor_id)
        if repeat_key is None:
            click_id, counted = await publish(), True
        else:
            click_id, counted = await self.clicks.once(repeat_key, publish)
        (metrics.CLICKS if counted else metrics.REPEAT_CLICKS).labels(via=via).inc()
        return ClickOutcome(click_id, counted)

    def conversion_event(self, *, program_id: str, conversion: ConversionIn,
                         now: datetime | None = None) -> Outgoing:
        """The ConversionRecorded, keyed by its referral code. Raises
        :class:`~tracker.codes.CodeUnresolved` when neither ``code`` nor ``click_id``
        names a code."""
        now = now or utcnow()
        code, code_source = referral_code_of(code=conversion.code, click_id=conversion.click_id)
        data = ConversionRecorded(
            program_id=program_id, conversion_id=conversion.conversion_id, code=code,
            code_source=code_source, click_id=conversion.click_id, customer=conversion.customer,
            amount=conversion.amount, currency=conversion.currency,
            ip_hash=self._hash(conversion.ip), device_id=conversion.device_id,
            occurred_at=conversion.occurred_at or now,
        )
        event_id = derived_id("conversion", program_id, conversion.conversion_id)
        return Outgoing(self.topics.conversions, code,
                        encode_new_event(data, source=SOURCE, id=event_id, time=now), event_id,
                        f"conversion:{program_id}:{conversion.conversion_id}")

    async def record_conversion(self, *, program_id: str, conversion: ConversionIn
                                ) -> WriteStatus:
        """Publish a ConversionRecorded keyed by its referral code, once per
        (programme, conversion id)."""
        outgoing = self.conversion_event(program_id=program_id, conversion=conversion)
        status = await self._write_once(outgoing)
        metrics.CONVERSIONS_BY_STATUS[status].inc()
        return status

    def reversal_event(self, *, program_id: str, reversal: ReversalIn,
                       now: datetime | None = None) -> Outgoing:
        """The ConversionReversed keyed ``program_id:conversion_id``; its idempotency key
        is its ``reversal_id``, else its reason and amount."""
        now = now or utcnow()
        data = ConversionReversed(
            program_id=program_id, conversion_id=reversal.conversion_id, reason=reversal.reason,
            amount=reversal.amount, occurred_at=reversal.occurred_at or now,
        )
        amount = "all" if reversal.amount is None else str(reversal.amount)
        which = reversal.reversal_id or f"{reversal.reason.value}:{amount}"
        event_id = derived_id("reversal", program_id, reversal.conversion_id, which)
        key = f"{program_id}:{reversal.conversion_id}"
        return Outgoing(self.topics.reversals, key,
                        encode_new_event(data, source=SOURCE, id=event_id, time=now), event_id,
                        f"reversal:{key}:{which}")

    async def record_reversal(self, *, program_id: str, reversal: ReversalIn) -> WriteStatus:
        """Publish a ConversionReversed, once per reversal."""
        outgoing = self.reversal_event(program_id=program_id, reversal=reversal)
        status = await self._write_once(outgoing)
        metrics.REVERSALS_BY_STATUS[status].inc()
        return status

    async def _write_once(self, outgoing: Outgoing) -> WriteStatus:
        return await self.recent.write_once(outgoing.idempotency_key, partial(
            self.publisher.publish, outgoing.topic, key=outgoing.key, value=outgoing.value,
            event_id=outgoing.event_id))
