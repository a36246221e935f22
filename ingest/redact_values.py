"""What a secret the redactor found shows of itself, read without trusting it.

A digit run is a card number only if it passes Luhn; a JWT's ``jti`` and ``sub`` are
kept in its marker when they read as plain ids (:class:`~ingest.redact.Redactor`).
"""

from __future__ import annotations

import base64
import re

import orjson

_CLAIM = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_GROUP = re.compile(r"[0-9]+")
_UUID_DIGITS = re.compile(r"[0-9]{8}-[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{12}")
_MAX_JWT_PAYLOAD_CHARS = 8192


def luhn_valid(digits: str) -> bool:
    """Whether a run of decimal digits passes the Luhn check card numbers carry."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_numbers(span: str) -> list[tuple[int, int, str]]:
    """The card numbers in a run of digits and separators the pattern took: (start, end, digits) of each.

    Card numbers are runs of whole groups inside it (a date or an amount may sit next to one). A
    printed card starts with a group of 4 and goes on in groups of 3-6 (4-4-4-4, 4-6-5, 4-4-4-4-3):
    that also keeps a hostile "111 111 111 ..." from costing a Luhn check per window.
    """
    if _UUID_DIGITS.fullmatch(span):
        return []
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(span)]
    found_all: list[tuple[int, int, str]] = []
    i = 0
    while i < len(groups):
        found = None
        digits = ""
        for j in range(i, len(groups)):
            start, end = groups[j]
            if j > i and (j == i + 1 and groups[i][1] - groups[i][0] != 4 or end - start < 3):
                break
            digits += span[start:end]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_valid(digits):
                found = (j, digits)
        if found is None:
            i += 1
            continue
        j, number = found
        found_all.append((groups[i][0], groups[j][1], number))
        i = j + 1
    return found_all


def jwt_claims(token: str) -> dict[str, str]:
    """``jti`` and ``sub`` of a JWT's payload when they read as plain ids; nothing is verified."""
    payload = token.split(".")[1]
    if len(payload) > _MAX_JWT_PAYLOAD_CHARS:
        return {}
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    if not isinstance(claims, dict):
        return {}
    kept = {}
    for name in ("jti", "sub"):
        value = claims.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value)
            if _CLAIM.fullmatch(text) and "eyJ" not in text and sum(c.isdigit() for c in text) < 13:
                kept[name] = text
    return kept
