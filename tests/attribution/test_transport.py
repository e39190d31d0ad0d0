"""The attribution app's transport fix against the real broker: after "seek to committed",
a source partition the group never committed is read from its start again (aiokafka alone
leaves it where the fetcher was), a committed one from its committed offset, and a changelog
partition is left where recovery put it."""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from types import SimpleNamespace

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.consumer.fetcher import OffsetResetStrategy
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from attribution.changelog import CommitTimeTable
from attribution.transport import Admit, App, ResettingConsumerThread, SourcePositions
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as driver
from faust.types import TP


async def test_seek_to_committed_resets_partitions_the_group_never_committed(
        kafka_bootstrap, topics):
    source, changelog = topics.clicks.name, topics.conversions.name
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for topic in (source, changelog):
            for partition in range(2):
                for _ in range(5):
                    await producer.send_and_wait(topic, b"x", partition=partition)
    finally:
        await producer.stop()
    tps = [TopicPartition(t, p) for t in (source, changelog) for p in range(2)]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap,
                                group_id=f"transport-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.commit({TopicPartition(source, 0): OffsetAndMetadata(2, "")})
        await consumer.seek_to_end(*tps)  # where a fetcher that dropped records would be
        thread = SimpleNamespace(
            _ensure_consumer=lambda: consumer, log=logging.getLogger("test-transport"),
            app=SimpleNamespace(tables=SimpleNamespace(changelog_topics={changelog}),
                                conf=SimpleNamespace(consumer_auto_offset_reset="earliest")))

        committed = await ResettingConsumerThread._seek_to_committed_or_reset(thread)

        assert committed[TopicPartition(source, 0)] == 2
        assert committed[TopicPartition(source, 1)] is None
        assert await consumer.position(TopicPartition(source, 0)) == 2
        assert await consumer.position(TopicPartition(source, 1)) == 0  # was 5
        for partition in range(2):  # changelogs: recovery's business
            assert await consumer.position(TopicPartition(changelog, partition)) == 5

        # Faust's livelock check must not read a position aiokafka is still resolving (it
        # asserts, and the worker crashed): such a partition is skipped.
        resetting = TopicPartition(source, 1)
        consumer._fetcher.request_offset_reset([resetting], OffsetResetStrategy.EARLIEST)
        assert not consumer._subscription.subscription.assignment.state_value(
            resetting).has_valid_position
        assert ResettingConsumerThread.verify_event_path(thread, 0.0, resetting) is None
    finally:
        await consumer.stop()


# -- what is committed: the agent's next offset, not Faust's acknowledgements ----------------

SRC = TP("clicks", 0)


def test_a_partition_is_handled_from_where_it_was_sought_and_in_order_only() -> None:
    positions = SourcePositions(["clicks"])
    assert positions.admit(SRC, 7) is Admit.UNPOSITIONED
    assert positions.next_offset(SRC) is None  # nothing may be committed yet
    positions.position({SRC: 7, TP("changelog", 0): 3})
    assert positions.next_offset(TP("changelog", 0)) is None  # not a source topic
    assert positions.admit(SRC, 6) is Admit.SEEN
    assert positions.admit(SRC, 8) is Admit.AHEAD  # 7 was skipped before the agent
    assert positions.admit(SRC, 7) is Admit.HANDLE
    positions.handled(SRC, 7)
    assert positions.admit(SRC, 8) is Admit.HANDLE
    assert positions.next_offset(SRC) == 8
    positions.position({SRC: 7})  # sought to the committed offset again (a re-seek)
    assert positions.admit(SRC, 7) is Admit.SEEN  # handled since: not decided twice
    assert positions.next_offset(SRC) == 8
    positions.forget([SRC])  # revoked: a new assignment starts from what it is sought to
    assert positions.admit(SRC, 8) is Admit.UNPOSITIONED
    positions.position({SRC: 7})
    assert positions.admit(SRC, 7) is Admit.HANDLE


async def test_an_offset_is_committed_only_once_its_decisions_were_acknowledged() -> None:
    loop = asyncio.get_running_loop()
    positions = SourcePositions(["clicks"])
    positions.position({SRC: 7})
    first, second, third = loop.create_future(), loop.create_future(), loop.create_future()
    positions.handled(SRC, 7, (first,))
    positions.handled(SRC, 8)  # a click: nothing sent
    positions.handled(SRC, 9, (second, third))
    assert positions.admit(SRC, 10) is Admit.HANDLE  # the agent goes on meanwhile
    assert positions.next_offset(SRC) == 7
    second.set_result(None)  # acknowledged out of order: 9 is still not done
    assert positions.next_offset(SRC) == 7
    first.set_result(None)
    assert positions.next_offset(SRC) == 9
    third.set_exception(RuntimeError("never acknowledged"))  # stays uncommitted
    assert positions.next_offset(SRC) == 9
    positions.forget([SRC])  # revoked: its outputs no longer hold anything back
    positions.position({SRC: 9})
    assert positions.next_offset(SRC) == 9
    positions.handled(SRC, 9, (loop.create_future(),))
    positions.handled(SRC, 10, ())
    assert positions.next_offset(SRC) == 9
    positions.forget([SRC])
    positions.position({SRC: 11})
    failed = loop.create_future()
    failed.set_exception(RuntimeError("refused"))
    positions.handled(SRC, 11, (failed,))  # failed before it was handed over: held back too
    assert positions.next_offset(SRC) == 11


def test_a_gap_is_sought_back_once_a_second_until_it_is_filled() -> None:
    positions = SourcePositions(["clicks"])
    positions.position({SRC: 7})
    assert positions.should_seek_back(SRC, now=100.0) == 7
    assert positions.should_seek_back(SRC, now=100.5) is None  # the seek is under way
    assert positions.should_seek_back(SRC, now=101.0) == 7  # it did not fill the gap
    positions.handled(SRC, 7)
    assert positions.should_seek_back(SRC, now=101.1) == 8  # a new gap


