"""A real Faust worker process against the real broker."""

from __future__ import annotations

import uuid

import pytest
from referral_events import (
    ClickRecorded,
    CodeSource,
    ConversionRecorded,
    Customer,
    EventDeadLettered,
    ProgramEntry,
    ReferralAttributed,
    ReferralCodeEntry,
    ReferralRejected,
    RejectionReason,
    new_event,
    utcnow,
)
from referral_events.identity import email_hash, key_hash, new_click_id

from tests.support import free_port
from tests.support.kafka import collect, of_type, publish


@pytest.fixture
async def worker(platform_env, run_service):
    port = free_port()
    env = {**platform_env, "ATTRIBUTION_WEB_PORT": str(port), "ATTRIBUTION_GRACE_SECONDS": "2"}
    return await run_service("attribution", [".venv/bin/attribution"], env, port=port,
                             timeout=90)


async def _registry(bootstrap, topics, code: str, *more: str) -> None:
    now = utcnow()
    program = ProgramEntry(program_id="prg_1", name="Shop", landing_url="https://shop.example/",
                           currency="EUR", publishable_key_hash=key_hash("pk"),
                           secret_key_hash=key_hash("sk"), version=1, updated_at=now)
    entry = ReferralCodeEntry(code=code, program_id="prg_1", referrer_id="ref_1",
                              referrer_external_id="cust-ann",
                              referrer_email_hash=email_hash("ann@example.com"), version=1,
                              updated_at=now)
    entries = [entry] + [entry.model_copy(update={"code": c}) for c in more]
    await publish(bootstrap, topics.registry.name,
                  (program.registry_key(), new_event(program, source="test")),
                  *[(e.registry_key(), new_event(e, source="test")) for e in entries])


def _conversion(code: str, *, click_id: str | None = None, conversion_id: str | None = None,
                amount: int = 4999):
    return new_event(ConversionRecorded(
        program_id="prg_1", conversion_id=conversion_id or f"o-{uuid.uuid4().hex[:8]}",
        code=code, code_source=CodeSource.CLICK_ID if click_id else CodeSource.CODE,
        click_id=click_id, customer=Customer(id="cust-bob", email="bob@example.org", is_new=True),
        amount=amount, currency="EUR", occurred_at=utcnow()), source="tracker")


def _decisions(events, conversion_id):
    return [e for e in events
            if isinstance(e.data, ReferralAttributed | ReferralRejected)
            and e.data.conversion_id == conversion_id]


async def test_click_then_conversion_is_attributed(worker, kafka_bootstrap, topics):
    code = "K7Q2MX"
    await _registry(kafka_bootstrap, topics, code)
    click = ClickRecorded(click_id=new_click_id(code), program_id="prg_1", code=code,
                          channel="whatsapp", occurred_at=utcnow())
    conversion = _conversion(code, click_id=click.click_id)
    await publish(kafka_bootstrap, topics.clicks.name, (code, new_event(click, source="tracker")))
    await publish(kafka_bootstrap, topics.conversions.name, (code, conversion))
    events = await collect(kafka_bootstrap, topics.attributions.name, timeout=60,
                           until=lambda ev: bool(_decisions(ev, conversion.data.conversion_id)))
    [decision] = _decisions(events, conversion.data.conversion_id)
    data = decision.data
    assert isinstance(data, ReferralAttributed), data
    assert (data.referrer_id, data.click_id, data.channel) == ("ref_1", click.click_id,
                                                               "whatsapp")
    assert data.click_to_conversion_seconds is not None and data.click_to_conversion_seconds >= 0
    assert decision.subject == data.conversion_id


async def test_rejections_duplicates_and_poison(worker, kafka_bootstrap, topics):
    code = "P4RT7Y"
    await _registry(kafka_bootstrap, topics, code)
    unknown = _conversion("NOSUCH")
    first = _conversion(code)  # code-only: attributed
    again = _conversion(code, conversion_id=first.data.conversion_id, amount=1)
    await publish(kafka_bootstrap, topics.conversions.name, ("NOSUCH", unknown),
                  (code, b"{broken"), (code, first), (code, first), (code, again))
    ids = [unknown.data.conversion_id, first.data.conversion_id]

    def done(events):
        return len(_decisions(events, ids[0])) == 1 and len(_decisions(events, ids[1])) >= 3

    events = await collect(kafka_bootstrap, topics.attributions.name, timeout=60, until=done)
    [rejected] = _decisions(events, ids[0])
    assert rejected.data.reason is RejectionReason.UNKNOWN_CODE
    decisions = _decisions(events, ids[1])
    attributed = [d for d in decisions if isinstance(d.data, ReferralAttributed)]
    # The redelivered event yields the very same decision (same id): rewards drops it.
    assert len(attributed) == 2 and attributed[0].id == attributed[1].id
    assert attributed[0].data.channel == "code"
    [duplicate] = [d for d in decisions if isinstance(d.data, ReferralRejected)]
    assert duplicate.data.reason is RejectionReason.DUPLICATE
    assert duplicate.id != attributed[0].id

    dead = of_type(await collect(kafka_bootstrap, topics.conversions.dead_letter,
                                 until=lambda ev: bool(ev)), EventDeadLettered)
    assert dead[0].original_value == "{broken" and dead[0].consumer == "attribution"


async def test_conversion_before_its_click_waits_for_it(worker, kafka_bootstrap, topics):
    code, lonely = "L8T3CK", "N0CL1K"
    await _registry(kafka_bootstrap, topics, code, lonely)
    click = ClickRecorded(click_id=new_click_id(code), program_id="prg_1", code=code,
                          channel="sms", occurred_at=utcnow())
    early = _conversion(code, click_id=click.click_id)
    orphan = _conversion(lonely, click_id=new_click_id(lonely))  # no click of it ever comes
    await publish(kafka_bootstrap, topics.conversions.name, (code, early), (lonely, orphan))
    await publish(kafka_bootstrap, topics.clicks.name, (code, new_event(click, source="tracker")))
    ids = [early.data.conversion_id, orphan.data.conversion_id]
    events = await collect(kafka_bootstrap, topics.attributions.name, timeout=60,
                           until=lambda ev: all(_decisions(ev, i) for i in ids))
    [waited] = _decisions(events, ids[0])
    assert isinstance(waited.data, ReferralAttributed)
    assert (waited.data.click_id, waited.data.channel) == (click.click_id, "sms")
    [fallback] = _decisions(events, ids[1])  # grace (2 s here) over: code-only credit
    assert isinstance(fallback.data, ReferralAttributed) and fallback.data.channel == "code"
