"""The pre-check lets no text through that the full patterns would change.

The guard on the pre-check itself (tests/ingest/test_redact_precheck.py checks its
speed-ups against the plain needle search, not against the patterns): card numbers
written in dashed groups of other shapes than 4-4-4-4 and 4-6-4 (a 13-digit Visa as
4-4-5) passed every needle, so an event holding one was stored as it was.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.records import Dataset, Event, Origin
from ingest.redact import Redactor

REDACTOR = Redactor(hash_key=b"k")
# 4222222222222 (a 13-digit test Visa), 378282246310005 (15, Amex), 4111111111111111 (16).
CARDS = ["4222-2222-22222", "4222-222-222-222", "4222-222222-222", "4222-22222-2222", "4222-222-222222",
         "4222 2222-22222", "3782-822-463-10005", "3782-8224-6310005", "4111-111-111-111-111-1"]  # fmt: skip


@pytest.mark.parametrize("card", CARDS)
def test_a_dashed_card_number_of_any_grouping_is_redacted(card: str) -> None:
    origin = Origin(Dataset.APP, "app.log", 1)
    event = Event("e-1", Dataset.APP, 1.0, origin, message=f"charged {card} ok", request_id=card)
    out = REDACTOR.redact(event)
    assert card not in (out.message or "") and "[REDACTED:pan last4=" in (out.message or "")
    assert card not in (out.request_id or "")
    assert card not in REDACTOR.redact(f"card={card}")


DIGIT_GROUPS = st.lists(st.text(alphabet="0123456789", min_size=1, max_size=7), min_size=1, max_size=6)
SEPARATORS = st.lists(st.sampled_from([" ", "-", "_", "  ", "x"]), min_size=5, max_size=5)
AROUND = st.sampled_from(["", " ", "a", "-", "a-", "/", "card "])


@st.composite
def digit_texts(draw: st.DrawFn) -> str:
    # Groups of digits joined by separators, with a valid check digit made likely: the last
    # digit is chosen so the whole digit string passes Luhn.
    groups, seps = draw(DIGIT_GROUPS), draw(SEPARATORS)
    digits = "".join(groups)
    for last in "0123456789":
        if _luhn(digits[:-1] + last):
            groups[-1] = groups[-1][:-1] + last
            break
    text = groups[0] + "".join(sep + group for sep, group in zip(seps, groups[1:]))
    return draw(AROUND) + text + draw(AROUND)


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


@settings(max_examples=3000, deadline=None)
@given(text=st.one_of(digit_texts(), st.text(max_size=40)))
def test_a_text_the_patterns_change_is_suspect(text: str) -> None:
    if REDACTOR._text(text) != text:
        assert REDACTOR._suspect(text), text
        assert REDACTOR._suspect_id(text), text
