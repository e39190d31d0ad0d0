"""CloudEvents 1.0 envelope (structured JSON mode) around a typed payload."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from .base import EventData, UtcDateTime, utcnow

D = TypeVar("D", bound=EventData)


class Envelope(BaseModel, Generic[D]):
    """One event as it travels on a topic.

    ``schemaversion`` is a CloudEvents extension attribute holding the payload's schema
    version; ``id`` is unique per event and the idempotency key of whoever consumes it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=500)
    type: str = Field(min_length=1, max_length=200)
    time: UtcDateTime
    subject: str | None = Field(default=None, max_length=500)
    datacontenttype: Literal["application/json"] = "application/json"
    schemaversion: int = Field(ge=1)
    data: SerializeAsAny[D]


def new_event(
    data: D,
    *,
    source: str,
    id: str | None = None,
    time: datetime | None = None,
    subject: str | None = None,
) -> Envelope[D]:
    """Wrap ``data`` in an envelope. Pass a deterministic ``id`` when the same decision
    may be emitted again after a crash, so consumers see a duplicate, not a new event."""
    return Envelope[type(data)](  # type: ignore[misc]
        id=id or str(uuid.uuid4()),
        source=source,
        type=data.event_type,
        time=time or utcnow(),
        subject=subject if subject is not None else data.subject(),
        schemaversion=data.schema_version,
        data=data,
    )


def derived_id(*parts: str) -> str:
    """A stable event id derived from what the event is about (UUIDv5)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "referral:" + "/".join(parts)))
