"""An email's bytes on the wire, written directly: the same message as
``wire_bytes(to_mime(...))`` at a fraction of the cost.

Building an ``EmailMessage`` under the modern policy and flattening it cost ~1.9 ms an email,
40 % of the notifier's CPU under load (py-spy): every header assignment parses the value
and creates a header class. What we send has one fixed shape, so it is written here with
the stdlib's encoders (``binascii.b2a_qp`` for the bodies, RFC 2047 base64 words for
non-ASCII subjects, ``email.utils`` for the date; the From line, the same for every email, is
the stdlib's own, cached):

    headers (From, To, Subject, Date, Message-ID, Auto-Submitted, [List-Unsubscribe,
    List-Unsubscribe-Post], MIME-Version, Content-Type, Content-Language)
    multipart/alternative: text/plain then text/html, both UTF-8, quoted-printable

A recipient that is not plain ASCII (SMTPUTF8) goes through :func:`to_mime` and the stdlib
flattener instead. tests/notifier/test_wire.py parses both forms of every template in every
locale, and of arbitrary text, and requires the same message. Where they differ, the stdlib
is the one at fault: it drops a blank subject's spaces, and for a subject with a control
character it raises (CR, LF) or writes a bare LF into the header block; here such text is
sent as encoded words, intact.
"""

from __future__ import annotations

import base64
import binascii
import functools
import secrets
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from referral_events import utcnow

from .compose import Email, to_mime
from .smtp import WireMessage, envelope_of, wire_bytes

_MAX_HEADER = 900  # a header line stays far below SMTP's 998 octets
_WORD_BYTES = 45  # per encoded word: 60 base64 characters, 72 with the markers


def _plain(value: str) -> bool:
    """Printable ASCII only (no CR/LF or other controls), short, and no encoded-word start."""
    return value.isascii() and value.isprintable() and len(value) <= _MAX_HEADER \
        and "=?" not in value


def _words(value: str) -> str:
    """``value`` as RFC 2047 encoded words (UTF-8, base64: every character survives)."""
    words, chunk, size = [], [], 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    words.append("".join(chunk))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode()}?="
                          for w in words)


def _text(value: str) -> str:
    """Unstructured header text (the subject): as it is when plain, else encoded words,
    so that no character of it (a line break in a programme's name…) reaches the wire raw."""
    if _plain(value) and value == value.strip() and "  " not in value:
        return value
    return _words(value)


@functools.lru_cache(maxsize=64)
def _from_header(name: str, address: str) -> str:
    """The From line exactly as the stdlib writes it: the sender is one configured value, so
    the stdlib's (slow) address encoding is paid once."""
    message = EmailMessage()
    message["From"] = formataddr((name, address))
    return wire_bytes(message).decode("ascii").split("\r\n", 1)[0]


def _qp(text: str) -> bytes:
    # Lines as the stdlib's set_content makes them: any of CR, LF, CRLF ends a line, and
    # the last line ends too.
    lines = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    return binascii.b2a_qp(lines, istext=True).replace(b"\n", b"\r\n")


def to_wire(email: Email, *, sender: str, sender_name: str, message_id: str,
            unsubscribe_url: str | None = None) -> WireMessage:
    """``email`` as a multipart/alternative message (text first, HTML preferred by readers
    that can), with the one-click unsubscribe headers when ``unsubscribe_url`` is given."""
    fixed = (email.recipient, sender, message_id, email.locale, unsubscribe_url or "")
    if not all(_plain(value) for value in fixed):
        # a recipient beyond ASCII (SMTPUTF8), or a value of ours that is not plain
        message = to_mime(email, sender=sender, sender_name=sender_name,
                          message_id=message_id, unsubscribe_url=unsubscribe_url)
        envelope_sender, recipients = envelope_of(message)
        return WireMessage(envelope_sender, tuple(recipients), wire_bytes(message))
    boundary = f"=_{secrets.token_hex(16)}"  # "=_" never occurs in quoted-printable text
    lines = [
        _from_header(sender_name, sender),
        f"To: {email.recipient}",
        f"Subject: {_text(email.subject)}",
        f"Date: {format_datetime(utcnow())}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-generated",
    ]
    if unsubscribe_url:
        lines += [f"List-Unsubscribe: <{unsubscribe_url}>",
                  "List-Unsubscribe-Post: List-Unsubscribe=One-Click"]
    lines += [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        f"Content-Language: {email.locale}",
        "",
    ]
    head = "\r\n".join(lines).encode("ascii")
    parts = b"".join(
        b"\r\n--" + boundary.encode() + b"\r\n"
        + f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode()
        + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + _qp(body)
        for subtype, body in (("plain", email.text), ("html", email.html)))
    data = head + parts + b"\r\n--" + boundary.encode() + b"--\r\n"
    return WireMessage(sender, (email.recipient,), data)
