"""The end-to-end benchmark's SMTP sink (bench.sink) against aiosmtpd's own server: both
real servers on free ports, fed the same sessions by aiosmtplib; every message must arrive
with the same envelope and the same bytes, and the sink must note each recipient."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from referral_devstack.net import free_port

from bench.sink import BulkDataController, Sink, undotted
from tests.support import eventually

HEADERS = b"From: r@localhost\r\nTo: ann@example.com\r\nSubject: Your reward is pending\r\n\r\n"
MESSAGES = {
    "notifier-like": HEADERS + b"Hello Ann,\r\n\r\nYou earned 10.00 EUR.\r\n",
    "dots": HEADERS + b".starts with a dot\r\n..two dots\r\n.\r\nends with a dot.\r\n. \r\n",
    "no trailing CRLF": HEADERS + b"last line",
    "large": HEADERS + b"".join(b"line %06d " % i + b"x" * 60 + b"\r\n" for i in range(3000)),
    "empty": b"",
}


class Keep:
    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos),
                               envelope.original_content))
        return "250 OK"


@pytest.fixture
def servers() -> Iterator[dict[str, tuple[Keep, int]]]:
    started = {}
    for name, kind in (("aiosmtpd", Controller), ("sink", BulkDataController)):
        port = free_port()
        keep = Keep()
        controller = kind(keep, hostname="127.0.0.1", port=port)
        controller.start()
        started[name] = (keep, port, controller)
    yield {name: (keep, port) for name, (keep, port, _) in started.items()}
    for _, _, controller in started.values():
        controller.stop()


@pytest.mark.parametrize("sender, recipients", [
    ("r@localhost", ["ann@example.com"]),
    ("", ["ann+tag@example.com", "bob.b@sub.example.org"]),  # null reverse-path
    ("r@localhost", ['"ann smith"@example.com']),  # quoted local part: aiosmtpd's own parser
])
async def test_same_envelopes_and_bytes_as_aiosmtpd(servers: dict[str, tuple[Keep, int]],
                                                    sender: str, recipients: list[str]) -> None:
    for _, port in servers.values():
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            for raw in MESSAGES.values():
                await client.sendmail(sender, recipients, raw)
    stock, bulk = servers["aiosmtpd"][0].envelopes, servers["sink"][0].envelopes
    assert len(stock) == len(MESSAGES)
    assert bulk == stock


def test_undotted() -> None:
    assert undotted(b".\r\n") == b""
    assert undotted(b"a\r\n.\r\n") == b"a\r\n"
    assert undotted(b"..a\r\nb\r\n..\r\n...c\r\n.\r\n") == b".a\r\nb\r\n.\r\n..c\r\n"


async def test_the_sink_notes_every_recipient_and_which_email(tmp_path: Path) -> None:
    sink = Sink(tmp_path)
    sink.start()
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port) as client:
            await client.sendmail("r@localhost", ["Ann@Example.com", "bob@example.com"],
                                  MESSAGES["dots"])
            await client.sendmail("r@localhost", ["ann@example.com"], HEADERS.replace(
                b"is pending", b"is available") + b"body\r\n")
        arrived = await eventually(lambda: sink.arrivals if len(sink.arrivals) == 3 else None,
                                   message="the sink noted 3 arrivals")
    finally:
        await asyncio.to_thread(sink.stop)
    assert [(rcpt, kind) for _, rcpt, kind in arrived] == [
        ("ann@example.com", "pending"), ("bob@example.com", "pending"),
        ("ann@example.com", "approved")]
