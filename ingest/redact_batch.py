"""Redaction's pre-check over a batch of events: one search a batch instead of a few an event.

:meth:`Redactor._suspect_event` judges one event: its texts already found clean
cost a set lookup each, every other text and its request id a fold and a few
substring searches, ~1 us a call however short the text. On serve's traffic every
request has its own path and its own id, so every event pays that twice.
:func:`redact_events` gives the same verdicts for a parsed batch at once:

1. each event's texts (every field but the request id, the flags, the labels)
   looked up among those remembered clean, a set lookup each as before; the
   texts of the events left that are not remembered, in one set;
2. those texts joined, folded once and searched once for each needle (and for
   the dashed card hint), and likewise the batch's request ids not remembered;
3. only a text or id a hit falls in (found by its offset) is judged alone, as
   ``_suspect`` / ``_suspect_id`` judge it; the others are clean, and remembered.

A needle never holds the joiner (else the redactor judges no text alone and
the batch takes the per-event path), so a hit lies inside one text, and the
needles and the hint are all ``_suspect`` looks for: nothing it would flag is
missed. A text that is not ASCII (its fold would shift the offsets) is judged
alone. tests/ingest/test_redact_batch.py checks the verdicts event by event.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate, chain
from operator import add, attrgetter
from typing import cast

from ingest import redact
from ingest.records import Event
from ingest.redact import _DASHED_PAN_HINT, _FOLD, Redactor, _repeating_texts, remember_clean

_JOINER = "\x1f"
_request_id = attrgetter("request_id")

Text = str | tuple[str, str]  # a field's, a flag's text; a label's name and value


def redact_events(redactor: Redactor, events: list[Event]) -> list[Event]:
    """``events`` with every secret replaced, as :meth:`Redactor.redact` would return each of them."""
    if not redactor.enabled or not events:
        return events
    suspects = suspect_indices(redactor, events)
    if not suspects:
        return events
    redacted = list(events)
    for index in suspects:
        redacted[index] = redactor._redacted_fields(events[index])
    return redacted


def suspect_indices(redactor: Redactor, events: list[Event]) -> list[int]:
    """The indices of the events :meth:`Redactor._suspect_event` finds suspect, in order."""
    if not redactor._judge_texts_alone:
        return [index for index, event in enumerate(events) if redactor._suspect_event(event)]
    # An event whose texts are all remembered clean costs its set lookups, as one event alone
    # does; the others wait for one search of the texts they hold that are not.
    issuperset = redactor._clean.issuperset
    pending: list[tuple[int, tuple[Text | None, ...]]] = []
    for index, event in enumerate(events):
        texts, flags, labels = _repeating_texts(event), event.response_flags, event.labels
        if not (issuperset(texts) and (not flags or issuperset(flags)) and (not labels or issuperset(labels))):
            pending.append((index, texts + flags + labels))
    suspect: set[int] = set()
    if pending:
        unseen: set[Text | None] = set(chain.from_iterable(texts for _, texts in pending))
        unseen.difference_update(redactor._clean)
        suspect_texts = _suspect_texts(redactor, unseen) if unseen else None
        if suspect_texts:
            suspect.update(index for index, texts in pending if not suspect_texts.isdisjoint(texts))
    request_ids = list(map(_request_id, events))
    suspect_ids = _suspect_ids(redactor, set(request_ids))
    if suspect_ids:
        suspect.update(index for index, request_id in enumerate(request_ids) if request_id in suspect_ids)
    return sorted(suspect)


def _suspect_texts(redactor: Redactor, unseen: set[Text | None]) -> set[Text | None]:
    """The texts of ``unseen`` that ``_suspect`` flags; the others are remembered clean."""
    items: list[Text] = list(filter(None, unseen))
    strings = cast(list[str], items)
    if any(map(tuple.__instancecheck__, items)):  # a label: its name and its value, each a string to search
        pairs: list[tuple[Text, str]] = [
            (whole, part) for whole in items for part in (whole if isinstance(whole, tuple) else (whole,))
        ]
        items, strings = [whole for whole, _ in pairs], [part for _, part in pairs]
    suspect: set[Text | None] = set()
    for at in _hits(redactor, strings):
        item = items[at]
        if item not in suspect and (
            redactor._suspect(item[0]) or redactor._suspect(item[1])
            if isinstance(item, tuple)
            else redactor._suspect(item)
        ):
            suspect.add(item)
    found_clean = unseen.difference(suspect) if suspect else unseen
    remember_clean(redactor._clean, found_clean, redact.CLEAN_CACHE_VALUES, None)
    return suspect


def _suspect_ids(redactor: Redactor, request_ids: set[str | None]) -> set[str]:
    """The request ids of ``request_ids`` that ``_suspect_id`` flags; the others are remembered clean."""
    clean_ids = redactor._clean_ids
    request_ids.discard(None)
    found_clean = request_ids.difference(clean_ids)
    if not found_clean:
        return set()
    new: list[str] = list(found_clean)  # type: ignore[arg-type]
    # _suspect_id judges a hit alone (and remembers it when clean); every other new id is clean.
    suspect = {new[at] for at in _hits(redactor, new) if redactor._suspect_id(new[at])}
    found_clean.difference_update(suspect)
    remember_clean(clean_ids, found_clean, redact.CLEAN_CACHE_IDS)
    return suspect


def _hits(redactor: Redactor, strings: list[str]) -> set[int]:
    """The indices of ``strings`` that hold a needle or the dashed card hint once folded, or are not ASCII."""
    joined = _JOINER.join(strings)
    hits: set[int] = set()
    kept = None
    if not joined.isascii():  # the rare batch: a text that is not ASCII is judged alone
        hits = {at for at, text in enumerate(strings) if not text.isascii()}
        kept = [at for at in range(len(strings)) if at not in hits]
        strings = [strings[at] for at in kept]
        joined = _JOINER.join(strings)
    folded = joined.encode().translate(_FOLD).decode("latin-1")
    # Where each string starts in the joined text (its length and a joiner after each one
    # before it): a hit's offset names its string.
    starts = list(map(add, accumulate(map(len, strings), initial=0), range(len(strings) + 1)))
    needles = redactor._other_needles
    if "0000" in folded:
        needles = (*needles, *redactor._run_needles, _DASHED_PAN_HINT)  # the dashed needles hold the hint
    end = len(folded)
    for needle in needles:
        found = folded.find(needle)
        while found >= 0:
            at = bisect_right(starts, found) - 1
            hits.add(at if kept is None else kept[at])
            found = folded.find(needle, starts[at + 1], end)
    return hits
