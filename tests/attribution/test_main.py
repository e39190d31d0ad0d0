"""The attribution worker's event loop: uvloop, unless FAUST_LOOP names another."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from attribution.main import use_event_loop


@pytest.fixture
def policy_restored():
    previous = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(previous)


def test_the_worker_runs_on_uvloop(monkeypatch, policy_restored) -> None:
    monkeypatch.delenv("FAUST_LOOP", raising=False)
    asyncio.set_event_loop_policy(None)
    use_event_loop()
    assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)


def test_a_loop_named_in_faust_loop_is_left_alone(monkeypatch, policy_restored) -> None:
    monkeypatch.setenv("FAUST_LOOP", "aio")
    asyncio.set_event_loop_policy(None)
    use_event_loop()
    assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
