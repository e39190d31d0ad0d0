"""Turning what the tracker receives into events on their topics.

Every event carries a deterministic id derived from its idempotency key, so a replay
(a retry after a 503, another replica, a duplicate post) is a no-op downstream.
"""

from __future__ import annotations

from referral_events import (
    ClickRecorded,
    ConversionRecorded,
    ConversionReversed,
    TopicRegistry,
    derived_id,
    new_event,
    utcnow,
)
from referral_events.identity import ip_hash, new_click_id

from . import metrics
from .codes import referral_code_of
from .links import trim_user_agent
from .publisher import EventPublisher
from .recent import RecentWrites, WriteStatus
from .schemas import ConversionIn, ReversalIn

SOURCE = "tracker"


class ReferralIngest:
    """Records clicks, conversions and reversals; each method returns only after the
    broker acknowledged the event, or raises :class:`~tracker.publisher.BrokerUnavailable`."""

    def __init__(self, *, publisher: EventPublisher, topics: TopicRegistry, hash_salt: str,
                 recent: RecentWrites) -> None:
        self._publisher = publisher
        self._topics = topics
        self._salt = hash_salt
        self._recent = recent

    def _hash(self, value: str | None) -> str | None:
        return ip_hash(value, self._salt) if value else None

    async def record_click(self, *, program_id: str, code: str, channel: str,
                           utm: dict[str, str], visitor_id: str | None, ip: str | None,
                           user_agent: str | None, via: str) -> str:
        """Publish a ClickRecorded keyed by ``code``; returns its fresh click id."""
        click = ClickRecorded(
            click_id=new_click_id(code), program_id=program_id, code=code, channel=channel,
            utm=utm, visitor_hash=self._hash(visitor_id), ip_hash=self._hash(ip),
            user_agent=trim_user_agent(user_agent), occurred_at=utcnow(),
        )
        event = new_event(click, source=SOURCE, id=derived_id("click", click.click_id))
        await self._publisher.publish(self._topics.clicks, key=code, envelope=event)
        metrics.CLICKS.labels(via=via).inc()
        return click.click_id

    async def record_conversion(self, *, program_id: str, conversion: ConversionIn
                                ) -> WriteStatus:
        """Publish a ConversionRecorded keyed by its referral code, once per
        (programme, conversion id). Raises :class:`~tracker.codes.CodeUnresolved` when
        neither ``code`` nor ``click_id`` names a code."""
        code, code_source = referral_code_of(code=conversion.code, click_id=conversion.click_id)
        data = ConversionRecorded(
            program_id=program_id, conversion_id=conversion.conversion_id, code=code,
            code_source=code_source, click_id=conversion.click_id, customer=conversion.customer,
            amount=conversion.amount, currency=conversion.currency,
            ip_hash=self._hash(conversion.ip), device_id=conversion.device_id,
            occurred_at=conversion.occurred_at or utcnow(),
        )
        event = new_event(data, source=SOURCE,
                          id=derived_id("conversion", program_id, conversion.conversion_id))

        async def publish() -> None:
            await self._publisher.publish(self._topics.conversions, key=code, envelope=event)

        status = await self._recent.write_once(
            f"conversion:{program_id}:{conversion.conversion_id}", publish)
        metrics.CONVERSIONS.labels(status=status.value).inc()
        return status

    async def record_reversal(self, *, program_id: str, reversal: ReversalIn) -> WriteStatus:
        """Publish a ConversionReversed keyed ``program_id:conversion_id``, once per
        reversal (its ``reversal_id``, else its reason and amount)."""
        data = ConversionReversed(
            program_id=program_id, conversion_id=reversal.conversion_id, reason=reversal.reason,
            amount=reversal.amount, occurred_at=reversal.occurred_at or utcnow(),
        )
        amount = "all" if reversal.amount is None else str(reversal.amount)
        which = reversal.reversal_id or f"{reversal.reason.value}:{amount}"
        event = new_event(data, source=SOURCE,
                          id=derived_id("reversal", program_id, reversal.conversion_id, which))
        key = f"{program_id}:{reversal.conversion_id}"

        async def publish() -> None:
            await self._publisher.publish(self._topics.reversals, key=key, envelope=event)

        status = await self._recent.write_once(f"reversal:{key}:{which}", publish)
        metrics.REVERSALS.labels(status=status.value).inc()
        return status
