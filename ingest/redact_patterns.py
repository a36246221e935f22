"""The pieces of the redaction pattern (:class:`ingest.redact.Redactor`) that name a secret and take its value."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["CONTAINER", "name_pattern", "quoted_value"]


def name_pattern(names: Iterable[str]) -> str:
    # "api_key" must match api_key, api-key, API-KEY, apiKey: '-' and '_' are one character here, or none.
    parts = sorted({re.escape(n.lower().replace("-", "_")).replace("_", "[_-]?") for n in names if n}, key=len)
    return "|".join(reversed(parts)) or r"(?!x)x"


# A list or an object (two levels deep) as a secret's value: {"password": {"old": ..., "new": ...}},
# {"api_key": ["..."]}, Go's map[Cookie:[sid=...]]. It becomes one marker.
# A "]" or "}" inside one of its strings does not end it; an escaped quote (JSON inside a JSON string) opens none.
_ITEM = r'\\.|"(?:[^"\\\n]++|\\.)*+"'
CONTAINER = (
    rf"(?P<{{0}}_cv>\[(?:[^\[\]\n\"\\]++|{_ITEM}|\[(?:[^\[\]\n\"\\]++|{_ITEM})*+\])*+\]"
    rf"|\{{{{(?:[^{{{{}}}}\n\"\\]++|{_ITEM}|\{{{{(?:[^{{{{}}}}\n\"\\]++|{_ITEM})*+\}}}})*+\}}}})"
)


def quoted_value(group: str) -> str:
    # A quoted value runs to its closing quote (JSON escapes honoured, and JSON quoted
    # inside a JSON string: \"...\"); an unquoted one to a delimiter. Possessive: giving characters
    # back never helps, and re would keep a backtracking point for every character otherwise.
    return (
        rf'"(?P<{group}_qv>(?:[^"\\\n]++|\\.)*+)"'
        rf'|\\"(?P<{group}_ev>(?:(?!\\")[^\n])*+)\\"'
        rf"|'(?P<{group}_sv>[^'\n]*)'"
    )
