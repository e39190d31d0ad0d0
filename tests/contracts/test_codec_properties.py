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


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_arbitrary_text(raw: str) -> None:
    _decodes_or_typed_error(raw.encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SAMPLES), json_values)
def test_any_schema_version_but_the_readers_is_a_typed_error(sample, version) -> None:
    doc = json.loads(ev.encode(ev.new_event(sample, source="test")))
    if version == doc.get("schemaversion"):
        return
    doc["schemaversion"] = version
    try:
        ev.decode(json.dumps(doc).encode())
    except ev.UnsupportedSchemaVersion as exc:
        assert exc.field == "schemaversion"
    else:
        raise AssertionError(f"schema version {version!r} was accepted")


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=4096), st.sampled_from([b" ", b"[", b"{\"a\":"]))
def test_oversized_messages_are_refused_before_parsing(extra: int, filler: bytes) -> None:
    raw = filler * ((ev.MAX_EVENT_BYTES + extra) // len(filler) + 1)
    try:
        ev.decode(raw)
    except ev.MalformedEvent as exc:
        assert "exceeds" in exc.reason
    else:
        raise AssertionError("an oversized message was decoded")


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=50_000))
def test_deep_nesting_is_a_typed_error(depth: int) -> None:
    _decodes_or_typed_error(b"[" * depth + b"]" * depth)
    _decodes_or_typed_error(b'{"a":' * depth + b"1" + b"}" * depth)
