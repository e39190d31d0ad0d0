"""Property tests: whatever bytes arrive, decode() returns an event or raises EventError."""

from __future__ import annotations

import json

import referral_events as ev
from hypothesis import given, settings
from hypothesis import strategies as st

from .samples import SAMPLES

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _decodes_or_typed_error(raw: bytes) -> None:
    try:
        envelope = ev.decode(raw)
    except ev.EventError as exc:
        assert exc.reason and exc.code
    else:
        assert envelope.type in ev.catalogue()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    _decodes_or_typed_error(raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.sampled_from(["envelope", "data"]), st.text(max_size=12),
       json_values)
def test_mutated_valid_events(sample, where, key, value) -> None:
    doc = json.loads(ev.encode(ev.new_event(sample, source="test")))
    target = doc if where == "envelope" else doc["data"]
    if key in target and key:
        target[key] = value
    else:
        target[key or "type"] = value
    _decodes_or_typed_error(json.dumps(doc).encode())
