"""Deliver the email a reward event calls for, at most once per (event, recipient, template).

1. The notification row is inserted (``queued``) or found: a redelivered event finds it.
2. A row already ``sent`` or ``failed`` sends nothing; its outcome event is re-announced
   (same id), so a crash after the state write loses no NotificationSent.
3. Otherwise the email goes out with a Message-ID derived from the row, then the state is
   written. A crash between SMTP's accept and that write resends once after restart with the
   same Message-ID (see services/notifier/README.md for why that is the chosen trade-off).

Transient SMTP failures raise, so the consumer retries with backoff without committing past
the event; a permanent one marks the row failed and dead-letters the event.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from referral_events import (
    Envelope,
    NotificationFailed,
    NotificationSent,
    RewardEvent,
    TopicRegistry,
    derived_id,
    encode,
    new_event,
    utcnow,
)
from referral_events.identity import email_hash
from referral_kit.consuming import PoisonEvent

from .compose import compose, to_mime
from .config import NotifierSettings
from .smtp import PermanentSmtpError, SmtpSender

log = structlog.get_logger(__name__)
SENT = Counter("notifier_emails_sent_total", "Emails accepted by SMTP", ["template", "locale"])
FAILED = Counter("notifier_emails_failed_total", "Emails refused permanently", ["template"])
SOURCE = "notifier"


class Delivery:
    def __init__(self, *, pool: asyncpg.Pool, sender: SmtpSender, producer: AIOKafkaProducer,
                 topics: TopicRegistry, settings: NotifierSettings) -> None:
        self._pool, self._sender, self._producer = pool, sender, producer
        self._topics, self._settings = topics, settings
        self._domain = settings.from_email.rpartition("@")[2] or "localhost"

    async def __call__(self, envelope: Envelope[Any], _record: Any) -> None:
        event = envelope.data
        if not isinstance(event, RewardEvent):
            return
        email = compose(event)
        if email is None:
            return
        notification_id = derived_id("notification", envelope.id, email.recipient.lower(),
                                     email.template)
        message_id = f"<{notification_id}@{self._domain}>"
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO notifications (id, source_event_id, recipient, template, locale,"
                " message_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                notification_id, envelope.id, email.recipient.lower(), email.template,
                email.locale, message_id)
            row = await conn.fetchrow("SELECT * FROM notifications WHERE id = $1",
                                      notification_id)
            if row["state"] == "sent":
                await self._announce_sent(row)
                return
            if row["state"] == "failed":
                return
            await conn.execute("UPDATE notifications SET attempts = attempts + 1,"
                               " last_attempt_at = now() WHERE id = $1", notification_id)
            mime = to_mime(email, sender=self._settings.from_email,
                           sender_name=self._settings.from_name, message_id=message_id)
            try:
                await self._sender.send(mime)
            except PermanentSmtpError as exc:
                failed = await conn.fetchrow(
                    "UPDATE notifications SET state = 'failed', last_error = $2 WHERE id = $1"
                    " RETURNING *", notification_id, str(exc)[:1000])
                FAILED.labels(email.template).inc()
                await self._announce_failed(failed, str(exc))
                raise PoisonEvent(f"SMTP refused the email permanently: {exc}",
                                  field="data.recipient.email") from exc
            except Exception as exc:
                await conn.execute("UPDATE notifications SET last_error = $2 WHERE id = $1",
                                   notification_id, str(exc)[:1000])
                raise
            sent = await conn.fetchrow(
                "UPDATE notifications SET state = 'sent', sent_at = now(), last_error = NULL"
                " WHERE id = $1 RETURNING *", notification_id)
        SENT.labels(email.template, email.locale).inc()
        log.info("email sent", template=email.template, locale=email.locale,
                 notification_id=notification_id)
        await self._announce_sent(sent)

    async def _announce_sent(self, row: Any) -> None:
        data = NotificationSent(**self._common(row), occurred_at=row["sent_at"] or utcnow(),
                                message_id=row["message_id"])
        await self._announce(data, row, "sent")

    async def _announce_failed(self, row: Any, error: str) -> None:
        data = NotificationFailed(**self._common(row), occurred_at=utcnow(), error=error[:1000],
                                  permanent=True)
        await self._announce(data, row, "failed")

    async def _announce(self, data: Any, row: Any, outcome: str) -> None:
        envelope = new_event(data, source=SOURCE, id=derived_id("notification", row["id"],
                                                               outcome))
        await self._producer.send_and_wait(self._topics.notifications.name, encode(envelope),
                                           key=row["id"].encode())

    @staticmethod
    def _common(row: Any) -> dict[str, Any]:
        return dict(notification_id=row["id"], source_event_id=row["source_event_id"],
                    recipient_hash=email_hash(row["recipient"]), template=row["template"],
                    locale=row["locale"])
