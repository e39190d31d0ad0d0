"""``encode_new_event`` writes the bytes ``encode(new_event(...))`` would, or fails alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import referral_events as ev
from hypothesis import given, settings
from hypothesis import strategies as st

from .samples import SAMPLES

ids = st.text(min_size=1, max_size=210) | st.uuids().map(str)
sources = st.sampled_from(["tracker", "attribution", "rewards"]) | st.text(max_size=510)
subjects = st.none() | st.text(max_size=520) | st.sampled_from(["CODE1", 'a"b\\c', "é\u2028"])
zones = st.sampled_from([UTC, None, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5))])
times = st.builds(lambda moment, zone: moment.replace(tzinfo=zone),
                  st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(9998, 1, 1)),
                  zones)


def _outcome(make: object) -> bytes | type[BaseException]:
    try:
        return make()  # type: ignore[operator,no-any-return]
    except Exception as exc:  # the two must fail alike
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLES), ids, sources, subjects, times)
def test_same_bytes_or_same_error(data: ev.EventData, id: str, source: str,
                                  subject: str | None, time: datetime) -> None:
    fast = _outcome(lambda: ev.encode_new_event(data, source=source, id=id, time=time,
                                                subject=subject))
    model = _outcome(lambda: ev.encode(ev.new_event(data, source=source, id=id, time=time,
                                                    subject=subject)))
    assert fast == model
    if isinstance(fast, bytes):
        decoded = ev.decode(fast)
        assert decoded.id == id and decoded.data == data


def test_tracker_shaped_events_decode() -> None:
    now = ev.utcnow()
    for data in SAMPLES:
        event_id = ev.derived_id("sample", data.event_type)
        raw = ev.encode_new_event(data, source="tracker", id=event_id, time=now)
        assert raw == ev.encode(ev.new_event(data, source="tracker", id=event_id, time=now))
        assert ev.decode(raw).subject == data.subject()
