"""Redaction's pre-check over a batch: the verdict of each event is the one-event pre-check's.

The one-event pre-check is itself checked against the plain joined search
(test_redact_precheck.py); here a batch must flag exactly the events it flags,
and redact them alike, whatever the redactor remembers from earlier batches.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest.redact as redact
from ingest.records import Dataset, Event, Origin
from ingest.redact import Redactor
from ingest.redact_batch import redact_events, suspect_indices
from tests.ingest.test_redact_precheck import PAN, REDACTORS, events

ORIGIN = Origin(Dataset.GATEWAY, "gw.log", 1)


@pytest.mark.parametrize("config", REDACTORS.values(), ids=REDACTORS.keys())
@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(events(), max_size=8), min_size=1, max_size=4), small_cache=st.booleans())
def test_a_batch_flags_the_events_the_one_event_check_flags(
    config: dict[str, tuple[str, ...]], batches: list[list[Event]], small_cache: bool
) -> None:
    # Each redactor over every batch twice, so later batches meet remembered texts and ids.
    batched = Redactor(hash_key=b"k", **config)  # type: ignore[arg-type]
    one_by_one = Redactor(hash_key=b"k", **config)  # type: ignore[arg-type]
    values, ids = redact.CLEAN_CACHE_VALUES, redact.CLEAN_CACHE_IDS
    if small_cache:
        redact.CLEAN_CACHE_VALUES, redact.CLEAN_CACHE_IDS = 5, 3
    try:
        for batch in batches + batches:
            expected = [at for at, event in enumerate(batch) if one_by_one._suspect_event(event)]
            assert suspect_indices(batched, batch) == expected
            assert redact_events(batched, batch) == [one_by_one.redact(event) for event in batch]
            assert len(batched._clean) <= redact.CLEAN_CACHE_VALUES + 1  # and None
            assert len(batched._clean_ids) <= redact.CLEAN_CACHE_IDS
    finally:
        redact.CLEAN_CACHE_VALUES, redact.CLEAN_CACHE_IDS = values, ids


def test_a_secret_among_many_clean_events_is_found_where_it_is() -> None:
    # The hits are placed by offset in the joined texts: the right event, and only it, is redacted.
    redactor = Redactor(hash_key=b"k")
    batch = [
        Event(f"e-{n}", Dataset.GATEWAY, 1.0, ORIGIN, request_id=f"{n:08x}-6e7c-4cde-8c64-133f6568bfcd",
              path=f"/v1/invoices/{n}", user_agent="curl/8")
        for n in range(300)
    ]  # fmt: skip
    batch[117] = Event("e-x", Dataset.GATEWAY, 1.0, ORIGIN, path=f"/pay?card={PAN}", user_agent="curl/8")
    batch[250] = Event("e-y", Dataset.GATEWAY, 1.0, ORIGIN, request_id=PAN, path="/v1/invoices/x")
    redacted = redact_events(redactor, batch)
    assert suspect_indices(Redactor(hash_key=b"k"), batch) == [117, 250]
    assert PAN not in (redacted[117].path or "") and PAN not in (redacted[250].request_id or "")
    assert all(redacted[n] is batch[n] for n in range(300) if n not in (117, 250))


def test_texts_that_are_not_ascii_are_judged_alone() -> None:
    # Their fold is longer than the text, so they stay out of the joined search.
    redactor = Redactor(hash_key=b"k")
    batch = [
        Event("e-1", Dataset.APP, 1.0, ORIGIN, message="paid ✓ with card", user_id="zoë"),
        Event("e-2", Dataset.APP, 1.0, ORIGIN, message=f"zoë paid with {PAN}", request_id="réq-1"),
        Event("e-3", Dataset.APP, 1.0, ORIGIN, message="token=abc", user_id="zoë"),
    ]
    assert suspect_indices(redactor, batch) == [1, 2]
    assert "[REDACTED:pan" in (redact_events(redactor, batch)[1].message or "")


def test_a_redactor_that_is_off_returns_the_batch_as_it_is() -> None:
    batch = [Event("e-1", Dataset.APP, 1.0, ORIGIN, message=f"card {PAN}")]
    assert redact_events(Redactor(enabled=False), batch) is batch
