"""How the fused readers (:mod:`ingest.parsers.fused`) test and type a value in the code they write.

Each table gives, per Event field, the expressions a generated line uses instead of the field's
coerce function (:data:`ingest.normalize._COERCE`) where the value's type and range already say
what that function would return; anything else still takes the call. :class:`Absent` writes the
test for a value that is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.normalize import MAX_DURATION_MS, MAX_INT64, MAX_TS

# A typed JSON number already in range is its own value: what the field's coerce function
# returns for it, without the call and its isinstance checks; anything else takes the call.
_COUNT = ((f"type(x) is int and 0 <= x <= {MAX_INT64}", "x"),)
_DURATION = (
    (f"type(x) is int and 0 <= x <= {MAX_DURATION_MS!r}", "float(x)"),
    (f"type(x) is float and 0.0 <= x <= {MAX_DURATION_MS!r}", "x"),
)
_EPOCH = ((f"type(x) is int and 0 <= x < {MAX_TS!r}", "float(x)"), (f"type(x) is float and 0.0 <= x < {MAX_TS!r}", "x"))
TYPED: dict[str, tuple[tuple[str, str], ...]] = {
    "status": (("type(x) is int and (100 <= x <= 599 or x == 0)", "x"),),
    "bytes_received": _COUNT,
    "bytes_sent": _COUNT,
    "duration_ms": _DURATION,
    "upstream_service_time_ms": _DURATION,
    "token_exp": _EPOCH,
    "token_iat": _EPOCH,
}
# The same as one expression, the start of ``<expression> else coerce(x)``.
FAST = {field: " else ".join(f"{value} if {condition}" for condition, value in typed) for field, typed in TYPED.items()}
# Decimal digits as text (a text format's numbers, a header's value in JSON): what the field's
# coerce function makes of them, read without its calls. Up to ``longest`` digits, so that an
# int stays within int64 (str -> int has no length limit to meet) and an epoch below 1e11
# (parse_timestamp reads larger numbers as milliseconds); longer text takes the call.
# A float through int: the same value (up to 12 digits is exact in a double), read in half the time.
FROM_DIGITS = {
    "status": ("int(x)", 18),
    "bytes_received": ("int(x)", 18),
    "bytes_sent": ("int(x)", 18),
    "duration_ms": ("float(int(x))", 12),
    "upstream_service_time_ms": ("float(int(x))", 12),
    "token_exp": ("float(int(x))", 10),
    "token_iat": ("float(int(x))", 10),
}
# Fields whose every value of up to ``longest`` digits is in range: no check after typing.
IN_RANGE_FROM_DIGITS = frozenset({"bytes_received", "bytes_sent", "duration_ms", "upstream_service_time_ms"})


@dataclass(frozen=True, slots=True)
class Absent:
    """Which values mean "not set": ``null`` always, ``"-"`` (Envoy) and ``""`` when asked."""

    dash: bool
    empty: bool

    def test(self, text: bool) -> str:
        """The condition for a value that is set; ``text``: the value is a str whenever it is not None."""
        tests = ["x" if text and self.empty else "x is not None"]  # a str is false only when ""
        if self.empty and not text:
            tests.append("x != ''")
        if self.dash:
            tests.append("x != '-'")
        return " and ".join(tests)
