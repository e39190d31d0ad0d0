"""POST /v1/clicks, /v1/conversions, /v1/reversals against a real broker."""

from __future__ import annotations

import uuid

import httpx
from referral_events import (
    ClickRecorded,
    CodeSource,
    ConversionRecorded,
    ConversionReversed,
    TopicRegistry,
    derived_id,
)
from referral_events.identity import ip_hash, new_click_id
from tracker.config import TrackerSettings

from tests.support import eventually

from .support import Programme, TopicReader, publish_registry, random_ref

PROBLEM = "application/problem+json"


def _conversion(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "conversion_id": f"order-{uuid.uuid4().hex[:8]}",
        "customer": {"id": "cust-friend", "email": "friend@example.org", "is_new": True},
        "amount": 4999, "currency": "EUR",
    }
    body.update(overrides)
    return body


def _secret(programme: Programme) -> dict[str, str]:
    return {"Authorization": f"Bearer {programme.secret_key}"}


async def test_conversion_by_click_id_is_keyed_by_its_code_and_replays_are_duplicates(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry, tracker_settings: TrackerSettings) -> None:
    click_id = new_click_id(programme.code)
    body = _conversion(click_id=click_id, ip="203.0.113.9", device_id="dev-1")
    response = await web.post("/v1/conversions", json=body, headers=_secret(programme))
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted"}

    async with TopicReader(kafka_bootstrap, topics.conversions.name) as conversions:
        got = await conversions.wait_for(
            lambda e: e.data.conversion_id == body["conversion_id"],
            message="ConversionRecorded never reached the conversions topic")
        data = got.envelope.data
        assert isinstance(data, ConversionRecorded) and got.key == programme.code
        assert (data.program_id, data.code, data.code_source, data.click_id) == (
            programme.program_id, programme.code, CodeSource.CLICK_ID, click_id)
        assert (data.amount, data.currency, data.customer.id) == (4999, "EUR", "cust-friend")
        assert data.ip_hash == ip_hash("203.0.113.9",
                                       tracker_settings.ip_hash_salt.get_secret_value())
        assert got.envelope.id == derived_id("conversion", programme.program_id,
                                             str(body["conversion_id"]))

        again = await web.post("/v1/conversions", json=body, headers=_secret(programme))
        assert again.status_code == 202 and again.json() == {"status": "duplicate"}


