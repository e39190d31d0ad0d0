"""The contracts package: every event round-trips; every bad input is a typed error naming the
field."""

from __future__ import annotations

import json

import pytest
import referral_events as ev
from referral_events.identity import code_from_click_id, new_click_id, normalize_email

from .samples import NOW, SAMPLES


def test_every_catalogued_event_has_a_sample() -> None:
    assert {type(s).event_type for s in SAMPLES} == set(ev.catalogue())


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: d.event_type)
def test_round_trip(data: ev.EventData) -> None:
    envelope = ev.new_event(data, source="test")
    decoded = ev.decode(ev.encode(envelope))
    assert decoded.data == data
    assert type(decoded.data) is type(data)
    assert (decoded.id, decoded.type, decoded.schemaversion) == (
        envelope.id, data.event_type, data.schema_version)
    assert decoded.subject == data.subject()


def test_envelope_has_cloudevents_attributes() -> None:
    doc = json.loads(ev.encode(ev.new_event(SAMPLES[0], source="tracker", time=NOW)))
    assert doc["specversion"] == "1.0"
    assert {"id", "source", "type", "time", "subject", "data", "schemaversion"} <= doc.keys()
    assert doc["time"].endswith("Z")


def _doc() -> dict:
    return json.loads(ev.encode(ev.new_event(SAMPLES[1], source="test")))


@pytest.mark.parametrize(
    ("raw", "error", "field"),
    [
        (None, ev.MalformedEvent, None),
        (b"", ev.MalformedEvent, None),
        (b"\xff\xfe", ev.MalformedEvent, None),
        (b"{not json", ev.MalformedEvent, None),
        (b"[1, 2]", ev.MalformedEvent, None),
        (b"x" * (ev.MAX_EVENT_BYTES + 1), ev.MalformedEvent, None),
        (json.dumps({**_doc(), "specversion": "0.3"}).encode(), ev.InvalidEnvelope, "specversion"),
        (json.dumps({**_doc(), "type": "referral.nope"}).encode(), ev.UnknownEventType, "type"),
        (json.dumps({**_doc(), "schemaversion": 99}).encode(), ev.UnsupportedSchemaVersion,
         "schemaversion"),
        (json.dumps({**_doc(), "data": None}).encode(), ev.InvalidEventData, "data"),
        (json.dumps({**_doc(), "data": {**_doc()["data"], "amount": -5}}).encode(),
         ev.InvalidEventData, "data.amount"),
        (json.dumps({**_doc(), "data": {**_doc()["data"], "currency": "euro"}}).encode(),
         ev.InvalidEventData, "data.currency"),
        (json.dumps({**_doc(), "data": {**_doc()["data"], "customer": {"email": "x@y.z"}}}
                    ).encode(), ev.InvalidEventData, "data.customer.id"),
        (json.dumps({**_doc(), "data": {**_doc()["data"], "occurred_at": "2026-11-22T10:00:00"}}
                    ).encode(), ev.InvalidEventData, "data.occurred_at"),
        (json.dumps({**_doc(), "data": {**_doc()["data"], "surprise": 1}}).encode(),
         ev.InvalidEventData, "data.surprise"),
        (json.dumps({**_doc(), "id": ""}).encode(), ev.InvalidEnvelope, "id"),
    ],
)
def test_bad_input_is_a_typed_error_naming_the_field(raw, error, field) -> None:
    with pytest.raises(error) as caught:
        ev.decode(raw)
    assert isinstance(caught.value, ev.EventError)
    assert caught.value.field == field
    assert caught.value.reason
    assert caught.value.code


def test_derived_ids_are_stable_and_distinct() -> None:
    first = ev.derived_id("attribution", "prg_1", "o-1")
    assert first == ev.derived_id("attribution", "prg_1", "o-1")
    assert first != ev.derived_id("attribution", "prg_1", "o-2")


def test_click_id_carries_its_code() -> None:
    for code in ["K7Q2MX", "with_underscore", "a-b"]:
        click_id = new_click_id(code)
        assert code_from_click_id(click_id) == code
    assert code_from_click_id("somebody-elses-id") is None
    assert code_from_click_id("clk_") is None


@pytest.mark.parametrize(
    ("email", "normal"),
    [
        ("J.Doe+promo@GMail.com", "jdoe@gmail.com"),
        ("j.doe@googlemail.com", "jdoe@gmail.com"),
        ("Ann+x@outlook.com", "ann@outlook.com"),
        ("first.last+tag@example.org", "first.last+tag@example.org"),
    ],
)
def test_email_normalisation(email: str, normal: str) -> None:
    assert normalize_email(email) == normal


def test_topic_registry_prefixes_and_copartitions() -> None:
    topics = ev.TopicRegistry("t1.")
    assert topics.clicks.name == "t1.referral.clicks"
    assert topics.clicks.partitions == topics.conversions.partitions
    assert topics.registry.compacted and topics.registry.partitions == 1
    assert all(t.dead_letter == f"{t.name}.dlq" for t in topics.topics())
    names = [t.name for t in topics.all()]
    assert len(names) == len(set(names))
    with pytest.raises(ValueError, match="TOPIC_PREFIX"):
        ev.TopicRegistry("bad prefix!")
