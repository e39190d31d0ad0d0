"""Outcomes of the notifier's emails."""

from __future__ import annotations

from pydantic import Field

from .base import EventData, Identifier, UtcDateTime


class NotificationEvent(EventData):
    notification_id: Identifier
    source_event_id: Identifier
    recipient_hash: str = Field(max_length=64, description="email_hash() of the recipient")
    template: str = Field(max_length=80)
    locale: str = Field(max_length=20)
    occurred_at: UtcDateTime

    def subject(self) -> str:
        return self.notification_id


class NotificationSent(NotificationEvent):
    event_type = "referral.notification.sent"

    message_id: str = Field(max_length=300)


class NotificationFailed(NotificationEvent):
    event_type = "referral.notification.failed"

    error: str = Field(max_length=1000)
    permanent: bool
