"""What a secret the redactor found shows of itself, read without trusting it.

A digit run is a card number only if it passes Luhn; a JWT's ``jti`` and ``sub`` are
kept in its marker when they read as plain ids (:class:`~ingest.redact.Redactor`).
"""

from __future__ import annotations

import base64
import re

import orjson

_CLAIM = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
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
