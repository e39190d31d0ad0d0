"""Registry entries: the public face of programmes and referral codes.

Rewards owns programmes and referrers in PostgreSQL and publishes these snapshots to a
compacted topic (key ``program:<id>`` / ``code:<code>``); the tracker and attribution
keep them in memory. A higher ``version`` replaces a lower one. Secrets never travel:
API keys appear as hashes, referrer emails as :func:`~referral_events.identity.email_hash`.
"""

from __future__ import annotations

from pydantic import Field, HttpUrl

from .attribution import AttributionModel
from .base import Currency, EventData, Identifier, ReferralCode, UtcDateTime


class ProgramEntry(EventData):
    event_type = "referral.registry.program"

    program_id: Identifier
    name: str = Field(max_length=200)
    landing_url: HttpUrl
    currency: Currency
    locale: str = Field(default="en", max_length=20)
    attribution_window_days: int = Field(default=30, ge=1, le=3650)
    attribution_model: AttributionModel = AttributionModel.LAST_CLICK
    code_only_attribution: bool = True
    new_customers_only: bool = True
    active: bool = True
    publishable_key_hash: str = Field(min_length=64, max_length=64)
    secret_key_hash: str = Field(min_length=64, max_length=64)
    version: int = Field(ge=0)
    updated_at: UtcDateTime

    def subject(self) -> str:
        return self.program_id

    def registry_key(self) -> str:
        return program_key(self.program_id)


class ReferralCodeEntry(EventData):
    event_type = "referral.registry.code"

    code: ReferralCode
    program_id: Identifier
    referrer_id: Identifier
    referrer_external_id: Identifier
    referrer_email_hash: str | None = Field(default=None, max_length=64)
    active: bool = True
    version: int = Field(ge=0)
    updated_at: UtcDateTime

    def subject(self) -> str:
        return self.code

    def registry_key(self) -> str:
        return code_key(self.code)


def program_key(program_id: str) -> str:
    return f"program:{program_id}"


def code_key(code: str) -> str:
    return f"code:{code}"
