"""Deliver the email a reward event calls for, once per (event, recipient, template).

1. The notification row is queued (or found: a redelivered event finds it), locked and read,
   and the attempt counted, in one round trip (:meth:`NotificationStore.claim`).
2. A row already ``sent`` sends nothing and re-announces NotificationSent (same event id), so
   a crash between the state write and the announcement loses no outcome. A row ``failed``
   re-announces NotificationFailed and is dead-lettered again for the same reason.
3. Otherwise the email goes out with the row's Message-ID, then the state is written. A crash
   between SMTP's accept and that write resends once after restart, with the same Message-ID
   (services/notifier/README.md says why that is the chosen side of the trade-off).

The consumer (:class:`~referral_kit.key_ordered.KeyOrderedConsumer`) calls it once per event:
events with different record keys (referrers) concurrently, up to ``NOTIFIER_CONCURRENCY``
emails in flight, and the events of one key in their partition order, so a referrer never
gets "approved" before "pending".

Transient SMTP failures are retried here with exponential backoff and jitter; past the retry
window the handler raises, and the consumer keeps retrying without committing past the event.
A permanent failure marks the row failed and dead-letters the event (PoisonEvent).
"""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import Counter
from referral_events import Envelope, RewardEvent
from referral_kit.consuming import PoisonEvent
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from .compose import Email, compose, locale_for
from .config import NotifierSettings
from .notifications import Notification, NotificationKey, NotificationStore, State
from .outcomes import OutcomeAnnouncer
from .smtp import PermanentSmtpError, SmtpSender, TransientSmtpError, WireMessage
from .unsubscribe import Category, Subscription, UnsubscribeTokens
from .wire import to_wire

log = structlog.get_logger(__name__)
SENT = Counter("notifier_emails_sent_total", "Emails accepted by SMTP", ["template", "locale"])
FAILED = Counter("notifier_emails_failed_total", "Emails refused permanently", ["template"])
SMTP_RETRIES = Counter("notifier_smtp_retries_total", "Transient SMTP failures retried")
SUPPRESSED = Counter("notifier_emails_suppressed_total", "Emails not sent: recipient unsubscribed",
                     ["category"])


class Delivery:
    """The reward-topic handler: called once per decoded event."""

    def __init__(self, *, store: NotificationStore, sender: SmtpSender,
                 announcer: OutcomeAnnouncer, settings: NotifierSettings,
                 tokens: UnsubscribeTokens) -> None:
        self._store, self._sender, self._announcer = store, sender, announcer
        self._settings = settings
        self._tokens = tokens

    async def __call__(self, envelope: Envelope[Any], _record: Any = None) -> None:
        event = envelope.data
        if not isinstance(event, RewardEvent) or event.recipient.email is None:
            return
        subscription = Subscription(str(event.recipient.email), event.program_id,
                                    Category.REWARDS, locale_for(event), event.program_name)
        email = compose(event, unsubscribe_url=self._tokens.url(subscription))
        if email is None:
            return
        await self.deliver(email, source_event_id=envelope.id)

    async def deliver(self, email: Email, *, source_event_id: str) -> Notification:
        """Send ``email`` unless this event already sent it; returns the final row."""
        key = NotificationKey(source_event_id, email.recipient, email.template)
        message_id = key.message_id(self._settings.message_id_domain)
        async with self._store.claim(key, locale=email.locale, message_id=message_id,
                                     program_id=email.program_id,
                                     category=email.category) as claim:
            notification = claim.notification
            if notification.state is State.SENT:
                await self._announcer.sent(notification)
                return notification
            if notification.state is State.SUPPRESSED:
                return notification
            if notification.state is State.FAILED:
                await self._announcer.failed(notification)
                raise PoisonEvent(f"SMTP refused the email permanently: "
                                  f"{notification.last_error}", field="data.recipient.email")
            if claim.unsubscribed:
                SUPPRESSED.labels(email.category).inc()
                log.info("recipient unsubscribed; email not sent", template=email.template,
                         notification_id=notification.id)
                return await self._store.mark_suppressed(notification.id)
            wire = to_wire(email, sender=self._settings.from_email,
                           sender_name=self._settings.from_name,
                           message_id=notification.message_id,
                           unsubscribe_url=email.unsubscribe_url)
            try:
                await self._send_with_retries(notification, wire)
            except PermanentSmtpError as exc:
                failed = await self._store.mark_failed(notification.id, str(exc))
                FAILED.labels(email.template).inc()
                log.warning("email refused permanently", template=email.template,
                            notification_id=notification.id, error=str(exc))
                await self._announcer.failed(failed)
                raise PoisonEvent(f"SMTP refused the email permanently: {exc}",
                                  field="data.recipient.email") from exc
            sent = await self._record_sent(notification.id)
        SENT.labels(email.template, email.locale).inc()
        log.info("email sent", template=email.template, locale=email.locale,
                 notification_id=sent.id, attempts=sent.attempts)
        await self._announcer.sent(sent)
        return sent

    async def _send_with_retries(self, notification: Notification,
                                 message: WireMessage) -> None:
        # The first attempt (counted when the row was claimed) goes without tenacity, whose
        # machinery costs ~65 µs an attempt; a failure is replayed into it (_Replay).
        try:
            await self._send(notification, message)
            return
        except TransientSmtpError as exc:
            first = _Replay(exc)
        async for attempt in self._retrying(retry_if_exception_type(TransientSmtpError),
                                            before_sleep=_log_retry(notification.id)):
            with attempt:
                first.raise_once()
                await self._store.attempt_started(notification.id)
                await self._send(notification, message)

    async def _send(self, notification: Notification, message: WireMessage) -> None:
        try:
            await self._sender.send(message)
        except TransientSmtpError as exc:
            await self._store.attempt_failed(notification.id, str(exc))
            raise

    async def _record_sent(self, notification_id: str) -> Notification:
        # The server has the email now: a database hiccup here must not make the consumer
        # retry the whole event (that would send again), so this write alone is retried.
        try:
            return await self._store.mark_sent(notification_id)
        except LookupError:
            raise
        except Exception as exc:  # replayed into the retries just below
            first = _Replay(exc)
        async for attempt in self._retrying(retry_if_not_exception_type(LookupError)):
            with attempt:
                first.raise_once()
                return await self._store.mark_sent(notification_id)
        raise AssertionError("unreachable: tenacity reraises")

    def _retrying(self, retry: Any, **options: Any) -> AsyncRetrying:
        settings = self._settings
        return AsyncRetrying(
            retry=retry,
            wait=wait_random_exponential(multiplier=settings.retry_initial_backoff_seconds,
                                         max=settings.retry_max_backoff_seconds),
            stop=stop_after_delay(settings.retry_window_seconds), reraise=True, **options)


class _Replay:
    """The outcome of an attempt made before tenacity's loop, raised as its first attempt:
    the backoff, the logging and the retry window then run exactly as if tenacity had made
    it (the window counts from the end of that attempt)."""

    def __init__(self, error: Exception) -> None:
        self._error: Exception | None = error

    def raise_once(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _log_retry(notification_id: str) -> Any:
    def before_sleep(state: RetryCallState) -> None:
        SMTP_RETRIES.inc()
        error = state.outcome.exception() if state.outcome else None
        log.warning("SMTP unavailable; retrying", notification_id=notification_id,
                    attempt=state.attempt_number, error=str(error),
                    wait_s=round(state.next_action.sleep, 2) if state.next_action else None)
    return before_sleep
