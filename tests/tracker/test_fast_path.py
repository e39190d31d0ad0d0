"""The lean request path (LeanRoute + IngestFastPath) answers exactly as FastAPI's own.

Two trackers on the same broker and programme, one with TRACKER_FAST_PATH off, get the
same requests; every answer (status, problem details, the headers that matter) must match.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from referral_events import TopicRegistry
from tracker.api.fastpath import IngestFastPath
from tracker.app import create_app
from tracker.config import TrackerSettings

from tests.support import eventually, serve_asgi

from .support import Programme, publishable, secret

HEADERS = ("content-type", "retry-after", "www-authenticate", "access-control-allow-origin")


def _order(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def _conversion(programme: Programme, order: str, **fields: Any) -> dict[str, Any]:
    return {"conversion_id": order, "code": programme.code,
            "customer": {"id": "c-1", "email": "buyer@example.org", "is_new": True},
            "amount": 4999, "currency": "eur", **fields}


@pytest.fixture
async def pair(tracker_settings: TrackerSettings, programme: Programme
               ) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(lean tracker, usual tracker) clients, both ready."""
    usual = tracker_settings.model_copy(update={"fast_path": False})
    lean_app, usual_app = create_app(tracker_settings), create_app(usual)
    async with serve_asgi(lean_app) as lean_url, serve_asgi(usual_app) as usual_url:
        async with httpx.AsyncClient(base_url=lean_url, timeout=15) as lean, \
                httpx.AsyncClient(base_url=usual_url, timeout=15) as plain:
            for client in (lean, plain):
                async def ready(c: httpx.AsyncClient = client) -> bool:
                    return (await c.get("/readyz")).status_code == 200
                await eventually(ready, timeout=30, message="tracker never ready")
            yield lean, plain
        stack: Any = lean_app.middleware_stack
        while stack is not None and not isinstance(stack, IngestFastPath):
            stack = getattr(stack, "app", None)
        assert stack is not None and stack._targets, "the fast path was never taken"
        assert {"/v1/conversions", "/v1/reversals", "/v1/batch"} <= set(stack._targets)


def _answer(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = response.text
    return (response.status_code, {h: response.headers[h] for h in HEADERS
                                   if h in response.headers}, body)


async def test_same_answers_with_and_without_the_fast_path(
        pair: tuple[httpx.AsyncClient, httpx.AsyncClient], programme: Programme,
        topics: TopicRegistry, tracker_settings: TrackerSettings) -> None:
    lean, plain = pair
    key = secret(programme)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/conversions", {"json": "FIRST", "headers": key}),
        ("/v1/conversions", {"json": "FIRST", "headers": key}),  # a repeat: duplicate
        ("/v1/conversions", {"json": "ORDER"}),  # no key
        ("/v1/conversions", {"json": "ORDER", "headers": {"Authorization": "Basic abc"}}),
        ("/v1/conversions", {"json": "ORDER",
                             "headers": {"Authorization": "Bearer sk_unknown"}}),
        ("/v1/conversions", {"json": "ORDER", "headers": publishable(programme)}),
        ("/v1/conversions", {"content": b'{"conversion_id": ', "headers": {
            **key, "Content-Type": "application/json"}}),
        ("/v1/conversions", {"content": b"null", "headers": {
            **key, "Content-Type": "application/json"}}),
        ("/v1/conversions", {"content": b"[1, 2]", "headers": {
            **key, "Content-Type": "application/json"}}),
        ("/v1/conversions", {"content": b"", "headers": {
            **key, "Content-Type": "application/json"}}),
        ("/v1/conversions", {"content": b'{"conversion_id": "x"}', "headers": {
            **key, "Content-Type": "text/plain"}}),
        ("/v1/conversions", {"json": {"conversion_id": "x", "customer": {"id": "c"},
                                      "amount": -1, "currency": "EURO"}, "headers": key}),
        ("/v1/conversions", {"json": "BAD_EMAIL", "headers": key}),
        ("/v1/conversions", {"json": "NO_CODE", "headers": key}),
        ("/v1/conversions", {"json": "BAD_CLICK", "headers": key}),
        ("/v1/conversions", {"json": "HUGE", "headers": key}),
        ("/v1/conversions", {"json": "ORDER", "headers": {
            **key, "Origin": "https://shop.example"}}),
        ("/v1/reversals", {"json": "REVERSAL", "headers": key}),
        ("/v1/reversals", {"json": {"conversion_id": "x", "reason": "theft"}, "headers": key}),
        ("/v1/batch", {"json": "BATCH", "headers": key}),
        ("/v1/batch", {"json": {"events": []}, "headers": key}),
        ("/v1/conversions/", {"json": "ORDER", "headers": key}),
    ]
    same = _order("same")
    for path, request in cases:
        answers = []
        for client, tag in ((lean, "lean"), (plain, "plain")):
            kwargs = dict(request)
            if isinstance(kwargs.get("json"), str):
                kwargs["json"] = _body(kwargs["json"], programme, tag, same, tracker_settings)
            answers.append(_answer(await client.post(path, **kwargs)))
        assert answers[0] == answers[1], f"{path} {request}: {answers}"


def _body(kind: str, programme: Programme, tag: str, same: str,
          settings: TrackerSettings) -> Any:
    order = _order(tag)  # each tracker its own ids: the broker's memory is shared
    match kind:
        case "FIRST":
            return _conversion(programme, f"{same}-{tag}")
        case "ORDER":
            return _conversion(programme, order)
        case "BAD_EMAIL":
            return _conversion(programme, order, customer={"id": "c", "email": "not-mail"})
        case "NO_CODE":
            body = _conversion(programme, order)
            del body["code"]
            return body
        case "BAD_CLICK":
            return _conversion(programme, order, click_id="nope")
        case "HUGE":
            return _conversion(programme, order, device_id="d" * (settings.max_body_bytes + 10))
        case "REVERSAL":
            return {"conversion_id": order, "reason": "refund"}
        case "BATCH":
            return {"events": [{"type": "conversion", **_conversion(programme, _order(tag))},
                               {"type": "conversion", "customer": {"id": "c"}},
                               {"type": "reversal", "conversion_id": order,
                                "reason": "chargeback"}]}
    raise AssertionError(kind)
