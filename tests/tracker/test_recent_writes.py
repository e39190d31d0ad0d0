"""The idempotency memory: one write per key, failures retried, concurrent retries joined."""

from __future__ import annotations

import asyncio

import pytest
from tracker.recent import RecentWrites, WriteStatus


async def test_second_write_of_a_key_is_a_duplicate_and_does_not_run() -> None:
    recent, runs = RecentWrites(10), []

    async def write() -> None:
        runs.append(1)

    assert await recent.write_once("k", write) is WriteStatus.ACCEPTED
    assert await recent.write_once("k", write) is WriteStatus.DUPLICATE
    assert runs == [1]


async def test_a_failed_write_is_not_remembered() -> None:
    recent = RecentWrites(10)

    async def fail() -> None:
        raise ConnectionError("broker away")

    async def succeed() -> None:
        return None

    with pytest.raises(ConnectionError):
        await recent.write_once("k", fail)
    assert await recent.write_once("k", succeed) is WriteStatus.ACCEPTED


async def test_concurrent_writes_of_one_key_share_the_first() -> None:
    recent, runs, gate = RecentWrites(10), [], asyncio.Event()

    async def write() -> None:
        runs.append(1)
        await gate.wait()

    first = asyncio.create_task(recent.write_once("k", write))
    second = asyncio.create_task(recent.write_once("k", write))
    await asyncio.sleep(0)  # let both reach the memory before the write completes
    gate.set()
    assert {await first, await second} == {WriteStatus.ACCEPTED, WriteStatus.DUPLICATE}
    assert runs == [1]


async def test_capacity_bounds_the_memory() -> None:
    recent = RecentWrites(2)

    async def write() -> None:
        return None

    for key in ("a", "b", "c"):
        await recent.write_once(key, write)
    assert "a" not in recent and "b" in recent and "c" in recent
