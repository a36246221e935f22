"""The pieces of the redaction pattern (:class:`ingest.redact.Redactor`) that name a secret and take its value."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "CONTAINER", "MAX_LIST_CREDENTIALS", "MORE_CREDENTIALS", "PAIR_COOKIE", "PAIR_CREDENTIAL", "PLACEHOLDER",
    "QUOTED", "QUOTED_ITEMS", "SCHEMES", "header_value", "name_pattern", "pair_closes", "pair_opens", "quoted_value",
    "separator",
]  # fmt: skip

# Authorization schemes kept in front of a marker (IANA registry, plus the common ApiKey/Token).
SCHEMES = ("basic", "bearer", "digest", "dpop", "hoba", "mutual", "negotiate", "ntlm", "token", "apikey")


def name_pattern(names: Iterable[str]) -> str:
    # "api_key" must match api_key, api-key, API-KEY, apiKey: '-' and '_' are one character here, or none.
    parts = sorted({re.escape(n.lower().replace("-", "_")).replace("_", "[_-]?") for n in names if n}, key=len)
    return "|".join(reversed(parts)) or r"(?!x)x"


# A query's parameter standing where a secret's value goes ("where token = $1", "password = ?", "= %(pw)s",
# SQLAlchemy's "token = :token_1", "password = :password"): no secret, and a marker there reads as one logged.
# ":name" only after a space, as SQL writes it, and numbered or the parameter's own name: "password = :hunter2"
# may well be a password. Only the whole value: "?)LEAK" is a value, "$1)" at the end of a clause is not.
PLACEHOLDER = (r"(?:\$[0-9]{1,5}|\?|%s|%\([A-Za-z_]\w{0,63}\)s"
               r"|(?<= ):(?:[A-Za-z_]\w{0,62}_[0-9]{1,4}|(?i:(?P=q_name))))\)*(?![^\s&#\"';,.])")

# A header as a list element after its quoted name: Python's [('Authorization', 'Bearer x')], ASGI's
# (b'authorization', b'...'), JSON's [["cookie", "sid=..."]] (pretty-printed, or inside a JSON string), Node's
# rawHeaders ['Host', 'h', 'Authorization', 'Bearer x'], a HAR entry {"name": "Authorization", "value": "..."}.
# The value is quoted (or a list), looks like the header's (see separator) and is followed by the next element
# or the end of its list, tuple or object: in a JSON object, "authorization", "result": ... is a key.


def pair_opens(group: str) -> str:
    """Empty; sets ``<group>_pair`` when the name after it is quoted, so a pair's separator may follow it."""
    return f"(?:(?P<{group}_pair>(?<=[\"']))|)"


def separator(group: str, pair_value: str) -> str:
    """Between a name and its value: ``:``, ``=`` or Ruby's ``=>`` (and a bytes repr's ``b``), or (``<group>_psep``)
    in a pair the name's closing quote, a comma and a HAR entry's ``"value":``, before a ``pair_value``: one
    that looks like the header's (a payments log's ``("authorization", "declined")`` is no header)."""
    return (rf"(?P<{group}_sep>\\?[\"']?\s*(?:=>|[:=])\s*(?:b(?=[\"']))?|(?({group}_pair)(?P<{group}_psep>"
            rf"\\?[\"']\s*,\s*(?:\\?[\"']value\\?[\"']\s*:\s*)?b?(?=\[|\\?[\"']{pair_value}))|(?!)))")


PAIR_CREDENTIAL = rf"(?:(?i:{'|'.join(SCHEMES)}) |eyJ|[^\s\"'\\]{{16}})"
"""An Authorization pair's value: a known scheme and a credential, a JWT, or a token of 16 characters or more."""
PAIR_COOKIE = r"[^\"'\n\\]*="
"""A cookie pair's value: ``name=value``."""


def pair_closes(group: str) -> str:
    """After a pair's value: the next element, the end of the pair's list, tuple or object, or the end of a line
    (a container not closed on its line takes the rest of the text: needing more after it, each of a hostile
    line's thousands of names scanned to its end again)."""
    return rf"(?({group}_psep)(?=\s*[,)\]}}]|(?![^\n])))"


