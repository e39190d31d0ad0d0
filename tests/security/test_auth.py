"""Authentication and authorisation: admin token on every admin endpoint (enumerated from the
OpenAPI), key kinds and programme scope on the tracker, unsubscribe tokens bound to their
recipient and programme."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest
from attribution.rules import decide
from notifier.unsubscribe import Category, Subscription, UnsubscribeTokens
from referral_events import RejectionReason
from rewards.api.app import create_app

from tests.notifier.support import address, reward
from tests.support import eventually, serve_asgi
from tests.support.kafka import collect, publish
from tests.tracker.support import (
    Programme,
    known_code,
    publish_registry,
    publishable,
    random_ref,
    secret,
)

WRITES = {
    "/v1/conversions": {"conversion_id": "o-1", "code": "X", "customer": {"id": "c-1"},
                        "amount": 100, "currency": "EUR"},
    "/v1/reversals": {"conversion_id": "o-1", "reason": "refund"},
    "/v1/batch": {"events": [{"type": "reversal", "conversion_id": "o-1", "reason": "refund"}]},
}


def _problem(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response
    body = response.json()
    assert body["detail"], body
    return body


async def test_every_admin_endpoint_refuses_missing_and_wrong_tokens(rewards_settings,
                                                                     admin_token):
    async with serve_asgi(create_app(rewards_settings)) as url, httpx.AsyncClient(
            base_url=url) as client:
        schema = (await client.get("/openapi.json")).json()
        operations = [(method.upper(), path) for path, item in schema["paths"].items()
                      for method, op in item.items() if op.get("security")]
        assert len(operations) >= 12, operations  # the contract's admin API and then some
        for method, path in operations:
            concrete = re.sub(r"\{[^}]+\}", "prg_doesnotmatter", path)
            body = {} if method in ("POST", "PATCH", "PUT") else None
            for headers in ({}, {"Authorization": "Bearer wrong-" + admin_token},
                            {"Authorization": admin_token},  # not a Bearer credential
                            {"Authorization": "Basic dXNlcjpwYXNz"},
                            {"Cookie": "rewards_session=forged.cookie.value"}):
                response = await client.request(method, concrete, headers=headers, json=body)
                _problem(response, 401, 403)
        # ...and the real token does open them (the refusal is the token's doing).
        ok = await client.get("/v1/programs",
                              headers={"Authorization": f"Bearer {admin_token}"})
        assert ok.status_code == 200, ok.text


@pytest.fixture
async def other_programme(kafka_bootstrap, topics) -> Programme:
    other = Programme()
    other.code = random_ref("B")  # type: ignore[attr-defined]
    await publish_registry(kafka_bootstrap, topics, other.entry(), other.code_entry(other.code))
    return other


async def test_publishable_keys_cannot_write_server_side_events(web, programme):
    for path, body in WRITES.items():
        body = {**body, "code": programme.code} if path == "/v1/conversions" else body
        for headers in (publishable(programme),
                        {"Authorization": f"Bearer {programme.publishable_key}"}):
            _problem(await web.post(path, json=body, headers=headers), 401, 403)
    # A secret key where a publishable one is expected is refused too (never leak sk_ to pages).
    _problem(await web.post("/v1/clicks", json={"code": programme.code},
                            headers={"X-Publishable-Key": programme.secret_key}), 401, 403)


async def test_a_key_of_programme_a_cannot_write_for_programme_b(web, programme,
                                                                 other_programme, topics,
                                                                 kafka_bootstrap):
    await known_code(web, other_programme.code)
    # Clicks are checked at the door: a key never records clicks for another's codes.
    _problem(await web.post("/v1/clicks", json={"code": other_programme.code},
                            headers=publishable(programme)), 403)
    batch = await web.post("/v1/batch", headers=secret(programme), json={"events": [
        {"type": "click", "code": other_programme.code}]})
    assert batch.status_code == 202, batch.text
    assert [r["status"] for r in batch.json()["results"]] == ["rejected"]
    # A conversion naming B's code is recorded for A, the key's programme, whatever it says;
    # attribution then refuses it (the code is not one of A's): B never sees it.
    conversion_id = random_ref("o-")
    conversion = {**WRITES["/v1/conversions"], "code": other_programme.code,
                  "conversion_id": conversion_id, "program_id": other_programme.program_id}
    answer = await web.post("/v1/conversions", json=conversion, headers=secret(programme))
    assert answer.status_code in (202, 422), answer.text
    if answer.status_code == 202:
        events = await collect(kafka_bootstrap, topics.conversions.name, until=lambda ev: any(
            getattr(e.data, "conversion_id", None) == conversion_id for e in ev))
        [event] = [e.data for e in events
                   if getattr(e.data, "conversion_id", None) == conversion_id]
        assert event.program_id == programme.program_id
        decision = decide(conversion=event, code=other_programme.code_entry(
            other_programme.code), program=other_programme.entry(), clicks=[])
        assert decision.reason is RejectionReason.UNKNOWN_CODE
    # A reversal is always scoped to the key's programme (its key is program_id:conversion).
    reversal = await web.post("/v1/reversals", headers=secret(programme), json={
        **WRITES["/v1/reversals"], "conversion_id": conversion_id})
    assert reversal.status_code == 202, reversal.text
    events = await collect(kafka_bootstrap, topics.reversals.name, until=bool)
    assert {e.data.program_id for e in events} == {programme.program_id}


async def test_an_unsubscribe_token_only_ever_unsubscribes_its_own_recipient_and_programme(
        notifier, notifier_settings, smtp_sink, kafka_bootstrap, topics, database_url):
    ann, bob = address(), address()
    tokens = UnsubscribeTokens(notifier_settings.unsubscribe_secret.get_secret_value(),
                               max_age_days=30, public_url="http://x")
    anns = tokens.issue(Subscription(ann, "prg_1", Category.REWARDS))
    for attempt in ({"token": anns, "email": bob}, {"token": anns, "recipient": bob},
                    {"token": anns, "program_id": "prg_2"}, {"token": anns}):
        answer = await notifier.post("/unsubscribe", params=attempt)
        assert answer.status_code == 200, answer.text
        assert bob not in answer.text

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT recipient, program_id, category FROM"
                                " notifier.unsubscribes")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [(ann, "prg_1", "rewards")]

    # Bob still gets his reward emails; Ann's token did nothing for him.
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", reward(email=bob)))
    await eventually(lambda: smtp_sink.handler.to(bob), message="bob was unsubscribed")
    # A token issued for Bob is not one for Ann either (the signature covers the recipient).
    bobs = tokens.issue(Subscription(bob, "prg_1", Category.REWARDS))
    assert tokens.read(bobs).recipient == bob and tokens.read(anns).recipient == ann
    assert bobs != anns
