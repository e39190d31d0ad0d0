"""POST /v1/batch against a real broker: per-item results, only valid items published."""

from __future__ import annotations

import uuid

import httpx
import pytest
from referral_events import (
    ClickRecorded,
    CodeSource,
    ConversionRecorded,
    ConversionReversed,
    TopicRegistry,
    derived_id,
)
from referral_events.identity import code_from_click_id, ip_hash
from tracker.app import create_app
from tracker.config import TrackerSettings
from tracker.publisher import BrokerUnavailable

from tests.support import eventually, serve_asgi

from .support import Programme, known_code, publish_registry, random_ref, read_all, secret

PROBLEM = "application/problem+json"


def _order() -> str:
    return f"order-{uuid.uuid4().hex[:8]}"


def _conversion(**fields: object) -> dict[str, object]:
    return {"type": "conversion", "conversion_id": _order(), "customer": {"id": "c-1"},
            "amount": 2500, "currency": "EUR", **fields}


async def test_mixed_batch_reports_every_item_and_publishes_only_the_valid_ones(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry, tracker_settings: TrackerSettings) -> None:
    other = Programme()
    foreign_code = random_ref("X")
    await publish_registry(kafka_bootstrap, topics, other.entry(), other.code_entry(foreign_code))
    await known_code(web, foreign_code)
    conversion = _conversion(code=programme.code)
    reversal = {"type": "reversal", "conversion_id": _order(), "reason": "refund",
                "amount": 500}
    events = [
        {"type": "click", "code": programme.code, "visitor_id": "v-1", "channel": "email",
         "ip": "198.51.100.4", "user_agent": "Mozilla/5.0 (relayed)"},
        conversion,
        reversal,
        _conversion(code=programme.code, amount=-1),
        {"type": "click", "code": random_ref("Z")},
        {"type": "refund", "conversion_id": "x"},
        _conversion(),                                  # neither code nor click_id
        {**conversion, "amount": 9999},                 # same conversion id: a repeat
        {"type": "click", "code": foreign_code},        # another programme's code
        "not an object",
    ]
    response = await web.post("/v1/batch", json={"events": events}, headers=secret(programme))
    assert response.status_code == 202, response.text
    answer = response.json()
    results = answer["results"]
    assert [r["index"] for r in results] == list(range(len(events)))
    assert [r["status"] for r in results] == [
        "accepted", "accepted", "accepted", "rejected", "rejected", "rejected", "rejected",
        "duplicate", "rejected", "rejected"]
    assert answer["counts"] == {"accepted": 3, "duplicate": 1, "rejected": 6, "unavailable": 0}
    click_id = results[0]["click_id"]
    assert code_from_click_id(click_id) == programme.code
    assert "error" not in results[0] and "click_id" not in results[1]
    rejected = {r["index"]: r["error"] for r in results if r["status"] == "rejected"}
    assert {i: (e["status"], e["field"]) for i, e in rejected.items()} == {
        3: (422, "events[3].amount"), 4: (422, "events[4].code"), 5: (422, "events[5].type"),
        6: (422, "events[6].code"), 8: (403, "events[8].code"), 9: (422, "events[9]")}
    for error in rejected.values():
        assert error["title"] and error["detail"].startswith(f"{error['field']}: ")

    # Exactly the accepted events are on their topics, keyed and enveloped as singles are.
    [click] = await read_all(kafka_bootstrap, topics.clicks)
    assert click.key == programme.code and isinstance(click.envelope.data, ClickRecorded)
    assert click.envelope.id == derived_id("click", click_id)
    salt = tracker_settings.ip_hash_salt.get_secret_value()
    assert (click.envelope.data.click_id, click.envelope.data.channel) == (click_id, "email")
    assert click.envelope.data.ip_hash == ip_hash("198.51.100.4", salt)
    assert click.envelope.data.user_agent == "Mozilla/5.0 (relayed)"
    [recorded] = await read_all(kafka_bootstrap, topics.conversions)
    data = recorded.envelope.data
    assert isinstance(data, ConversionRecorded) and recorded.key == programme.code
    assert (data.conversion_id, data.amount, data.code_source) == (
        conversion["conversion_id"], 2500, CodeSource.CODE)
    assert recorded.envelope.id == derived_id("conversion", programme.program_id,
                                              str(conversion["conversion_id"]))
    [reversed_] = await read_all(kafka_bootstrap, topics.reversals)
    assert isinstance(reversed_.envelope.data, ConversionReversed)
    assert reversed_.key == f"{programme.program_id}:{reversal['conversion_id']}"

    # The same batch again: repeats are duplicates (the click keeps its id), nothing new.
    again = await web.post("/v1/batch", json={"events": events[:3]}, headers=secret(programme))
    assert again.status_code == 202
    assert [(r["status"], r.get("click_id")) for r in again.json()["results"]] == [
        ("duplicate", click_id), ("duplicate", None), ("duplicate", None)]
    assert len(await read_all(kafka_bootstrap, topics.clicks)) == 1
    assert len(await read_all(kafka_bootstrap, topics.conversions)) == 1


