"""Announce what happened to an email on the notifications topic.

Outcome events have ids derived from the notification and the outcome, so announcing the same
outcome again (after a redelivery or a restart) publishes a duplicate readers can drop by id.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from referral_events import (
    NotificationFailed,
    NotificationSent,
    Topic,
    derived_id,
    encode,
    new_event,
    utcnow,
)
from referral_events.identity import email_hash

from .notifications import Notification

SOURCE = "notifier"


class OutcomeAnnouncer:
    def __init__(self, producer: AIOKafkaProducer, topic: Topic) -> None:
        self._producer, self._topic = producer, topic

    async def sent(self, notification: Notification) -> None:
        """Publish NotificationSent and wait for the broker's ack."""
        data = NotificationSent(**_common(notification),
                                occurred_at=notification.sent_at or utcnow(),
                                message_id=notification.message_id)
        await self._publish(data, notification, "sent")

    async def failed(self, notification: Notification) -> None:
        """Publish NotificationFailed (permanent) and wait for the broker's ack."""
        data = NotificationFailed(**_common(notification), occurred_at=utcnow(),
                                  error=(notification.last_error or "refused")[:1000],
                                  permanent=True)
        await self._publish(data, notification, "failed")

    async def _publish(self, data: Any, notification: Notification, outcome: str) -> None:
        envelope = new_event(data, source=SOURCE,
                             id=derived_id("notification", notification.id, outcome))
        await self._producer.send_and_wait(self._topic.name, encode(envelope),
                                           key=notification.id.encode())


def _common(notification: Notification) -> dict[str, Any]:
    # Only a hash of the address leaves the notifier: the topic is read more widely.
    return dict(notification_id=notification.id,
                source_event_id=notification.source_event_id,
                recipient_hash=email_hash(notification.recipient),
                template=notification.template, locale=notification.locale)