async def test_conversion_by_code_is_accepted_whatever_the_code(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    body = _conversion(code="NOT-A-KNOWN-CODE", currency="eur")
    response = await web.post("/v1/conversions", json=body, headers=_secret(programme))
    assert response.status_code == 202 and response.json() == {"status": "accepted"}
    async with TopicReader(kafka_bootstrap, topics.conversions.name) as conversions:
        got = await conversions.wait_for(
            lambda e: e.data.conversion_id == body["conversion_id"],
            message="conversion with an unknown code was not published")
    assert got.key == "NOT-A-KNOWN-CODE"
    assert got.envelope.data.code_source is CodeSource.CODE
    assert got.envelope.data.currency == "EUR"


async def test_invalid_conversions_get_422_naming_the_field(
        web: httpx.AsyncClient, programme: Programme) -> None:
    cases = [
        (_conversion(), "code"),
        (_conversion(click_id="order-17"), "click_id"),
        (_conversion(code="OTHER", click_id=new_click_id(programme.code)), "click_id"),
        (_conversion(code=programme.code, amount=-1), "amount"),
        (_conversion(code=programme.code, currency="euro"), "currency"),
        (_conversion(code=programme.code, customer={}), "customer.id"),
        (_conversion(code=programme.code, ip="not-an-ip"), "ip"),
        (_conversion(code=programme.code, occurred_at="2026-11-22T10:00:00"), "occurred_at"),
    ]
    for body, field in cases:
        response = await web.post("/v1/conversions", json=body, headers=_secret(programme))
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["field"] == field, problem
        assert field.split(".")[0] in problem["detail"]


async def test_keys_are_checked_for_kind_and_programme(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    body = _conversion(code=programme.code)
    missing = await web.post("/v1/conversions", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == PROBLEM and "Authorization" in missing.json()[
        "detail"]
    unknown = await web.post("/v1/conversions", json=body,
                             headers={"Authorization": "Bearer sk_unknown"})
    assert unknown.status_code == 401
    not_bearer = await web.post("/v1/conversions", json=body,
                                headers={"Authorization": f"Basic {programme.secret_key}"})
    assert not_bearer.status_code == 401

    publishable = await web.post("/v1/conversions", json=body, headers={
        "Authorization": f"Bearer {programme.publishable_key}"})
    assert publishable.status_code == 403 and "secret key" in publishable.json()["detail"]
    reversal = await web.post("/v1/reversals", headers={
        "Authorization": f"Bearer {programme.publishable_key}"},
        json={"conversion_id": "order-1", "reason": "refund"})
    assert reversal.status_code == 403
    secret_as_publishable = await web.post("/v1/clicks", json={"code": programme.code},
                                           headers={"X-Publishable-Key": programme.secret_key})
    assert secret_as_publishable.status_code == 403

    # A key of programme B cannot record a click for a code of programme A.
    other = Programme()
    await publish_registry(kafka_bootstrap, topics, other.entry())
    await _until_known(web, other)
    foreign = await web.post("/v1/clicks", json={"code": programme.code},
                             headers={"X-Publishable-Key": other.publishable_key})
    assert foreign.status_code == 403 and foreign.json()["field"] == "code"


async def test_click_api_records_a_click_with_the_page_utm(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    response = await web.post("/v1/clicks", headers={
        "X-Publishable-Key": programme.publishable_key}, json={
        "code": programme.code, "visitor_id": "v-123", "channel": "QR",
        "url": "https://shop.example/landing?utm_campaign=spring"})
    assert response.status_code == 202, response.text
    click_id = response.json()["click_id"]
    async with TopicReader(kafka_bootstrap, topics.clicks.name) as clicks:
        got = await clicks.wait_for(lambda e: e.data.click_id == click_id,
                                    message="API click never reached the clicks topic")
    data = got.envelope.data
    assert isinstance(data, ClickRecorded) and got.key == programme.code
    assert (data.channel, data.utm) == ("qr", {"utm_campaign": "spring"})
    assert data.visitor_hash and data.visitor_hash != "v-123"

    unknown = await web.post("/v1/clicks", json={"code": random_ref("Z")},
                             headers={"X-Publishable-Key": programme.publishable_key})
    assert unknown.status_code == 422 and unknown.json()["field"] == "code"
    anonymous = await web.post("/v1/clicks", json={"code": programme.code})
    assert anonymous.status_code == 401


async def test_reversal_is_published_keyed_by_programme_and_conversion(
        web: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    body = {"conversion_id": f"order-{uuid.uuid4().hex[:8]}", "reason": "chargeback",
            "amount": 1500}
    response = await web.post("/v1/reversals", json=body, headers=_secret(programme))
    assert response.status_code == 202 and response.json() == {"status": "accepted"}
    again = await web.post("/v1/reversals", json=body, headers=_secret(programme))
    assert again.json() == {"status": "duplicate"}
    async with TopicReader(kafka_bootstrap, topics.reversals.name) as reversals:
        got = await reversals.wait_for(lambda e: e.data.conversion_id == body["conversion_id"],
                                       message="ConversionReversed never reached its topic")
    data = got.envelope.data
    assert isinstance(data, ConversionReversed)
    assert got.key == f"{programme.program_id}:{body['conversion_id']}"
    assert (data.reason.value, data.amount) == ("chargeback", 1500)

    bad = await web.post("/v1/reversals", json={**body, "reason": "regret"},
                         headers=_secret(programme))
    assert bad.status_code == 422 and bad.json()["field"] == "reason"


async def test_metrics_count_what_the_tracker_did(web: httpx.AsyncClient,
                                                  programme: Programme) -> None:
    await web.get(f"/r/{programme.code}")
    metrics = (await web.get("/metrics")).text
    assert 'tracker_clicks_total{via="link"}' in metrics
    assert "tracker_publish_seconds_count" in metrics


async def _until_known(web: httpx.AsyncClient, programme: Programme) -> None:
    async def known() -> bool:
        response = await web.post("/v1/conversions", json={}, headers=_secret(programme))
        return response.status_code == 422  # authenticated, then refused for the body

    await eventually(known, message="the tracker never learnt the new programme")
