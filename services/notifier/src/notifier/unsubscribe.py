"""Unsubscribe links and the suppression list.

A link carries a token signed with ``NOTIFIER_UNSUBSCRIBE_SECRET`` (itsdangerous, HMAC with
a timestamp) naming one recipient, one programme and one category of email; it expires after
``NOTIFIER_UNSUBSCRIBE_TOKEN_DAYS``. A changed byte fails the signature, so nobody can
unsubscribe someone else or widen the scope. Unsubscribing stops the category's emails for
that programme only; rewards are still earned.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlencode

import asyncpg
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class Category(StrEnum):
    REWARDS = "rewards"  # emails about one's own rewards (referrer and friend)
    DIGEST = "digest"  # the marketers' periodic digest


@dataclass(frozen=True)
class Subscription:
    recipient: str
    program_id: str
    category: Category
    locale: str = "en"
    program_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", self.recipient.strip().lower())


class TokenRefused(Exception):
    """The token is not ours (tampered, truncated) or too old; ``expired`` tells which."""

    def __init__(self, detail: str, *, expired: bool) -> None:
        super().__init__(detail)
        self.detail, self.expired = detail, expired


class UnsubscribeTokens:
    def __init__(self, secret: str, *, max_age_days: int, public_url: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="referral-unsubscribe")
        self._max_age = max_age_days * 86400
        self._base = public_url.rstrip("/")

    def issue(self, subscription: Subscription) -> str:
        return self._serializer.dumps({"r": subscription.recipient, "p": subscription.program_id,
                                       "c": subscription.category.value,
                                       "l": subscription.locale, "n": subscription.program_name})

    def url(self, subscription: Subscription) -> str:
        return f"{self._base}/unsubscribe?{urlencode({'token': self.issue(subscription)})}"

    def read(self, token: str) -> Subscription:
        try:
            raw = self._serializer.loads(token, max_age=self._max_age)
        except SignatureExpired:
            raise TokenRefused("This unsubscribe link has expired; use the link in a newer "
                               "email.", expired=True) from None
        except BadSignature:
            raise TokenRefused("This unsubscribe link is not valid; open it exactly as it "
                               "appears in the email.", expired=False) from None
        try:
            return Subscription(raw["r"], raw["p"], Category(raw["c"]), raw.get("l", "en"),
                                raw.get("n", ""))
        except (KeyError, TypeError, ValueError):
            raise TokenRefused("This unsubscribe link is not valid.", expired=False) from None


class SuppressionList:
    """Who asked for no more emails of a category from a programme (table ``unsubscribes``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, subscription: Subscription) -> bool:
        """Record the unsubscription; False when it was recorded before (idempotent)."""
        async with self._pool.acquire() as conn:
            return bool(await conn.fetchval(
                "INSERT INTO unsubscribes (recipient, program_id, category) VALUES ($1,$2,$3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                subscription.recipient, subscription.program_id, subscription.category.value))
