"""SMTP delivery with one reused connection and failures sorted into transient / permanent."""

from __future__ import annotations

import asyncio
import contextlib
from email.message import EmailMessage

import aiosmtplib
import structlog

log = structlog.get_logger(__name__)


class TransientSmtpError(Exception):
    """Try again later: server away, 4xx reply, timeout."""


class PermanentSmtpError(Exception):
    """Never retry: 5xx reply (unknown mailbox, refused message)."""


class SmtpSender:
    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self._host, self._port, self._timeout = host, port, timeout
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def send(self, message: EmailMessage) -> None:
        async with self._lock:
            try:
                client = await self._connected()
                errors, _ = await client.send_message(message)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                self._classify([(r.code, r.message) for r in exc.recipients])
                raise TransientSmtpError(str(exc)) from exc
            except aiosmtplib.SMTPResponseException as exc:
                await self._drop()
                if 500 <= exc.code < 600:
                    raise PermanentSmtpError(f"{exc.code} {exc.message}") from exc
                raise TransientSmtpError(f"{exc.code} {exc.message}") from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._drop()
                raise TransientSmtpError(repr(exc)) from exc
            if errors:
                self._classify(list(errors.values()))

    @staticmethod
    def _classify(replies: list[tuple[int, str]]) -> None:
        for code, text in replies:
            if 500 <= code < 600:
                raise PermanentSmtpError(f"{code} {text}")
        if replies:
            code, text = replies[0]
            raise TransientSmtpError(f"{code} {text}")

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.noop()
                return self._client
            except aiosmtplib.SMTPException:
                await self._drop()
        client = aiosmtplib.SMTP(hostname=self._host, port=self._port, timeout=self._timeout,
                                 start_tls=False)
        await client.connect()
        self._client = client
        return client

    async def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.quit()
            await self._drop()
