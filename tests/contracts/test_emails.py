"""EmailAddress (referral_events.emails) answers exactly as pydantic's EmailStr: the same
normalised address, or the same error, for generated and hand-picked input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, EmailStr, TypeAdapter, ValidationError
from referral_events.emails import EmailAddress

REFERENCE, FAST = TypeAdapter(EmailStr), TypeAdapter(EmailAddress)


def _answer(adapter: TypeAdapter[Any], value: object) -> tuple[str, object]:
    try:
        return "ok", adapter.validate_python(value)
    except ValidationError as exc:
        return "error", [(e["type"], e["msg"]) for e in exc.errors(include_url=False)]


def _same(value: object) -> None:
    assert _answer(FAST, value) == _answer(REFERENCE, value), value


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
local_parts = st.text(alphabet=ATEXT + ".", min_size=0, max_size=70)
labels = st.text(alphabet="abzAZ09-", min_size=0, max_size=66)
tlds = st.sampled_from(["com", "nl", "COM", "test", "localhost", "invalid", "example", "local",
                        "onion", "arpa", "123", "c0m", "xn--p1ai", "xn--abc", "a", "", "-"])
domains = st.builds(lambda parts, tld: ".".join([*parts, tld]),
                    st.lists(labels, min_size=0, max_size=4), tlds)


@settings(max_examples=1500, deadline=None)
@given(st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains))
@example("Jane.Doe+promo@Example.COM")
@example("POSTMASTER@example.com")
@example("Abuse@example.com")
@example("a" * 64 + "@example.com")
@example("a" * 65 + "@example.com")
@example("a@" + "b" * 63 + ".com")
@example("a@" + "b" * 64 + ".com")
@example("a@" + ".".join(["b" * 60] * 4) + ".com")
@example("x@-example.com")
@example("x@example-.com")
@example("x@exa--mple.com")
@example("x@xn--nxasmq6b.com")
@example("x@example.com.")
@example("x@.example.com")
def test_plain_addresses_are_judged_like_email_str(address: str) -> None:
    _same(address)


words = st.text(alphabet=ATEXT, min_size=1, max_size=12)
likely_valid = st.builds(
    lambda local, parts, tld: f"{'.'.join(local)}@{'.'.join([*parts, tld])}",
    st.lists(words, min_size=1, max_size=4),
    st.lists(st.text(alphabet="abcxyzABC0189-", min_size=1, max_size=20), min_size=1,
             max_size=3),
    st.sampled_from(["com", "nl", "DE", "io", "co.uk", "museum", "xn--p1ai"]))


@settings(max_examples=1500, deadline=None)
@given(likely_valid)
def test_likely_valid_addresses_are_judged_like_email_str(address: str) -> None:
    _same(address)


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=ATEXT + ".@ \t\"<>()[]\\,;:éü\u00a0İ", max_size=60))
@example('"quoted local"@example.com')
@example("Jane Doe <jane@example.com>")
@example("jane@[192.0.2.1]")
@example("jané@example.com")
@example("jane@exämple.com")
@example(" jane@example.com ")
@example("jane@@example.com")
@example("@example.com")
@example("jane@")
def test_any_text_is_judged_like_email_str(text: str) -> None:
    _same(text)


@pytest.mark.parametrize("value", [None, 42, b"jane@example.com", ["jane@example.com"]])
def test_non_strings_are_refused_like_email_str(value: object) -> None:
    _same(value)


def test_the_json_schema_is_email_str_s() -> None:
    class Reference(BaseModel):
        email: EmailStr

    class Fast(BaseModel):
        email: EmailAddress

    assert Fast.model_json_schema()["properties"] == Reference.model_json_schema()["properties"]