def test_a_partition_stalled_below_its_end_is_reported_once_per_period() -> None:
    positions = SourcePositions(["clicks"])
    other = TP("clicks", 1)
    positions.position({SRC: 7, other: 4})
    ends = {SRC: 9, other: 4}  # partition 1 is fully handled
    assert positions.stuck(ends, after=5, now=0.0) == {}
    assert positions.stuck(ends, after=5, now=4.9) == {}
    assert positions.stuck(ends, after=5, now=5.0) == {SRC: 7}
    assert positions.stuck(ends, after=5, now=6.0) == {}  # reported: wait again
    positions.handled(SRC, 7)
    assert positions.stuck(ends, after=5, now=10.5) == {}  # it moved: the clock restarts
    assert positions.stuck(ends, after=5, now=15.5) == {SRC: 8}


async def test_source_commits_follow_the_agent_while_changelogs_follow_faust() -> None:
    app = App(f"transport-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:9",
              web_enabled=False)
    app.source_positions = SourcePositions(["clicks"])
    consumer = app.consumer  # created, not started: no broker involved
    changelog = TP("changelog", 0)
    # Faust acknowledged 3 to 6 (skipped records are acknowledged too) and saw a gap 7 to 9
    consumer._acked[SRC], consumer._acked_index[SRC] = [3, 4, 5, 6], {3, 4, 5, 6}
    await consumer._add_gap(SRC, 7, 9)
    consumer._acked[changelog], consumer._acked_index[changelog] = [0, 1, 2], {0, 1, 2}

    assert consumer._filter_committable_offsets([SRC, changelog]) == {changelog: 3}
    assert not consumer._gap[SRC]

    # the fetch loop drops records below the read offset: never for a source partition
    consumer._read_offset[SRC], consumer._read_offset[changelog] = 90, 90
    assert consumer._read_offset[SRC] is None
    assert consumer._read_offset[changelog] == 90

    app.source_positions.position({SRC: 3})
    app.source_positions.handled(SRC, 3)  # the agent decided offset 3, nothing after
    consumer._acked[SRC].extend([4, 5, 6])
    assert consumer._filter_committable_offsets([SRC]) == {SRC: 4}


async def test_the_worker_consumer_fetches_with_the_configured_wait(monkeypatch) -> None:
    """Faust fixes fetch_max_wait_ms at 1,500; the embedded broker holds a fetch that long
    even when records arrive, so the app's consumer takes KAFKA_FETCH_MAX_WAIT_MS."""
    from attribution.app import create_app
    from attribution.config import AttributionSettings

    monkeypatch.setenv("KAFKA_FETCH_MAX_WAIT_MS", "37")
    app = create_app(AttributionSettings())
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 37
    finally:
        await consumer.stop()


class _Event:  # Faust holds the current event by weak reference
    message: SimpleNamespace


async def test_table_changes_are_sent_before_a_commit_and_again_if_refused(monkeypatch):
    """attribution.changelog: the last value of each changed key, once per commit; a refused
    send keeps the commit back and the keys marked."""
    app = App(f"changelog-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:9",
              web_enabled=False, Table=CommitTimeTable)
    table = app.Table("clicks-by-code", default=None, partitions=4)
    sent: list[tuple[int, str, object]] = []
    refuse = True

    def send_changelog(partition, key, value, key_serializer=None, value_serializer=None):
        fut = asyncio.get_running_loop().create_future()
        sent.append((partition, key, value))
        if refuse:
            fut.set_exception(KafkaError("refused"))
        else:
            fut.set_result(None)
        return fut

    monkeypatch.setattr(table, "send_changelog", send_changelog)
    commits: list[dict] = []

    async def commit_offsets(self, offsets, start_new_transaction=True):
        commits.append(dict(offsets))
        return True

    monkeypatch.setattr(driver.Consumer, "_commit_offsets", commit_offsets)
    monkeypatch.setattr(table, "_verify_source_topic_partitions", lambda topic: None)
    event = _Event()
    event.message = SimpleNamespace(topic="clicks", partition=2)
    token = _current_event.set(weakref.ref(event))
    try:  # writes as the agent makes them, while it handles an event of partition 2
        for n in range(5):
            table["ABC123"] = n
        table["XYZ789"] = "gone"
        del table["XYZ789"]
    finally:
        _current_event.reset(token)
    assert table.changed == 2 and sent == []
    assert (table.get("ABC123"), table.get("XYZ789"), table.get("?", 7)) == (4, None, 7)

    assert not await app.consumer._commit_offsets({SRC: 9})
    assert commits == [] and table.changed == 2  # refused: no commit, sent again next time
    refuse, sent[:] = False, []
    assert await app.consumer._commit_offsets({SRC: 9})
    assert sorted(sent) == [(2, "ABC123", 4), (2, "XYZ789", None)]  # latest value, tombstone
    assert commits == [{SRC: 9}] and table.changed == 0

    # marks of a revoked partition are dropped (its events are handled again by the next
    # owner, whose records a late send would overwrite); the others stay
    for partition, key in ((1, "GONE01"), (2, "KEPT02")):
        event.message = SimpleNamespace(topic="clicks", partition=partition)
        token = _current_event.set(weakref.ref(event))
        try:
            table[key] = "x"
        finally:
            _current_event.reset(token)
    table.forget_changed({TP(table.changelog_topic_name, 1), TP("clicks", 2)})
    sent[:] = []
    assert await app.consumer._commit_offsets({SRC: 10})
    assert sent == [(2, "KEPT02", "x")]
