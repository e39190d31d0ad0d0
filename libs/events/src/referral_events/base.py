"""Base class of event payloads and the catalogue mapping CloudEvents types to them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_CATALOGUE: dict[str, type[EventData]] = {}


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a time zone, e.g. 2026-11-22T10:00:00Z")
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_aware_utc)]
"""A timestamp with an explicit offset, normalised to UTC."""

MinorUnits = Annotated[int, Field(ge=0, le=10**13, description="Money in minor units (cents).")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR.")]
ReferralCode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Identifier = Annotated[str, Field(min_length=1, max_length=200)]


class EventData(BaseModel):
    """Payload of one event type. Subclasses set ``event_type`` and are catalogued.

    ``schema_version`` is bumped on a breaking change; readers refuse versions they do
    not know rather than guess.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        event_type = cls.__dict__.get("event_type")
        if event_type:
            if event_type in _CATALOGUE:
                raise TypeError(f"event type {event_type!r} declared twice")
            _CATALOGUE[event_type] = cls

    def subject(self) -> str | None:
        """The CloudEvents ``subject``: what the event is about (override per type)."""
        return None


def catalogue() -> dict[str, type[EventData]]:
    """Every known event type and its payload class."""
    return dict(_CATALOGUE)


def model_for(event_type: str) -> type[EventData] | None:
    return _CATALOGUE.get(event_type)


def utcnow() -> datetime:
    return datetime.now(UTC)
