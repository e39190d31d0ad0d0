"""`referral-replay` against the real broker: dead-lettered events go back to their source
topic once, whatever how often the command runs, with filters and ranges leaving the rest
replayable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from referral_events import EventError, InvalidEventData, Topic, TopicRegistry
from referral_kit.deadletter import dead_letter
from referral_kit.replay import (
    LEDGER_SUFFIX,
    REPLAYED_FROM,
    Bound,
    ReplayError,
    ReplayOptions,
    replay,
)

ROOT = Path(__file__).resolve().parents[2]
REPLAY = ROOT / ".venv" / "bin" / "referral-replay"


async def read_all(bootstrap: str, topic: str) -> list:
    """Every record of ``topic`` up to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def dead_letter_some(bootstrap: str, topic: Topic,
                           messages: list[tuple[bytes, bytes, EventError | Exception]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                acks="all")
    await producer.start()
    try:
        for n, (key, value, error) in enumerate(messages):
            await dead_letter(producer, topic, key=key, value=value, partition=n % 4,
                              offset=100 + n, error=error, consumer="test-consumer")
    finally:
        await producer.stop()


def run_replay(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COLUMNS": "200"}
    return subprocess.run([str(REPLAY), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
async def dead_lettered(kafka_bootstrap: str, topics: TopicRegistry):
    """Three refused attribution decisions: two of one reason, one binary of another."""
    messages = [
        (b"CODE1", b'{"id": "evt-1", "broken": true}',
         InvalidEventData("amount: must be positive", field="data.amount")),
        (b"CODE2", b'{"id": "evt-2", "broken": true}',
         InvalidEventData("amount: must be positive", field="data.amount")),
        (b"CODE3", b"\xff\xfe not utf-8", RuntimeError("programme unknown at the time")),
    ]
    await dead_letter_some(kafka_bootstrap, topics.attributions, messages)
    return messages


async def test_replays_each_dead_lettered_event_once(kafka_bootstrap, topics, dead_lettered):
    dlq = topics.attributions.dead_letter
    assert await read_all(kafka_bootstrap, topics.attributions.name) == []

    first = run_replay(kafka_bootstrap, "--dlq", dlq)
    assert first.returncode == 0, first.stderr
    assert "replayed 3" in first.stdout, first.stdout
    replayed = await read_all(kafka_bootstrap, topics.attributions.name)
    assert sorted((r.key, r.value) for r in replayed) == sorted(
        (key, value) for key, value, _ in dead_lettered)  # original bytes and keys, binary too
    headers = {dict(r.headers)[REPLAYED_FROM].decode() for r in replayed}
    assert headers == {f"{dlq}/0/{n}" for n in range(3)}

    second = run_replay(kafka_bootstrap, "--dlq", dlq)
    assert second.returncode == 0, second.stderr
    assert "replayed 0" in second.stdout and "already replayed 3" in second.stdout
    assert len(await read_all(kafka_bootstrap, topics.attributions.name)) == 3

    # The ledger holds one marker per replayed record.
    ledger = await read_all(kafka_bootstrap, dlq + LEDGER_SUFFIX)
    assert sorted(r.key.decode() for r in ledger) == [
        f"{topics.attributions.name}|0|{n}" for n in range(3)]

    # A record dead-lettered later (say, the replay failed again) is new: replayed next time.
    await dead_letter_some(kafka_bootstrap, topics.attributions,
                           [(b"CODE4", b'{"id": "evt-4"}', RuntimeError("again"))])
    third = run_replay(kafka_bootstrap, "--dlq", dlq)
    assert "replayed 1" in third.stdout and "already replayed 3" in third.stdout
    assert len(await read_all(kafka_bootstrap, topics.attributions.name)) == 4


async def test_dry_run_and_filters_leave_the_rest_replayable(kafka_bootstrap, topics,
                                                              dead_lettered):
    dlq = topics.attributions.dead_letter
    dry = run_replay(kafka_bootstrap, "--dlq", dlq, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would replay 3" in dry.stdout and "CODE3" in dry.stdout
    assert await read_all(kafka_bootstrap, topics.attributions.name) == []

    only = run_replay(kafka_bootstrap, "--dlq", dlq, "--filter-reason", "programme UNKNOWN")
    assert "replayed 1" in only.stdout and "filtered out 2" in only.stdout, only.stdout
    assert [r.key for r in await read_all(kafka_bootstrap, topics.attributions.name)] == [
        b"CODE3"]

    by_code = run_replay(kafka_bootstrap, "--dlq", dlq, "--filter-reason", "invalid_data",
                         "--until", "0")
    assert "replayed 1" in by_code.stdout, by_code.stdout
    rest = run_replay(kafka_bootstrap, "--dlq", dlq)
    assert "replayed 1" in rest.stdout and "already replayed 2" in rest.stdout, rest.stdout
    assert sorted(r.key for r in await read_all(kafka_bootstrap, topics.attributions.name)) == [
        b"CODE1", b"CODE2", b"CODE3"]


async def test_to_another_topic_and_ranges(kafka_bootstrap, topics, dead_lettered):
    dlq = topics.attributions.dead_letter
    report = await replay(kafka_bootstrap, ReplayOptions(
        dlq=dlq, to=topics.conversions.name, since=Bound(offset=1), until=Bound(offset=1)))
    assert (report.replayed, report.scanned) == (1, 1)
    assert [r.key for r in await read_all(kafka_bootstrap, topics.conversions.name)] == [b"CODE2"]
    # Replays are per target: the source topic can still get all three.
    again = await replay(kafka_bootstrap, ReplayOptions(dlq=dlq))
    assert again.replayed == 3
    future = await replay(kafka_bootstrap, ReplayOptions(
        dlq=dlq, since=Bound.parse("2999-01-01T00:00:00Z")))
    assert (future.scanned, future.replayed) == (0, 0)


async def test_refuses_what_it_cannot_do(kafka_bootstrap, topics):
    with pytest.raises(ReplayError, match="did you mean"):
        await replay(kafka_bootstrap, ReplayOptions(dlq=topics.attributions.name))
    with pytest.raises(ReplayError, match="does not exist"):
        await replay(kafka_bootstrap, ReplayOptions(dlq=topics.attributions.dead_letter,
                                                    to="no.such.topic"))
    with pytest.raises(ReplayError, match="neither an offset"):
        Bound.parse("yesterday")
    missing = run_replay(kafka_bootstrap, "--dlq", "no.such.topic.dlq")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_the_console_script_is_installed():
    from referral_kit.replay import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--dlq" in result.output and "--dry-run" in result.output
    assert REPLAY.exists(), "referral-replay is not installed: run `make install`"
