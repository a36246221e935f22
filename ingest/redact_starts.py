"""Where a match of the redaction patterns can start, so a long text is matched only there.

The full patterns (:class:`ingest.redact.Redactor`) are one alternation that
``re`` cannot skip ahead in: it tries every alternative at every character,
~200 ns each, so a 2 MB line cost 0.4 s. But every alternative begins at a
needle (a configured name, ``cv``, ``eyJ``, a marker) or, for a card number, at
a digit inside a run of 13 or more. :class:`MatchStarts` finds those places
with ``str.find`` and one quick regex, and :func:`sub_at` matches the pattern
at each in turn, as ``pattern.sub`` would: the same output
(tests/ingest/test_redact_long.py compares the two on random texts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

# Texts this long or longer take the full patterns only where a match can start: measured,
# that wins from ~10 characters on (2.2 against 3.4 us at 16, 24 against 240 at 1024);
# below, the plain scan costs less than finding the places.
LONG_TEXT_CHARS = 16
# Past one place a match can start in this many characters, the plain scan costs less:
# measured on 2 MB texts, "cv" every 8 characters took 146 ms against 404 for the plain
# scan, "1234 " repeated (a place every 5) 1.2 s against 0.96.
CHARS_PER_MATCH_START = 6

# A run of digits with single spaces or dashes between them, 13 digits at least: the only
# stretch a card number (the pattern's "pan") can lie in.
_PAN_RUN = re.compile(r"[0-9](?:[ -]?[0-9]){12,}+")
# Characters that re's IGNORECASE matches to an ASCII letter, besides its two cases
# (tests/ingest/test_redact_long.py checks the list is whole).
CASE_TWINS = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"), ("\u212a", "k"))


def name_spellings(name: str) -> set[str]:
    """Every spelling of a configured ``name`` the patterns match, "_" read as "-" (the folded form):
    each separator as "-" or left out (``api_key``: ``api-key``, ``apikey``, as in ``apiKey``)."""
    spellings = {""}
    for index, part in enumerate(re.split("[_-]", name)):
        spellings = {f"{s}{joint}{part}" for s in spellings for joint in (("-", "") if index else ("",))}
    return spellings


@dataclass(frozen=True, slots=True)
class MatchStarts:
    """The needles a match of the patterns starts with, in :func:`fold_case`'s form."""

    needles: tuple[str, ...]

    @classmethod
    def for_names(cls, names: Iterable[str]) -> MatchStarts | None:
        """The starts of patterns built from the configured ``names``; ``None`` when a name is
        beyond ASCII, whose folding :func:`fold_case` does not follow (then every text takes the
        plain scan). A needle starting with another one adds no place."""
        names = [n for n in names if n]
        if not all(n.isascii() for n in names):
            return None
        starts = {spelling for n in names for spelling in name_spellings(n.lower())} | {"[redacted:", "cv", "eyj"}
        return cls(tuple(sorted(n for n in starts if not any(o != n and n.startswith(o) for o in starts))))

    def find(self, text: str, max_starts: int) -> set[int] | None:
        """Every index where the pattern can match in ``text`` (and more); ``None`` past ``max_starts``."""
        starts: set[int] = set()
        folded = fold_case(text)
        # str.count, in C, tells before the loop in Python whether the places are too many.
        for needle in self.needles:
            at = folded.find(needle)
            if at >= 0 and len(starts) + folded.count(needle, at) > max_starts:
                return None
            while at >= 0:
                starts.add(at)
                at = folded.find(needle, at + 1)
        # A card number starts at a digit with no letter, digit or "_" before it (nor one
        # joined by a dash): inside a run, only at its first digit or one after a space.
        for run in _PAN_RUN.finditer(text):
            first, end = run.span()
            if len(starts) + 1 + text.count(" ", first, end) > max_starts:
                return None
            starts.add(first)
            at = text.find(" ", first, end)
            while at >= 0:
                starts.add(at + 1)
                at = text.find(" ", at + 1, end)
        return starts if len(starts) <= max_starts else None


def sub_at(
    pattern: re.Pattern[str],
    replace: Callable[[re.Match[str]], str],
    text: str,
    starts: Iterable[int] | None,
    limit: int | None = None,
    withhold: Callable[[str], str] | None = None,
    uncounted: str | None = None,
) -> str:
    """``pattern.sub(replace, text)``, the pattern tried only at ``starts`` (every place a match
    can start); ``None``: at every character. Past ``limit`` matches (but those of group
    ``uncounted``: markers already there), the rest of ``text`` is ``withhold(rest)``: a text
    holding that many candidates is hostile, and each costs a check or a marker."""
    matches = pattern.finditer(text) if starts is None else _matches_at(pattern, text, starts)
    pieces: list[str] = []
    done = counted = 0
    for found in matches:
        if found.lastgroup != uncounted:
            if counted == limit and withhold is not None:
                pieces += (text[done : found.start()], withhold(text[found.start() :]))
                return "".join(pieces)
            counted += 1
        pieces += (text[done : found.start()], replace(found))
        done = found.end()
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def _matches_at(pattern: re.Pattern[str], text: str, starts: Iterable[int]) -> Iterator[re.Match[str]]:
    match = pattern.match
    done = 0
    for start in sorted(starts):
        if start >= done and (found := match(text, start)) is not None:
            yield found
            done = found.end()


def fold_case(text: str) -> str:
    """``text`` as the pattern's case-insensitive names read it, index for index: lower case,
    ``_`` as ``-``, and the non-ASCII letters re matches to an ASCII one (the Kelvin sign to k)
    as that letter. str.lower() keeps every length but U+0130's, a twin replaced first."""
    if not text.isascii():
        for twin, letter in CASE_TWINS:
            if twin in text:
                text = text.replace(twin, letter)
    return text.lower().replace("_", "-")
