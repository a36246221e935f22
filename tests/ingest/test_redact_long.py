"""Redaction of long texts: the full patterns tried only where a match can start.

The guard on that speed-up: for any text, trying the pattern at the places
MatchStarts.find finds (ingest/redact_starts.py) gives exactly what the plain ``pattern.sub`` over
every character gives (kept here as the reference).
"""

from __future__ import annotations

import base64
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest.redact as redact
from ingest.redact import Redactor
from ingest.redact_starts import CASE_TWINS, LONG_TEXT_CHARS, sub_at

PAN = "4111111111111111"


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def plain_sub(redactor: Redactor, text: str) -> str:
    """The full pattern tried at every character, as _text did for every text before."""
    return redactor._pattern.sub(redactor._replace, text)


def places(redactor: Redactor, text: str, max_starts: int) -> set[int] | None:
    """Where the redactor would try its pattern in ``text``; None: everywhere (the plain scan)."""
    return None if redactor._starts is None else redactor._starts.find(text, max_starts)


# Pieces a text is built of: names (in other cases, with Unicode letters re reads as ASCII
# ones under IGNORECASE), what follows a name, secrets and their look-alikes, digit runs
# with separators, markers, and filler.
NAMES = [
    "authorization", "Proxy-Authorization", "proxy_authorization", "cookie", "Set-Cookie", "set_cookie",
    "password", "PASSWORD", "token", "access_token", "Token", "secret", "api_key", "API-KEY", "x-api-key",
    "to\u212aen", "\u017fecret", "pa\u017f\u017fword", "cook\u0131e", "author\u0130zation", "cookİe",
    "cvv", "CVV2", "cvc", "Cvc2", "cv", "sig", "SSN", "x-session", "fee",
]  # fmt: skip
AFTER = [
    ":", "=", ": ", '"', '":', '": "', '\\"', '\\":\\"', "'", " ", "-", "_", ";", "&", "?", "/", "\n", "\t",
    ",", "{", "}", "[", "]", "@", "://", "Bearer ", "Basic ", "bearer  ",
]  # fmt: skip
SECRETS = [
    PAN, "4111 1111 1111 1111", "4111-1111-1111-1111", "3782 822463 10005", "4111-1111 1111-1111",
    jwt({"jti": "t-1", "sub": "alice"}), "eyJ", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "eyj",
    "[REDACTED:", "[REDACTED:pan last4=1111 h=0123456789ab]", "[redacted:secret h=0123456789ab]",
    "://u:p@h/", "https://elastic:changeme@es:9200", "88864980-3998-4305-a2c5-22252aa3baf0", "123", "0042",
]  # fmt: skip
PIECE = st.one_of(
    st.sampled_from(NAMES),
    st.sampled_from(AFTER),
    st.sampled_from(SECRETS),
    st.text(alphabet="0123456789 -", max_size=40),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.text(max_size=8),
    st.sampled_from(["AAAA", "a", "x", "_", "é", "\u0130", "\u212a", "\udcff"]),
)
TEXTS = st.lists(PIECE, max_size=40).map("".join)

REDACTORS = {
    "defaults": {},
    "configured names": {"query_params": ("sig", "fee"), "json_keys": ("ssn", "k"), "headers": ("x-session",)},
    "names that start alike": {"query_params": ("token", "tokens", "to"), "headers": ("cookie", "cookie-x")},
    "a name beyond ASCII": {"json_keys": ("pässword",)},  # the plain scan every time
}


@pytest.mark.parametrize("config", REDACTORS.values(), ids=REDACTORS.keys())
@settings(max_examples=1000, deadline=None)
@given(text=TEXTS)
def test_matching_where_a_match_can_start_is_the_plain_substitution(
    config: dict[str, tuple[str, ...]], text: str
) -> None:
    redactor = Redactor(hash_key=b"k", **config)  # type: ignore[arg-type]
    everywhere = places(redactor, text, len(text) + 1)
    assert sub_at(redactor._pattern, redactor._replace, text, everywhere) == plain_sub(redactor, text)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, filler=st.sampled_from(["A", "a", " ", "1", "1 ", "cv", "-"]))
def test_a_long_text_is_redacted_as_the_plain_substitution_would(text: str, filler: str) -> None:
    # Long enough to take the new pass, or (much filler that could start a match) its fallback.
    redactor = Redactor(hash_key=b"k")
    long = text + filler * max(64, LONG_TEXT_CHARS) + text
    expected = plain_sub(redactor, long)
    if "://" in expected:
        expected = redact._USERINFO.sub(lambda m: f"://{m[1]}:{redactor._marker('secret', m[2])}@", expected)
    assert redactor._text(long) == expected


def test_a_hostile_long_line_is_matched_at_a_few_places_only() -> None:
    # The text bench's oversized line: a 2 MB user agent after a status line holding a needle.
    redactor = Redactor(hash_key=b"k")
    line = f'"GET /v1?password=x HTTP/1.1" 200 - 0 1200 40 38 "{"A" * 2_000_000}" card {PAN}'
    starts = places(redactor, line, len(line))
    assert starts is not None and len(starts) < 10
    out = redactor._text(line)
    assert out == plain_sub(redactor, line) and PAN not in out and "password=[REDACTED:secret" in out


def test_too_many_places_fall_back_to_the_plain_scan() -> None:
    redactor = Redactor(hash_key=b"k")
    text = "cv " * 1000
    assert places(redactor, text, max_starts=10) is None
    fallback = places(redactor, text, max_starts=10)
    assert sub_at(redactor._pattern, redactor._replace, text, fallback) == plain_sub(redactor, text)


def test_the_case_twins_are_every_letter_re_reads_as_an_ascii_one() -> None:
    # fold_case reads these as their ASCII letter; any other non-ASCII character that
    # IGNORECASE matched to an ASCII letter or digit would be a place MatchStarts.find misses.
    ascii_alnum = re.compile(r"(?i)[a-z0-9]")
    found = {chr(c) for c in range(0x80, 0x110000) if ascii_alnum.fullmatch(chr(c))}
    assert found == {twin for twin, _ in CASE_TWINS}
    for twin, letter in CASE_TWINS:
        assert re.fullmatch(f"(?i){letter}", twin)


@pytest.mark.parametrize("piece", ["password=hunter2 ", "4111 1111 1111 1111 ", f"{jwt({'jti': 't'})} "])
def test_past_a_thousand_secrets_the_rest_of_a_text_is_one_marker(piece: str) -> None:
    # A line of 80,000 'password=x' cost a marker each: about a second of CPU for 900 KB.
    redactor = Redactor(hash_key=b"k")
    text = "start " + piece * 12_000
    out = redactor.redact(text)
    # a match may hold several cards (a long run of digit groups is read 48 digits at a time)
    assert redact.MAX_MATCHES_PER_TEXT < out.count("[REDACTED:") <= 3 * redact.MAX_MATCHES_PER_TEXT + 1
    assert out.startswith("start ")
    assert "withheld=" in out.rsplit("[REDACTED:", 1)[1]
    assert piece.split()[0].rsplit("=", 1)[-1] not in out  # no secret left in the withheld rest either
    assert redactor.redact(out) == out


def test_past_a_thousand_candidates_that_are_no_secret_the_rest_is_withheld_too() -> None:
    # 900 KB of "4111 " (no run of them passes Luhn) cost 1.1 s in Luhn checks and replaced nothing.
    redactor = Redactor(hash_key=b"k")
    out = redactor.redact("4111 " * 100_000)
    assert out.count("[REDACTED:") == 1 and "withheld=" in out and len(out) < 100_000
    assert redactor.redact(out) == out
