"""Serialise envelopes to bytes and back, turning every kind of bad input into a typed error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from .base import EventData, model_for
from .envelope import Envelope, envelope_type, new_event
from .errors import (
    InvalidEnvelope,
    InvalidEventData,
    MalformedEvent,
    UnknownEventType,
    UnsupportedSchemaVersion,
)

MAX_EVENT_BYTES = 1_000_000
"""Larger messages are refused: no event of the platform comes near it."""


def encode(envelope: Envelope[Any]) -> bytes:
    """The envelope as UTF-8 JSON, straight from pydantic's serializer (the same bytes as
    ``model_dump_json().encode()``, without its Python-side overhead: a hot path)."""
    return envelope.__pydantic_serializer__.to_json(envelope)


_ENVELOPE_HEADS: dict[tuple[str, str], bytes] = {}


def encode_new_event(data: EventData, *, source: str, id: str, time: datetime,
                     subject: str | None = None) -> bytes:
    """``encode(new_event(data, source=source, id=id, time=time, subject=subject))``, the
    same bytes, without building the envelope model: the payload is serialised by its
    own serializer and the envelope's few attributes are written around it (~3.5 µs less
    per event on the tracker's path; tests/contracts compare the two). Anything the
    envelope would refuse or normalise (a long id or subject, a time not in UTC) goes
    the model's way, with its errors."""
    if subject is None:
        subject = data.subject()
    if (not 0 < len(id) <= 200 or not 0 < len(source) <= 500
            or (subject is not None and len(subject) > 500) or time.tzinfo is not UTC):
        return encode(new_event(data, source=source, id=id, time=time, subject=subject))
    head_key = (source, data.event_type)
    head = _ENVELOPE_HEADS.get(head_key)
    if head is None:
        head = _ENVELOPE_HEADS[head_key] = b"".join((
            b',"source":', to_json(source), b',"type":', to_json(data.event_type)))
    return b"".join((
        b'{"specversion":"1.0","id":', to_json(id), head, b',"time":', to_json(time),
        b',"subject":', to_json(subject), b',"datacontenttype":"application/json"',
        b',"schemaversion":', str(data.schema_version).encode(), b',"data":',
        data.__pydantic_serializer__.to_json(data), b"}"))


def _first_error(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    field = f"{prefix}{loc}" if loc else prefix.rstrip(".") or None
    return field or "", err["msg"]


def decode(raw: bytes | bytearray | memoryview | str | None) -> Envelope[EventData]:
    """Parse one message. Raises an :class:`~referral_events.errors.EventError`
    subclass naming the field at fault; never anything else."""
    if raw is None or len(raw) == 0:
        raise MalformedEvent("message has no value; expected a CloudEvents JSON object")
    if len(raw) > MAX_EVENT_BYTES:
        raise MalformedEvent(
            f"message of {len(raw)} bytes exceeds the limit of {MAX_EVENT_BYTES} bytes"
        )
    try:
        doc = json.loads(bytes(raw) if not isinstance(raw, str) else raw)
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"message is not UTF-8 text: {exc.reason}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedEvent(f"message is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedEvent(f"message is JSON {type(doc).__name__}, expected an object")
    return decode_document(doc)


def decode_document(doc: dict[str, Any]) -> Envelope[EventData]:
    if doc.get("specversion") != "1.0":
        raise InvalidEnvelope(
            f"specversion must be '1.0', got {doc.get('specversion')!r}", field="specversion"
        )
    event_type = doc.get("type")
    if not isinstance(event_type, str):
        raise InvalidEnvelope("type is missing; expected a string", field="type")
    model = model_for(event_type)
    if model is None:
        raise UnknownEventType(f"unknown event type {event_type!r}", field="type")
    version = doc.get("schemaversion")
    if version != model.schema_version:
        raise UnsupportedSchemaVersion(
            f"{event_type} schema version {version!r} is not supported; "
            f"this reader understands version {model.schema_version}",
            field="schemaversion",
        )
    data = doc.get("data")
    if not isinstance(data, dict):
        raise InvalidEventData("data is missing; expected a JSON object", field="data")
    try:
        payload = model.model_validate(data)
    except ValidationError as exc:
        field, msg = _first_error(exc, "data.")
        raise InvalidEventData(msg, field=field) from None
    try:
        return envelope_type(model).model_validate({**doc, "data": payload})
    except ValidationError as exc:
        field, msg = _first_error(exc)
        raise InvalidEnvelope(msg, field=field) from None
