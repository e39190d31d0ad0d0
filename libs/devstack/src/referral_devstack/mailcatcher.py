"""A real SMTP server (aiosmtpd) that keeps what it receives, for people and for tests.

Every accepted message is parsed into an ``EmailMessage`` kept in memory and, when a
directory is given, written there as ``<time>-<n>.eml`` (open it with any mail reader).
``set_failure(451)`` / ``set_failure(550)`` makes it refuse recipients, to exercise retries
and permanent failures.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_REPLIES = {
    421: "421 4.3.2 Service not available, try later",
    450: "450 4.2.1 Mailbox busy, try later",
    451: "451 4.3.0 Temporary failure, try later",
    550: "550 5.1.1 Mailbox unavailable",
    554: "554 5.7.1 Message refused",
}


class CaughtMail:
    """The aiosmtpd handler: stores messages, can be told to fail."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._received: Counter[str] = Counter()  # envelope recipient (lower-case) → messages
        self.refused = 0
        self._failure: int | None = None
        self._failing: dict[str, int] = {}  # recipient (lower-case) → reply code
        self._lock = threading.Lock()
        if directory:
            directory.mkdir(parents=True, exist_ok=True)

    def set_failure(self, code: int | None, *, recipient: str | None = None) -> None:
        """Answer every RCPT (or only those to ``recipient``) with ``code`` (e.g. 451
        transient, 550 permanent); None heals."""
        if code is not None and code not in _REPLIES:
            raise ValueError(f"choose one of {sorted(_REPLIES)}")
        if recipient is None:
            self._failure = code
        elif code is None:
            self._failing.pop(recipient.lower(), None)
        else:
            self._failing[recipient.lower()] = code

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        failure = self._failure if self._failure is not None else self._failing.get(
            address.lower())
        if failure is not None:
            with self._lock:
                self.refused += 1
            return _REPLIES[failure]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        message: Any = message_from_bytes(data, policy=policy.default)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            self._received.update(address.lower() for address in envelope.rcpt_tos)
            count = len(self.messages)
        if self.directory:
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{count:05d}.eml"
            (self.directory / name).write_bytes(data)
        return "250 Message accepted for delivery"

    def received(self, address: str) -> int:
        """How many messages were delivered to envelope recipient ``address``: O(1), for
        polling while thousands arrive (``to`` parses every stored message's header)."""
        with self._lock:
            return self._received[address.lower()]

    def to(self, address: str) -> list[EmailMessage]:
        """Messages whose To header contains ``address`` (case-insensitive)."""
        with self._lock:
            return [m for m in self.messages if address.lower() in str(m["To"]).lower()]


class MailCatcher:
    """An SMTP server on ``host:port`` in a background thread (works inside or outside asyncio)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1025,
                 directory: Path | None = None) -> None:
        self.host, self.port = host, port
        self.handler = CaughtMail(directory)
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    def set_failure(self, code: int | None, *, recipient: str | None = None) -> None:
        self.handler.set_failure(code, recipient=recipient)

    def start(self) -> MailCatcher:
        self._controller = Controller(self.handler, hostname=self.host, port=self.port,
                                      ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused until ``start()`` again)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
