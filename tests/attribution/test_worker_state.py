"""Attribution state across worker crashes and between workers (real processes, real broker):
tables recover from their changelogs, and two workers decide exactly what one would."""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from referral_events import (
    ClickRecorded,
    ReferralAttributed,
    ReferralRejected,
    ReferralStatsCounted,
    RejectionReason,
    TopicRegistry,
    encode,
    new_event,
    utcnow,
)
from referral_events.identity import new_click_id
from referral_kit.kafka import ensure_topics

from tests.support import free_port
from tests.support.kafka import collect, publish

from .test_worker import _conversion, _decisions, _registry

pytestmark = pytest.mark.e2e  # several Faust workers per test: the slow lane

CODES = [f"S{n:02d}TATE" for n in range(12)]


async def _start_worker(run_service, env, *, attempts: int = 3):
    """A worker on its own web port; after an unclean kill a restart can hang in SyncGroup
    (FIELD-NOTES), so a worker that does not become ready is killed and started again."""
    for attempt in range(attempts):
        port = free_port()
        try:
            return await run_service("attribution", [".venv/bin/attribution"],
                                     {**env, "ATTRIBUTION_WEB_PORT": str(port)}, port=port,
                                     timeout=60)
        except AssertionError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _clicks_for(codes):
    return {code: ClickRecorded(click_id=new_click_id(code), program_id="prg_1", code=code,
                                channel="whatsapp", occurred_at=utcnow()) for code in codes}


def _summary(events, conversion_ids):
    """conversion id → the set of (decision id, outcome, click) seen for it."""
    out = {}
    for cid in conversion_ids:
        out[cid] = {(d.id, type(d.data).__name__, getattr(d.data, "reason", None),
                     getattr(d.data, "click_id", None)) for d in _decisions(events, cid)}
    return out


async def test_a_killed_worker_recovers_its_tables_and_changes_no_decision(
        platform_env, run_service, kafka_bootstrap, topics):
    env = {**platform_env, "ATTRIBUTION_GRACE_SECONDS": "30"}
    await _registry(kafka_bootstrap, topics, *CODES)
    worker = await _start_worker(run_service, env)
    clicks = _clicks_for(CODES)
    first = {code: _conversion(code, click_id=clicks[code].click_id) for code in CODES}
    await publish(kafka_bootstrap, topics.clicks.name,
                  *[(code, new_event(c, source="tracker")) for code, c in clicks.items()])
    await publish(kafka_bootstrap, topics.conversions.name,
                  *[(code, conv) for code, conv in first.items()])
    first_ids = [c.data.conversion_id for c in first.values()]
    before = await collect(kafka_bootstrap, topics.attributions.name, timeout=60,
                           until=lambda ev: all(_decisions(ev, i) for i in first_ids))

    # Mid-stream: more conversions naming the same clicks (only the recovered click table
    # can attribute them to the click within the 30 s grace), replays, and resubmissions.
    second = {code: _conversion(code, click_id=clicks[code].click_id) for code in CODES}
    resubmitted = {code: _conversion(code, conversion_id=first[code].data.conversion_id)
                   for code in CODES[:4]}
    await publish(kafka_bootstrap, topics.conversions.name,
                  *[(code, conv) for code, conv in second.items()],
                  *[(code, first[code]) for code in CODES[:4]],
                  *[(code, conv) for code, conv in resubmitted.items()])
    second_ids = [c.data.conversion_id for c in second.values()]
    await collect(kafka_bootstrap, topics.attributions.name, timeout=60,
                  until=lambda ev: any(_decisions(ev, i) for i in second_ids))
    worker.kill(signal.SIGKILL)
    await _start_worker(run_service, env)

    def complete(events):
        return (all(_decisions(events, i) for i in second_ids)
                and all(len({d.id for d in _decisions(events, i)}) >= 2 for i in first_ids[:4]))

    after = await collect(kafka_bootstrap, topics.attributions.name, timeout=90, until=complete)
    for code in CODES:  # nothing lost, and the click log survived the crash
        decided = {(type(d.data), d.data.click_id) for d in
                   _decisions(after, second[code].data.conversion_id)}
        assert decided == {(ReferralAttributed, clicks[code].click_id)}, code
    for code in CODES:  # a first decision is never changed, only re-sent identically
        cid = first[code].data.conversion_id
        attributed = {d.id for d in _decisions(after, cid)
                      if isinstance(d.data, ReferralAttributed)}
        assert attributed == {d.id for d in _decisions(before, cid)}, code
    for code in CODES[:4]:  # the decided table survived: a resubmission is a duplicate
        rejected = [d.data for d in _decisions(after, first[code].data.conversion_id)
                    if isinstance(d.data, ReferralRejected)]
        assert rejected and {r.reason for r in rejected} == {RejectionReason.DUPLICATE}