# A list or an object as a secret's value: {"password": {"old": ..., "new": ...}}, {"api_key": ["..."]},
# Go's map[Cookie:[sid=...]]. It becomes one marker. A "]" or "}" inside one of its strings does not end
# it; an escaped quote (JSON inside a JSON string) opens none. Nested up to CONTAINER_DEPTH levels (the
# pattern doubles with each level); one nested deeper, or not closed on its line, takes the rest of the text:
# a secret three levels down was kept in the clear when two were the most a container could hold, and a
# pretty-printed one (json.dumps(..., indent=2): "{" alone on the key's line) when the rest of the line was.
CONTAINER_DEPTH = 6
# A string of a container: JSON's, JSON's inside a JSON string (\"...\"), Python's ('...'); an escape; a
# quote no string closes (an apostrophe in text).
_ITEM = r'\\"(?:(?!\\")[^\n])*+\\"|\\.|"(?:[^"\\\n]++|\\.)*+"|\'(?:[^\'\\\n]++|\\.)*+\'|\''


def _container(depth: int) -> str:
    nested = ""
    for _ in range(depth):
        parts = rf'[^\[\]{{}}\n"\'\\]++|{_ITEM}' + (f"|{nested}" if nested else "")
        nested = rf"\[(?:{parts})*+\]|\{{(?:{parts})*+\}}"
    return nested


CONTAINER = "(?P<{0}_cv>" + _container(CONTAINER_DEPTH).replace("{", "{{").replace("}", "}}") + r"|[\[{{](?s:.)*+)"


def quoted_value(group: str) -> str:
    # A quoted value runs to its closing quote (JSON escapes honoured, and JSON quoted
    # inside a JSON string: \"...\"); an unquoted one to a delimiter. Possessive: giving characters
    # back never helps, and re would keep a backtracking point for every character otherwise.
    return (
        rf'"(?P<{group}_qv>(?:[^"\\\n]++|\\.)*+)"'
        rf'|\\"(?P<{group}_ev>(?:(?!\\")[^\n])*+)\\"'
        rf"|'(?P<{group}_sv>[^'\n]*)'"
    )


# The values after the first of a header's list: JSON's ["Basic x", "Bearer y"], Python's ['Basic x', 'Bearer y'].
QUOTED = r'"(?:[^"\\\n]++|\\.)*+"|\'[^\'\n]*+\''
QUOTED_ITEMS = re.compile(r'(["\'])((?:[^"\'\\\n]++|\\.|(?!\1)["\'])*+)\1')
MAX_LIST_CREDENTIALS = 16
"""A header's values redacted one by one (a header sent many times); the rest of the list is one marker."""
# An Authorization value's credential: a token, or a parameter (Digest's response="...", AWS's Signature=...).
_TOKEN = r'(?!\[)(?:[\w-]+="[^"\n]*"|[\w-]+=[^\s"\',\]\\]+|[^\s"\',;\]\\]+)'  # "[": a marker
_PARAM = r'[\w-]+=(?:"[^"\n]*"|[^\s"\',\]\\]+)'  # AWS's SignedHeaders=host;x-amz-date holds ";"
_SCHEME = rf"(?i:{'|'.join(SCHEMES)})"


def header_value(open_group: str, group: str) -> str:
    """An unquoted Authorization value: its known scheme (``<group>_scheme``), its first credential
    (``<group>_uv``; without a known scheme in free text, the next word too: "SSWS 00abc", "Splunk 1f2e"),
    and the others (``<group>_more``: in a list any value, else a known scheme's credential or a
    parameter after a comma)."""
    return (rf"(?:(?P<{group}_scheme>{_SCHEME}) +(?=[^\s\"']))?"
            rf"(?![^\s\"',;\]\\]+ +\[REDACTED:)"  # "Bearer [REDACTED:...]": done
            rf"(?P<{group}_uv>{_TOKEN}(?({group}_scheme)|(?({open_group})|(?: +{_TOKEN})?)))"
            rf"(?P<{group}_more>(?:(?({open_group})(?: +|, *)(?:{_SCHEME} +)?(?:{_TOKEN})"
            rf"|, *(?:{_SCHEME} +(?:{_TOKEN})|{_PARAM})))*+)")  # fmt: skip


MORE_CREDENTIALS = re.compile(rf"(, *| +)((?:{_SCHEME} +)?(?:{_TOKEN}))")
