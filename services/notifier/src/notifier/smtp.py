"""SMTP delivery over a few reused connections, failures sorted into transient and permanent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import getaddresses, parseaddr

import aiosmtplib
import structlog

log = structlog.get_logger(__name__)


# Headers unfolded (RFC 5322 allows 998 octets a line). CPython 3.11's folder drops the space
# between two encoded words that meet at a fold: "køb: 10,00 €" arrived as "køb:10,00 €".
_WIRE_POLICY = SMTP.clone(max_line_length=998)
#: an idle session used this recently is reused without a NOOP first
FRESH_SECONDS = 5.0


def wire_bytes(message: EmailMessage) -> bytes:
    """``message`` as sent over SMTP: CRLF line ends, headers encoded but not folded."""
    return message.as_bytes(policy=_WIRE_POLICY)


def envelope_of(message: EmailMessage) -> tuple[str, list[str]]:
    """(MAIL FROM, RCPT TO addresses) taken from the From/To/Cc headers."""
    sender = parseaddr(str(message["From"]))[1]
    headers = [str(v) for name in ("To", "Cc") for v in message.get_all(name, [])]
    return sender, [address for _, address in getaddresses(headers) if address]


@dataclass(frozen=True, slots=True)
class WireMessage:
    """What an SMTP session needs: envelope sender, recipients and the message's bytes."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes

    @classmethod
    def of(cls, message: EmailMessage) -> WireMessage:
        sender, recipients = envelope_of(message)
        return cls(sender, tuple(recipients), wire_bytes(message))


class TransientSmtpError(Exception):
    """Try again later: server away, timeout, 4xx reply, or a server that is misconfigured."""


class PermanentSmtpError(Exception):
    """Never retry this message: a 5xx reply to it (unknown mailbox, message refused)."""


# Replies about the session rather than the message: a relay refusing us (greeting, HELO,
# AUTH) would refuse any email, so marking this one failed would lose it; wait for a fix.
_SESSION_ERRORS = (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPHeloError,
                   aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPNotSupported)


def classify(exc: BaseException) -> TransientSmtpError | PermanentSmtpError:
    """Sort an aiosmtplib or network failure: a 5xx about the message is permanent, the rest
    transient."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        replies = [(r.code, r.message) for r in exc.recipients]
        return _by_code(replies) if replies else TransientSmtpError(str(exc))
    if isinstance(exc, _SESSION_ERRORS):
        return TransientSmtpError(f"SMTP session refused: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code([(exc.code, exc.message)])
    return TransientSmtpError(repr(exc))


def _by_code(replies: list[tuple[int, str]]) -> TransientSmtpError | PermanentSmtpError:
    for code, text in replies:
        if 500 <= code < 600:
            return PermanentSmtpError(f"{code} {text}")
    code, text = replies[0]
    return TransientSmtpError(f"{code} {text}")


class SmtpSender:
    """Sends messages over up to ``connections`` SMTP sessions kept open between messages
    (one message per session at a time; a session that failed is dropped and reopened)."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0, starttls: bool = False,
                 username: str | None = None, password: str | None = None,
                 connections: int = 1) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._host, self._port, self._timeout = host, port, timeout
        self._starttls, self._username, self._password = starttls, username, password
        self._slots = asyncio.Semaphore(connections)
        # open sessions nobody is using, with when each was last used (monotonic)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    async def send(self, message: WireMessage | EmailMessage) -> None:
        """Hand ``message`` to the server; returns only once the server accepted it.

        Raises TransientSmtpError (retry later) or PermanentSmtpError (never retry).
        """
        if isinstance(message, EmailMessage):
            message = WireMessage.of(message)
        async with self._slots:
            client, used = self._idle.pop() if self._idle else (None, 0.0)
            try:
                client = await self._connected(client, used)
                refused, _ = await client.sendmail(message.sender, list(message.recipients),
                                                   message.data)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                # Whatever state the session is in now, a fresh one is the safe start.
                _drop(client)
                raise classify(exc) from exc
            except asyncio.CancelledError:  # stopped mid-conversation: close, don't reuse
                _drop(client)
                raise
            if refused:
                _drop(client)
                raise _by_code(list(refused.values()))
            self._idle.append((client, time.monotonic()))

    async def _connected(self, client: aiosmtplib.SMTP | None,
                         used: float) -> aiosmtplib.SMTP:
        """``client`` if it can take a message, else a new session. A session used within
        :data:`FRESH_SECONDS` is taken as it is (servers keep idle sessions for minutes; a
        NOOP before every message cost a round trip each); an older one must answer a NOOP.
        Should a fresh one have died anyway, the send fails as transient and is retried."""
        if client is not None and client.is_connected:
            if time.monotonic() - used < FRESH_SECONDS:
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError):
                _drop(client)
        client = aiosmtplib.SMTP(hostname=self._host, port=self._port, timeout=self._timeout,
                                 start_tls=self._starttls, username=self._username,
                                 password=self._password)
        await client.connect()
        return client

    async def close(self) -> None:
        """Say QUIT politely on every idle session."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            with contextlib.suppress(Exception):
                await client.quit()
            _drop(client)


def _drop(client: aiosmtplib.SMTP | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()