async def test_two_workers_decide_exactly_what_one_worker_decides(
        platform_env, run_service, kafka_bootstrap, topics):
    other_prefix = f"t{uuid.uuid4().hex[:10]}."
    other = TopicRegistry(other_prefix)
    await ensure_topics(kafka_bootstrap, other.all())
    single_env = {**platform_env, "TOPIC_PREFIX": other_prefix,
                  "ATTRIBUTION_GRACE_SECONDS": "2"}
    pair_env = {**platform_env, "ATTRIBUTION_GRACE_SECONDS": "2"}
    clicks = _clicks_for(CODES)
    # Only inputs whose decision does not depend on how the clicks and conversions topics
    # interleave: a conversion carrying only a code is decided at once, with the code's
    # latest click if that click was handled first, code-only otherwise (the topics have no
    # order between them), so those name codes that get no click.
    unclicked = [f"U{n:02d}CLICK" for n in range(4)]
    workload = []
    for n, code in enumerate(CODES):
        workload.append(_conversion(code, click_id=clicks[code].click_id))
        if n % 3 == 0:
            workload.append(_conversion(code, click_id=new_click_id(code)))  # unseen click
    workload += [_conversion(code) for code in unclicked]  # code-only
    workload.append(_conversion("UNKNOWN1"))
    ids = [c.data.conversion_id for c in workload]
    for registry in (topics, other):
        await _registry(kafka_bootstrap, registry, *CODES, *unclicked)
    await _start_worker(run_service, single_env)
    await _start_worker(run_service, pair_env)
    await _start_worker(run_service, pair_env)
    for registry in (topics, other):
        await publish(kafka_bootstrap, registry.clicks.name,
                      *[(code, new_event(c, source="tracker")) for code, c in clicks.items()])
        await publish(kafka_bootstrap, registry.conversions.name,
                      *[(c.data.code, c) for c in workload])
    results = []
    for registry in (other, topics):
        events = await collect(kafka_bootstrap, registry.attributions.name, timeout=90,
                               until=lambda ev: all(_decisions(ev, i) for i in ids))
        results.append(_summary(events, ids))
    assert results[0] == results[1]


async def test_hourly_counts_reach_the_stats_topic(platform_env, run_service, kafka_bootstrap,
                                                   topics):
    code = "C0UNTS"
    await _registry(kafka_bootstrap, topics, code)
    await _start_worker(run_service, {**platform_env, "ATTRIBUTION_STATS_FLUSH_SECONDS": "0.5"})
    clicks = [ClickRecorded(click_id=new_click_id(code), program_id="prg_1", code=code,
                            channel="qr", visitor_hash=visitor, occurred_at=utcnow())
              for visitor in ("v1", "v1", "v2")]  # v1 twice within the hour: one visit
    await publish(kafka_bootstrap, topics.clicks.name,
                  *[(code, new_event(c, source="tracker")) for c in clicks])
    conversion = _conversion(code, click_id=clicks[2].click_id, amount=2500)
    await publish(kafka_bootstrap, topics.conversions.name, (code, conversion))

    def latest(events):
        newest = {}
        for event in events:
            if isinstance(event.data, ReferralStatsCounted) and event.data.channel == "qr":
                if event.data.version > newest.get("version", 0):
                    newest = event.data.model_dump()
        return newest

    events = await collect(kafka_bootstrap, topics.stats.name, timeout=60,
                           until=lambda ev: latest(ev).get("attributed") == 1)
    counts = latest(events)
    assert (counts["clicks"], counts["conversions"], counts["attributed"]) == (2, 1, 1)
    assert counts["revenue"] == 2500 and counts["program_id"] == "prg_1"


async def test_a_click_log_is_written_to_its_changelog_per_commit_not_per_click(
        platform_env, run_service, kafka_bootstrap, topics):
    """Tables send their changelog at commit (attribution.changelog): forty clicks of one
    code handled between two commits leave one record or two, the last one holding them
    all, which is what a restarted worker recovers (the kill test above)."""
    code = "L0GC0DE"
    await _registry(kafka_bootstrap, topics, code)
    await _start_worker(run_service, platform_env)
    clicks = [ClickRecorded(click_id=new_click_id(code), program_id="prg_1", code=code,
                            channel="qr", occurred_at=utcnow()) for _ in range(40)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:  # one batch: the worker reads them well within one commit interval
        for click in clicks:
            await producer.send(topics.clicks.name, encode(new_event(click, source="tracker")),
                                key=code.encode())
        await producer.flush()
    finally:
        await producer.stop()

    changelog = f"{topics.prefix}referral-attribution-clicks-by-code-changelog"
    wanted = [c.click_id for c in clicks]
    records: list[list] = []
    consumer = AIOKafkaConsumer(changelog, bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not records or [entry[0] for entry in records[-1]] != wanted:
            assert time.monotonic() < deadline, f"last record: {records[-1:]}"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records += [json.loads(r.value) for r in batch if r.key == f'"{code}"'.encode()]
    finally:
        await consumer.stop()
    assert len(records) < len(clicks) / 4, f"{len(records)} changelog records for 40 clicks"