async def test_batch_size_is_bounded_and_named(web: httpx.AsyncClient,
                                               programme: Programme) -> None:
    too_many = [_conversion(code=programme.code) for _ in range(1001)]
    response = await web.post("/v1/batch", json={"events": too_many}, headers=secret(programme))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["field"] == "events" and "1000" in response.json()["detail"]
    empty = await web.post("/v1/batch", json={"events": []}, headers=secret(programme))
    assert empty.status_code == 422 and empty.json()["field"] == "events"
    shapeless = await web.post("/v1/batch", json={"clicks": []}, headers=secret(programme))
    assert shapeless.status_code == 422 and shapeless.json()["field"] == "events"


async def test_batch_needs_the_secret_key(web: httpx.AsyncClient, programme: Programme) -> None:
    body = {"events": [_conversion(code=programme.code)]}
    anonymous = await web.post("/v1/batch", json=body)
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == PROBLEM
    assert "Authorization" in anonymous.json()["detail"]
    publishable = await web.post("/v1/batch", json=body, headers={
        "Authorization": f"Bearer {programme.publishable_key}"})
    assert publishable.status_code == 403 and "secret key" in publishable.json()["detail"]
    unknown = await web.post("/v1/batch", json=body, headers={"Authorization": "Bearer sk_nope"})
    assert unknown.status_code == 401


async def test_malformed_requests_get_problem_details(web: httpx.AsyncClient,
                                                      programme: Programme) -> None:
    cases = [
        (await web.post("/v1/batch", content=b'{"events": [', headers={
            **secret(programme), "Content-Type": "application/json"}), 422),
        (await web.post("/v1/batch", json=[{"type": "click"}], headers=secret(programme)), 422),
        (await web.get("/v1/batch"), 405),
        (await web.post("/v1/nothing-here", json={}), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["detail"]


async def test_partly_unacknowledged_batch_is_202_with_the_unavailable_items_to_resend(
        tracker_settings: TrackerSettings, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(tracker_settings)
    publisher = app.state.runtime.publisher
    publish_all = publisher.publish_all

    async def every_second_event_lost(messages):  # type: ignore[no-untyped-def]
        kept = await publish_all(messages[::2])
        outcomes = [BrokerUnavailable("injected: no ack")] * len(messages)
        outcomes[::2] = kept
        return outcomes

    monkeypatch.setattr(publisher, "publish_all", every_second_event_lost)
    events = [_conversion(code=programme.code) for _ in range(4)]
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=15) as web:
        await eventually(lambda: _ready(web), timeout=30, message="tracker never ready")
        response = await web.post("/v1/batch", json={"events": events},
                                  headers=secret(programme))
        assert response.status_code == 202, response.text
        assert response.headers["retry-after"] == str(tracker_settings.retry_after_seconds)
        results = response.json()["results"]
        assert [r["status"] for r in results] == ["accepted", "unavailable"] * 2
        assert results[1]["error"]["status"] == 503 and results[1]["error"]["retry_after"]

        # Only the acknowledged ones are remembered: re-sending the batch records the rest.
        monkeypatch.setattr(publisher, "publish_all", publish_all)
        again = await web.post("/v1/batch", json={"events": events}, headers=secret(programme))
        assert [r["status"] for r in again.json()["results"]] == ["duplicate", "accepted"] * 2
        assert "retry-after" not in again.headers
    recorded = await read_all(kafka_bootstrap, topics.conversions)
    assert sorted(r.envelope.data.conversion_id for r in recorded) == sorted(
        str(e["conversion_id"]) for e in events)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
