"""Redaction's pre-check: the cheap test that lets a clean event skip the full patterns.

The guard on its speed-ups (texts remembered clean, request ids read as hex): every
event the plain pre-check flags (all texts joined, folded, searched for every needle)
is still flagged, whatever the redactor saw before it.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest.redact as redact
from ingest.records import Dataset, Event, Origin
from ingest.redact import _FOLD, Redactor, _repeating_texts, _TEXT_FIELDS

PAN = "4111111111111111"


def joined_texts_suspect(redactor: Redactor, event: Event) -> bool:
    """The pre-check as it was before the speed-ups, kept here as the reference."""
    text = "\x1f".join(filter(None, (getattr(event, name) for name in _TEXT_FIELDS)))
    if event.labels or event.response_flags:
        text = "\x1f".join((text, *event.response_flags, *(f"{k}\x1f{v}" for k, v in event.labels)))
    folded = text.encode("utf-8", "surrogatepass").translate(_FOLD).decode("latin-1")
    return any(needle in folded for needle in redactor._needles)


# Values that repeat between events (so the remembered verdicts are used), clean ones and
# ones a needle or a pattern finds, and the look-alikes between them.
POOL = [
    "GET", "/v1/invoices/in_935c16d875d59a", "/v1/invoices/in_08258598096349", "api.billing.example",
    "Mozilla/5.0 (X11; Linux x86_64)", "198.51.100.2", "u-1997", "org-118", "invoice retrieved",
    "d4e46e7c-bcbe-4bdc-8c64-133f6568bfcd", "e6e80d05-7913-4459-8462-3724b2913af3", "", "-",
    f"card {PAN}", "4111 1111 1111 1111", "4111-1111-1111-1111", "3782-822463-10005", "cvv 123",
    "/login?password=hunter2", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "https://u:p@h/",
    "session=abc; Cookie: x", "x-api-key", "API_KEY", "tokens", "Secret", "a\x1fb", "0000", "1234 5678",
]  # fmt: skip
HEX_ID = st.text(alphabet="0123456789abcdefABCDEF-", max_size=40)
DIGITS_ID = st.text(alphabet="0123456789- _", max_size=40)
TEXT = st.one_of(
    st.none(), st.sampled_from(POOL), HEX_ID, DIGITS_ID, st.text(max_size=30),
    st.text(alphabet=string.printable, max_size=30),
)  # fmt: skip
LABEL_NAME = st.sampled_from(["req.authorization", "req.x-api-key", "req.x-other", "resp.x-cvc", "token", "a\x1f"])


@st.composite
def events(draw: st.DrawFn) -> Event:
    texts = {name: draw(TEXT) for name in _TEXT_FIELDS}
    flags = tuple(draw(st.lists(st.sampled_from(["UF", "NR", "cv", "@", "URX"]) | st.text(max_size=6), max_size=2)))
    labels = tuple(draw(st.lists(st.tuples(LABEL_NAME | st.text(max_size=8), TEXT.filter(bool)), max_size=2)))
    origin = Origin(Dataset.GATEWAY, "gw.log", 1)
    return Event("e-1", Dataset.GATEWAY, 1.0, origin, response_flags=flags, labels=labels, **texts)  # type: ignore[arg-type]


REDACTORS = {
    "defaults": {},
    "a name spelt in hex letters": {"query_params": ("fee",)},  # ids may hold it: no hex shortcut
    "a name holding the joiner": {"json_keys": ("a\x1fb", "token")},  # may span two texts: no memory
}


@pytest.mark.parametrize("config", REDACTORS.values(), ids=REDACTORS.keys())
@settings(max_examples=300, deadline=None)
@given(stream=st.lists(events(), min_size=1, max_size=12), small_cache=st.booleans())
def test_every_event_the_joined_check_flags_is_still_flagged(
    config: dict[str, tuple[str, ...]], stream: list[Event], small_cache: bool
) -> None:
    # One redactor over the whole stream, so later events meet texts remembered from
    # earlier ones, and twice over it so every text has been seen once.
    redactor = Redactor(hash_key=b"k", **config)  # type: ignore[arg-type]
    original = redact.CLEAN_CACHE_VALUES
    redact.CLEAN_CACHE_VALUES = 5 if small_cache else original
    try:
        for event in stream + stream:
            if joined_texts_suspect(redactor, event):
                assert redactor._suspect_event(event), event
    finally:
        redact.CLEAN_CACHE_VALUES = original


@settings(max_examples=500, deadline=None)
@given(request_id=st.one_of(HEX_ID, DIGITS_ID, st.text(max_size=40), st.sampled_from(POOL)))
def test_request_id_check_gives_the_plain_verdict(request_id: str) -> None:
    for config in REDACTORS.values():
        redactor = Redactor(hash_key=b"k", **config)  # type: ignore[arg-type]
        assert redactor._suspect_id(request_id) == redactor._suspect(request_id)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.one_of(HEX_ID, DIGITS_ID, st.sampled_from(POOL)), min_size=1, max_size=20))
def test_a_remembered_request_id_gives_the_plain_verdict(ids: list[str]) -> None:
    # Each id twice over (a request's two sides), through a memory of 3 ids, so it is both
    # remembered and forgotten along the way.
    original = redact.CLEAN_CACHE_IDS
    redact.CLEAN_CACHE_IDS = 3
    try:
        redactor = Redactor(hash_key=b"k")
        for request_id in ids + ids:
            assert redactor._suspect_id(request_id) == redactor._suspect(request_id)
            assert len(redactor._clean_ids) <= 3
    finally:
        redact.CLEAN_CACHE_IDS = original


def test_repeating_texts_are_every_text_field_but_the_request_id() -> None:
    texts = {name: f"value of {name}" for name in _TEXT_FIELDS}
    event = Event("e-1", Dataset.APP, 1.0, Origin(Dataset.APP, "app.log", 1), **texts)  # type: ignore[arg-type]
    repeating = _repeating_texts(event)
    assert len(repeating) == len(_TEXT_FIELDS) - 1
    assert set(repeating) == set(texts.values()) - {"value of request_id"}


def test_remembered_texts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "CLEAN_CACHE_VALUES", 50)
    redactor = Redactor(hash_key=b"k")
    origin = Origin(Dataset.GATEWAY, "gw.log", 1)
    for n in range(1_000):
        event = Event(f"e-{n}", Dataset.GATEWAY, 1.0, origin, path=f"/v1/items/{n}", user_agent="curl/8")
        assert redactor.redact(event) is event
        assert len(redactor._clean) <= 50 + 1
    dirty = Event("e-x", Dataset.GATEWAY, 1.0, origin, path=f"/pay?card={PAN}", user_agent="curl/8")
    assert PAN not in (redactor.redact(dirty).path or "")  # a remembered user agent shields nothing else


@pytest.mark.parametrize(
    "card", ["4111-1111 1111-1111", "4111 1111-1111 1111", "4111-1111-1111 1111", "3782 822463-10005", "3782-822463 10005"]
)
def test_a_card_number_with_spaces_and_dashes_mixed_is_redacted(card: str) -> None:
    # The full patterns always took these; the pre-check used to let them through.
    origin = Origin(Dataset.APP, "app.log", 1)
    event = Event("e-1", Dataset.APP, 1.0, origin, message=f"charged {card} ok", user_agent="curl/8")
    out = Redactor(hash_key=b"k").redact(event)
    assert card not in (out.message or "") and "[REDACTED:pan last4=" in (out.message or "")
