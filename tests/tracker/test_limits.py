"""Per-key event budgets (429 + Retry-After) and bounded request bodies (413)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from referral_events import TopicRegistry
from tracker.config import TrackerSettings
from tracker.rate_limits import Budget, KeyBudget, RateLimited, parse_budget

from .support import Programme, publishable, read_all, running_tracker, secret

PROBLEM = "application/problem+json"


def _conversion(programme: Programme, **fields: object) -> dict[str, object]:
    return {"conversion_id": f"order-{uuid.uuid4().hex[:8]}", "code": programme.code,
            "customer": {"id": "c-1"}, "amount": 1000, "currency": "EUR", **fields}


def _assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


@pytest.fixture
async def strict(tracker_settings: TrackerSettings, programme: Programme
                 ) -> AsyncIterator[httpx.AsyncClient]:
    """A tracker with tiny budgets: 3 events a minute per secret key, 2 per publishable."""
    settings = tracker_settings.model_copy(update={"rate_limit_secret": "3/minute",
                                                   "rate_limit_publishable": "2/minute"})
    async with running_tracker(settings) as web:
        yield web


async def test_a_key_over_its_budget_gets_429_with_retry_after(
        strict: httpx.AsyncClient, programme: Programme, kafka_bootstrap: str,
        topics: TopicRegistry) -> None:
    batch = {"events": [{"type": "conversion", **_conversion(programme)} for _ in range(2)]}
    assert (await strict.post("/v1/batch", json=batch, headers=secret(programme))
            ).status_code == 202
    assert (await strict.post("/v1/conversions", json=_conversion(programme),
                              headers=secret(programme))).status_code == 202
    # Three events spent (a batch of two costs two): the fourth waits ~20 s for a token.
    refused = await strict.post("/v1/conversions", json=_conversion(programme),
                                headers=secret(programme))
    body = _assert_problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert "3/minute" in str(body["detail"]) and "again in" in str(body["detail"])
    assert len(await read_all(kafka_bootstrap, topics.conversions)) == 3

    # Budgets are per key: the publishable key still has its own.
    for _ in range(2):
        click = await strict.post("/v1/clicks", json={"code": programme.code},
                                  headers=publishable(programme))
        assert click.status_code == 202, click.text
    _assert_problem(await strict.post("/v1/clicks", json={"code": programme.code},
                                      headers=publishable(programme)), 429)
    assert "tracker_rate_limited_total" in (await strict.get("/metrics")).text


async def test_a_batch_larger_than_the_whole_budget_is_told_so(
        strict: httpx.AsyncClient, programme: Programme) -> None:
    batch = {"events": [{"type": "conversion", **_conversion(programme)} for _ in range(4)]}
    refused = await strict.post("/v1/batch", json=batch, headers=secret(programme))
    body = _assert_problem(refused, 429)
    assert "at most 3 events per request" in str(body["detail"])
    assert int(refused.headers["retry-after"]) >= 1


async def test_oversized_bodies_get_413_before_being_read(
        web: httpx.AsyncClient, programme: Programme, tracker_settings: TrackerSettings
        ) -> None:
    limit = tracker_settings.max_body_bytes
    huge = json.dumps(_conversion(programme, padding="x" * limit)).encode()
    declared = await web.post("/v1/conversions", content=huge, headers={
        **secret(programme), "Content-Type": "application/json"})
    body = _assert_problem(declared, 413)
    assert body["max_bytes"] == limit and str(limit) in str(body["detail"])
    assert "/v1/batch" in str(body["detail"])

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(huge), 8192):
            yield huge[start:start + 8192]

    streamed = await web.post("/v1/clicks", content=chunks(), headers={
        **publishable(programme), "Content-Type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert _assert_problem(streamed, 413)["max_bytes"] == limit

    # The batch endpoint has its own, larger limit.
    batch_limit = tracker_settings.max_batch_body_bytes
    events = [{"type": "conversion", **_conversion(programme)} for _ in range(1000)]
    fits = await web.post("/v1/batch", json={"events": events[:400]},
                          headers=secret(programme))
    assert fits.status_code == 202, fits.text
    too_big = json.dumps({"events": events, "padding": "x" * batch_limit}).encode()
    refused = await web.post("/v1/batch", content=too_big, headers={
        **secret(programme), "Content-Type": "application/json"})
    body = _assert_problem(refused, 413)
    assert body["max_bytes"] == batch_limit and "several batches" in str(body["detail"])
    # The connection is still usable afterwards.
    assert (await web.get("/healthz")).status_code == 200


def test_budgets_parse_and_unlimited_turns_them_off() -> None:
    assert parse_budget("600/second") == Budget(600, 1.0)
    assert parse_budget("20000 per minute") == Budget(20000, 60.0)
    assert parse_budget("5/hours") == Budget(5, 3600.0)
    assert parse_budget("0") is None and parse_budget("unlimited") is None
    with pytest.raises(ValueError, match="not a budget"):
        parse_budget("lots")
    with pytest.raises(ValueError):
        TrackerSettings(rate_limit_secret="fast")


def test_a_bucket_refills_at_its_rate_and_holds_one_period() -> None:
    now = [0.0]
    budget = KeyBudget(Budget(10, 1.0), clock=lambda: now[0])
    budget.spend("k", 10)
    with pytest.raises(RateLimited) as refused:
        budget.spend("k", 5)
    assert refused.value.retry_after == 1 and not refused.value.never_fits
    budget.spend("other", 10)  # every key has its own bucket
    now[0] += 0.5
    budget.spend("k", 5)
    now[0] += 60  # idle for long: still at most one period's worth
    budget.spend("k", 10)
    with pytest.raises(RateLimited):
        budget.spend("k", 1)
    with pytest.raises(RateLimited) as never:
        KeyBudget(Budget(10, 60.0), clock=lambda: 0.0).spend("k", 11)
    assert never.value.never_fits and never.value.retry_after >= 1
    KeyBudget(None).spend("k", 10**9)  # unlimited
