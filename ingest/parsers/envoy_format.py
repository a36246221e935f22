"""The grammar of Envoy format strings: literal text and ``%COMMAND(args):N%`` operators."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest.errors import FormatError

ENVOY_DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)
"""The format Envoy writes when none is configured (Ambassador prefixes it with ``ACCESS``)."""


@dataclass(frozen=True, slots=True)
class Literal:
    """Text a format writes as it is."""

    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """One command operator: ``%NAME%``, ``%NAME(arg)%`` or ``%NAME(arg):max_length%``.

    ``position`` is the offset of the opening ``%`` in the format, for error messages.
    """

    name: str
    arg: str | None
    max_length: int | None
    position: int

    @property
    def text(self) -> str:
        """The operator as written, without the ``%`` delimiters."""
        arg = "" if self.arg is None else f"({self.arg})"
        limit = "" if self.max_length is None else f":{self.max_length}"
        return f"{self.name}{arg}{limit}"


Token = Literal | Command

# Envoy's own grammar: the argument cannot contain ")", so START_TIME's
# strftime text (full of "%") is safe to scan up to the first ")".
_COMMAND = re.compile(r"%([A-Z0-9_]+)(?:\(([^)]*)\))?(?::(\d+))?%")


def tokenize(fmt: str) -> list[Token]:
    """Split ``fmt`` into literals and commands; ``%%`` is a literal ``%``.

    Raises ``ValueError`` naming the position of a ``%`` that starts no valid
    command (unknown *names* are fine: they are resolved later).
    """
    tokens: list[Token] = []
    text: list[str] = []
    index = 0
    while True:
        percent = fmt.find("%", index)
        if percent < 0:
            text.append(fmt[index:])
            break
        text.append(fmt[index:percent])
        if fmt.startswith("%%", percent):
            text.append("%")
            index = percent + 2
            continue
        match = _COMMAND.match(fmt, percent)
        if match is None:
            raise FormatError(f"format: no valid command operator at position {percent}: {fmt[percent:percent + 40]!r}")
        if any(text):
            tokens.append(Literal("".join(text)))
        text = []
        name, arg, limit = match.groups()
        tokens.append(Command(name, arg, None if limit is None else int(limit), percent))
        index = match.end()
    if any(text):
        tokens.append(Literal("".join(text)))
    return tokens
