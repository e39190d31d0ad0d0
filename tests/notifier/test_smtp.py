"""SMTP failure classification and the bytes put on the wire: pure, no server."""

from __future__ import annotations

from email import message_from_bytes, policy

import aiosmtplib
import pytest
from notifier.catalogue import LOCALES
from notifier.compose import compose, to_mime
from notifier.smtp import (
    PermanentSmtpError,
    TransientSmtpError,
    classify,
    envelope_of,
    wire_bytes,
)
from referral_events import Beneficiary, RewardApproved, RewardPending, RewardRejected

from tests.notifier.support import reward


@pytest.mark.parametrize(("error", "kind"), [
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(451, "later", "a@x")]),
     TransientSmtpError),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@x")]),
     PermanentSmtpError),
    (aiosmtplib.SMTPDataError(452, "storage full"), TransientSmtpError),
    (aiosmtplib.SMTPDataError(554, "message refused"), PermanentSmtpError),
    (aiosmtplib.SMTPSenderRefused(553, "sender refused", "b@x"), PermanentSmtpError),
    # A relay refusing the session refuses every email: wait for it, lose none.
    (aiosmtplib.SMTPConnectResponseError(554, "no service"), TransientSmtpError),
    (aiosmtplib.SMTPHeloError(550, "bad helo"), TransientSmtpError),
    (aiosmtplib.SMTPServerDisconnected("gone"), TransientSmtpError),
    (aiosmtplib.SMTPConnectError("refused"), TransientSmtpError),
    (ConnectionRefusedError(111, "refused"), TransientSmtpError),
    (TimeoutError(), TransientSmtpError),
])
def test_only_a_5xx_about_the_message_is_permanent(error, kind) -> None:
    assert type(classify(error)) is kind


def _wire_round_trip(message):
    return message_from_bytes(wire_bytes(message), policy=policy.default)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("cls", [RewardPending, RewardApproved, RewardRejected])
@pytest.mark.parametrize("beneficiary", list(Beneficiary))
def test_every_subject_survives_the_wire_word_for_word(locale, cls, beneficiary) -> None:
    extra = {"reason": "refund"} if cls is RewardRejected else {}
    email = compose(reward(cls, email="ann@example.com", locale=locale,
                           beneficiary=beneficiary, **extra).data)
    message = to_mime(email, sender="referrals@shop.example", sender_name="Bølle Shop",
                      message_id="<n1@shop.example>")
    raw = wire_bytes(message)
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = _wire_round_trip(message)
    assert parsed["Subject"] == email.subject
    assert parsed["From"].addresses[0].display_name == "Bølle Shop"
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == email.text


def test_envelope_comes_from_the_headers() -> None:
    email = compose(reward(email="Ann.B@Example.com").data)
    message = to_mime(email, sender="referrals@shop.example", sender_name="Shop",
                      message_id="<n1@shop.example>")
    assert envelope_of(message) == ("referrals@shop.example", ["Ann.B@example.com"])
