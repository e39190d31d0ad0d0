"""Typed errors raised while decoding events.

Every error carries a machine-readable ``code``, a ``reason`` a person can act on and,
where one is to blame, the ``field`` (dotted path) that was wrong. Consumers catch
:class:`EventError` and route the message to the topic's dead-letter topic with these.
"""

from __future__ import annotations


class EventError(ValueError):
    """Base of every decode failure; safe to catch as 'this message is poison'."""

    code = "invalid_event"

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class MalformedEvent(EventError):
    """The bytes are not a JSON object (empty, not UTF-8, not JSON, too large)."""

    code = "malformed"


class InvalidEnvelope(EventError):
    """A CloudEvents attribute is missing or wrong."""

    code = "invalid_envelope"


class UnknownEventType(EventError):
    """The ``type`` attribute names no event of the catalogue."""

    code = "unknown_type"


class UnsupportedSchemaVersion(EventError):
    """The ``schemaversion`` attribute is not one this code understands."""

    code = "unsupported_schema_version"


class InvalidEventData(EventError):
    """The ``data`` payload does not match the schema of its event type."""

    code = "invalid_data"
