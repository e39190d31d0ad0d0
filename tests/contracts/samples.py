"""One valid sample per event type (used by round-trip and property tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import referral_events as ev
from referral_events.identity import email_hash, key_hash, new_click_id

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CUSTOMER = ev.Customer(id="cust-9", email="friend@example.org", is_new=True)
REWARD = dict(reward_id="rwd_1", program_id="prg_1", program_name="Demo", program_locale="nl",
              referrer_id="ref_1", beneficiary=ev.Beneficiary.REFERRER,
              recipient=ev.Recipient(email="ann@example.com", name="Ann", locale="nl"),
              conversion_id="order-1", kind=ev.RewardKind.CASH, amount=1000, currency="EUR",
              occurred_at=NOW)
SIGNAL = ev.FraudSignal(signal="velocity", value=12, threshold=10, action=ev.FraudAction.FLAG)
NOTE = dict(notification_id="ntf_1", source_event_id="evt_1", recipient_hash=email_hash("a@b.c"),
            template="reward_pending", locale="en", occurred_at=NOW)

SAMPLES: list[ev.EventData] = [
    ev.ClickRecorded(click_id=new_click_id("K7Q2MX"), program_id="prg_1", code="K7Q2MX",
                     channel="whatsapp", utm={"utm_source": "newsletter"}, ip_hash="ab" * 16,
                     user_agent="Mozilla/5.0", occurred_at=NOW),
    ev.ConversionRecorded(program_id="prg_1", conversion_id="order-1", code="K7Q2MX",
                          code_source=ev.CodeSource.CLICK_ID, click_id=new_click_id("K7Q2MX"),
                          customer=CUSTOMER, amount=4999, currency="EUR", occurred_at=NOW),
    ev.ConversionReversed(program_id="prg_1", conversion_id="order-1",
                          reason=ev.ReversalReason.REFUND, amount=4999, occurred_at=NOW),
    ev.ReferralAttributed(program_id="prg_1", conversion_id="order-1", referrer_id="ref_1",
                          code="K7Q2MX", click_id="clk_K7Q2MX_x", channel="email",
                          attribution_model=ev.AttributionModel.LAST_CLICK, customer=CUSTOMER,
                          amount=4999, currency="EUR", clicked_at=NOW - timedelta(hours=2),
                          converted_at=NOW, click_to_conversion_seconds=7200.0, decided_at=NOW),
    ev.ReferralRejected(program_id="prg_1", conversion_id="order-2", code="NOPE",
                        reason=ev.RejectionReason.UNKNOWN_CODE, detail="no such code",
                        amount=100, currency="EUR", converted_at=NOW, decided_at=NOW),
    ev.AttributionGraceExpired(program_id="prg_1", code="K7Q2MX", conversion_ids=["order-1"],
                               expired_at=NOW),
    ev.ReferralStatsCounted(program_id="prg_1", code="K7Q2MX", channel="email",
                            hour=NOW.replace(minute=0, second=0, microsecond=0), clicks=12,
                            conversions=3, attributed=2,
                            rejected={ev.RejectionReason.SELF_REFERRAL: 1}, revenue=9998,
                            version=15),
    ev.RewardPending(**REWARD, available_at=NOW + timedelta(days=14)),
    ev.RewardInReview(**REWARD, fraud_signals=[SIGNAL]),
    ev.RewardApproved(**REWARD, expires_at=NOW + timedelta(days=365)),
    ev.RewardRejected(**REWARD, reason="cap_reached"),
    ev.RewardReversed(**REWARD, reason="refund", clawback_amount=1000),
    ev.NotificationSent(**NOTE, message_id="<ntf_1@referrals.local>"),
    ev.NotificationFailed(**NOTE, error="550 mailbox unavailable", permanent=True),
    ev.ProgramEntry(program_id="prg_1", name="Demo", landing_url="https://shop.example/",
                    currency="EUR", publishable_key_hash=key_hash("pk_x"),
                    secret_key_hash=key_hash("sk_x"), version=3, updated_at=NOW),
    ev.ReferralCodeEntry(code="K7Q2MX", program_id="prg_1", referrer_id="ref_1",
                         referrer_external_id="cust-1", referrer_email_hash=email_hash("a@b.c"),
                         version=1, updated_at=NOW),
    ev.EventDeadLettered(original_topic="referral.clicks", partition=0, offset=7,
                         original_value="{", error_code="malformed", reason="not JSON",
                         consumer="attribution", failed_at=NOW),
]
