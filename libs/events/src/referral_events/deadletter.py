"""The record written to a dead-letter topic: the original message and why it was refused."""

from __future__ import annotations

import base64

from pydantic import Field

from .base import EventData, UtcDateTime


class EventDeadLettered(EventData):
    event_type = "platform.event.dead_lettered"

    original_topic: str
    partition: int | None = None
    offset: int | None = None
    original_key: str | None = None
    original_value: str | None = Field(
        default=None, description="UTF-8 text of the message, or base64 when not text."
    )
    original_value_base64: bool = False
    error_code: str = Field(max_length=60)
    reason: str = Field(max_length=2000)
    field: str | None = Field(default=None, max_length=300)
    consumer: str = Field(max_length=120)
    failed_at: UtcDateTime

    def subject(self) -> str:
        return f"{self.original_topic}/{self.partition}/{self.offset}"

    def original_bytes(self) -> bytes | None:
        """The refused message exactly as it was, for a replay after the fix."""
        if self.original_value is None:
            return None
        if self.original_value_base64:
            return base64.b64decode(self.original_value)
        return self.original_value.encode()

    @staticmethod
    def wrap_value(raw: bytes | None) -> tuple[str | None, bool]:
        if raw is None:
            return None, False
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode(), True
