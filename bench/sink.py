"""The end-to-end benchmark's SMTP sink: a real SMTP server (aiosmtpd) in a process of its
own that notes when each message arrives, to whom, and which email it is.

aiosmtpd reads a message's DATA a line at a time and parses each MAIL and RCPT address with
the stdlib's RFC 5322 header parser: 370-470 µs of CPU for one of our emails, a sixth of a
core at 200 conversions/s (two emails each) taken from the services being measured.
:class:`BulkDataSMTP` reads DATA up to its terminating dot in a few reads and takes plain
``<local@domain>`` paths with a regular expression: 157-173 µs (docs/performance.md).
Everything else (greeting, EHLO, replies, unusual addresses) is aiosmtpd's.
"""

from __future__ import annotations

import multiprocessing
import re
import signal
import time
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP
from referral_devstack.net import free_port, wait_for_port

#: ``<local@domain>`` with a dot-atom local part, and what follows it (MAIL/RCPT parameters)
SIMPLE_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+)>\s*(.*)", re.S)
#: the end of DATA: a line holding a single dot (RFC 5321 4.1.1.4)
END_OF_DATA = b"\r\n.\r\n"


def undotted(raw: bytes) -> bytes:
    """DATA as read (up to and including the terminating ``.\\r\\n``) back to the message:
    the terminator dropped and the dot every line starting with one got removed
    (transparency, RFC 5321 4.5.2)."""
    body = b"\r\n" + raw[:-3]  # keeps the last line's CRLF, drops ".\r\n"
    return body.replace(b"\r\n.", b"\r\n")[2:]


class BulkDataSMTP(SMTP):
    """aiosmtpd's server with a DATA command that reads the message in bulk, and a fast path
    for plain ``<local@domain>`` addresses in MAIL and RCPT (aiosmtpd parses each with the
    stdlib's RFC 5322 header parser: ~0.15 ms a command). No size or line-length limits: the
    sink only ever hears the notifier under test."""

    #: the reader's limit, which is also how far readuntil() may look for the terminator
    line_length_limit = 64 << 20

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        simple = SIMPLE_PATH.fullmatch(arg)
        if simple is None or ".." in simple[1] or simple[1].startswith("."):
            return super()._getaddr(arg)  # quoted local parts, source routes, oddities
        return simple[1], simple[2]

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        raw = bytearray()
        # ".\r\n" right away is an empty message; otherwise read until a line is a lone dot
        while raw != b".\r\n" and not raw.endswith(END_OF_DATA):
            raw += await self._reader.readuntil(b".\r\n")
        content = undotted(bytes(raw))
        self.envelope.original_content = content
        self.envelope.content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class BulkDataController(Controller):
    def factory(self) -> SMTP:
        return BulkDataSMTP(self.handler, **self.SMTP_kwargs)


class SinkHandler:
    """aiosmtpd handler in the sink's own process: for every message, when it arrived
    (CLOCK_MONOTONIC, which every process on the machine shares), to whom, which email (from
    the subject), one line each in a file. Only headers are parsed."""

    def __init__(self, path: str) -> None:
        self._out = open(path, "a", buffering=1)
        self._parser = BytesHeaderParser(policy=policy.default)  # decodes RFC 2047 words

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        raw = envelope.original_content or envelope.content
        subject = self._subject(raw if isinstance(raw, bytes) else raw.encode()).lower()
        kind = ("pending" if "pending" in subject else "approved" if "available" in subject
                else "reversed" if "reversed" in subject else "rejected"
                if "not approved" in subject else "other")
        self._out.write("".join(f"{now:.6f}\t{rcpt.lower()}\t{kind}\n"
                                for rcpt in envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def _subject(self, raw: bytes) -> str:
        """The Subject, from its own lines only (the stdlib's parser of the whole header,
        ~0.35 ms a message, was the sink's largest cost): unfolded, encoded words decoded."""
        lines = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        for i, line in enumerate(lines):
            if line[:8].lower() == b"subject:":
                value = line[8:]
                for more in lines[i + 1:]:
                    if more[:1] not in (b" ", b"\t"):
                        break
                    value += more
                text = value.decode("ascii", "replace").strip()
                return str(make_header(decode_header(text))) if "=?" in text else text
        return str(self._parser.parsebytes(raw).get("Subject", ""))


def _sink_process(port: int, path: str) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the server's threads too
    controller = BulkDataController(SinkHandler(path), hostname="127.0.0.1", port=port,
                                    ready_timeout=10)
    controller.start()
    signal.sigwait({signal.SIGTERM})
    controller.stop()


class Sink:
    """The SMTP sink, an aiosmtpd server in a process of its own (in the load generator's
    process its thread would wait for the GIL at every SMTP command and slow the notifier
    down); ``arrivals`` reads what it noted so far."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.path = workdir / "arrivals.tsv"
        self.path.touch()
        self._arrivals: list[tuple[float, str, str]] = []
        self._offset = 0
        self._proc = multiprocessing.get_context("spawn").Process(
            target=_sink_process, args=(self.port, str(self.path)), daemon=True)

    def start(self) -> None:
        self._proc.start()
        wait_for_port("127.0.0.1", self.port, timeout=30, what="SMTP sink")

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(10)

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None, "start() first"
        return self._proc.pid

    @property
    def arrivals(self) -> list[tuple[float, str, str]]:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            at, rcpt, kind = line.split("\t")
            self._arrivals.append((float(at), rcpt, kind))
        return self._arrivals
