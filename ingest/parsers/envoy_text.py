"""Envoy text access logs: a format string compiled once into one anchored regex.

Per line the parser runs one ``fullmatch`` and types its groups straight into an
Event (the fused reader, :mod:`ingest.parsers.fused`); a line it does not take is
read into a dict and normalized. Only a line that fails pays for a second, more
lenient match and for telling a line cut short (``truncated``) from one that never
fit the format (``format_mismatch``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.addresses import canonical, forwarded_client, parse_ip
from ingest.errors import FormatError
from ingest.normalize import SHARED_TEXT_FIELDS, InvalidValueError, normalize
from ingest.parsers.decode import DEFAULT_MAX_LINE_BYTES, Parser, decode_line
from ingest.parsers.envoy_format import ENVOY_DEFAULT_FORMAT, Command, Literal, Token, tokenize
from ingest.parsers.envoy_operators import (
    HEADER_OPERATORS, LONG_FLAGS, Apply, Converted, CutForwardedFor, Kind, ScalarClaim, Slot, resolve
)
from ingest.parsers.fused import Fused, Leaf, Run, Whole, fuse
from ingest.records import AMBIGUOUS_CLIENTS_LABEL, DeadLetter, Event, RawRecord

__all__ = ["ENVOY_DEFAULT_FORMAT", "TextPattern", "compile_text_format", "compile_text_pattern"]

# Ambassador / Emissary print their (Envoy default) format after "ACCESS ".
_LINE_PREFIX = "(?:ACCESS )?"
_DETAILS = {
    "truncated": "line ends before the format does",
    "format_mismatch": "line does not fit the format",
}
_Match = Callable[[str], "re.Match[str] | None"]


@dataclass(frozen=True, slots=True)
class _Absorbed:
    """A line's values when one header held ``" "`` (:meth:`TextPattern._absorbed`), the fields of the headers
    that could have held it (the one taken first), and the client addresses its readings give, if they differ."""

    groups: tuple[str | None, ...]
    holder: str
    clients: str | None


AMBIGUOUS_LABEL = "gatewatch.ambiguous_quotes"
"""The label of an event whose line had ``" "`` inside a header's value: the headers that could hold it."""


class TextPattern:
    """A compiled Envoy format string: finds each operator's value in one text."""

    def __init__(self, fmt: str, *, whole_line: bool) -> None:
        tokens = tokenize(fmt)
        if whole_line and tokens and isinstance(tokens[-1], Literal):
            # Sources hand over lines with or without their ending; decode_line strips it and trailing spaces.
            last = tokens[-1].text.rstrip()
            tokens = tokens[:-1] + ([Literal(last)] if last else [])
        self.format = fmt
        self.slots: tuple[Slot, ...] = tuple(resolve(t) for t in tokens if isinstance(t, Command))
        if not self.slots:
            raise FormatError(f"format: no command operator in {fmt!r}")
        prefix = _LINE_PREFIX if whole_line else ""
        strict, lenient, cut, all_absent_matched = _pieces(tokens, self.slots)
        self._tokens, self._prefix, self._strict_pieces, self._lenient_pieces = tokens, prefix, strict, lenient
        self._starts: dict[int, _Match] = {}  # the first n tokens' lenient regex, compiled when a line needs it
        self.strict: _Match = re.compile(prefix + "".join(strict), re.DOTALL).fullmatch
        """The format's match of a whole text, each operator's value a group (``None``: ``-``, not set)."""
        self._lenient: _Match | None = (
            re.compile(prefix + "".join(lenient), re.DOTALL).fullmatch if lenient != strict else None
        )
        self._cut_short = re.compile(prefix + _nested(cut), re.DOTALL).fullmatch
        self._separators = sum(t.text.count(_SEPARATOR) for t in tokens if isinstance(t, Literal))
        self._absorbers = _absorbers(tokens, self.slots)
        self._forwarded_for = next(  # the X-Forwarded-For operator's index, whose right end is Envoy's
            (i for i, slot in enumerate(self.slots)
             if slot.field == "forwarded_for" and (not slot.apply or isinstance(slot.apply, CutForwardedFor))), None
        )  # fmt: skip
        # A value that needs a reader is parked under a private key, then read.
        self._keys = tuple(
            f"\x00{index}" if slot.apply else slot.field for index, slot in enumerate(self.slots)
        )
        self._applied: tuple[tuple[str, str, Apply], ...] = tuple(
            (f"\x00{index}", slot.field, slot.apply)
            for index, slot in enumerate(self.slots)
            if slot.apply is not None
        )
        # When the regex itself leaves every "-" uncaptured (None) and no two
        # operators fill one field, the dict is built by zip alone, in C.
        self._zip_only = all_absent_matched and len(set(self._keys)) == len(self._keys)

    def extract(self, text: str) -> dict[str, Any] | None:
        """The fields found in ``text``, ``None`` if it does not fit the format.

        Envoy's ``-`` ("not set") is left out or ``None``, which normalize
        treats alike. Raises ``InvalidValueError`` when a value cannot be read
        (an impossible date).
        """
        found = self._groups(text)
        if found is None:
            return None
        groups, holder = (found.groups, found.holder) if isinstance(found, _Absorbed) else (found, None)
        if self._zip_only:
            fields = dict(zip(self._keys, groups))
        else:
            fields = {key: value for key, value in zip(self._keys, groups) if value is not None and value != "-"}
        for key, field, apply in self._applied:
            value = fields.pop(key, None)
            if value is not None:
                apply(field, value, fields)
        if holder is not None:
            fields[AMBIGUOUS_LABEL] = holder
            if isinstance(found, _Absorbed) and found.clients:
                fields[AMBIGUOUS_CLIENTS_LABEL] = found.clients
        return fields

    def labelled_values(self, text: str) -> list[tuple[str, str]]:
        """The values ``text`` holds for the format's label operators (``req.authorization``,
        ``req.cookie``...), as logged; none if ``text`` does not fit the format.

        In a dead letter's raw line a header's value stands where the format puts it, with no
        name beside it: redaction judges it by the operator's name (:meth:`Redactor.redact_dead_letter`).
        """
        groups = self._groups(text.rstrip())
        if groups is None:
            return []
        if isinstance(groups, _Absorbed):
            groups = groups.groups
        return [(slot.field, value) for slot, value in zip(self.slots, groups) if slot.is_label and value]

    def _groups(self, text: str) -> tuple[str | None, ...] | _Absorbed | None:
        """Each operator's value in ``text`` (None: ``-``), or None if ``text`` does not fit the format."""
        match = self.strict(text)
        if match is None and self._lenient is not None:
            match = self._lenient(text)
        if match is not None:
            return match.groups()
        return self._absorbed(text) if self._absorbers and _SEPARATOR in text else None

    def _absorbed(self, text: str) -> _Absorbed | None:
        """The values of a line in which one client header holds ``" "``, the separator of quoted values.

        Envoy writes a header's value as the client sent it: a User-Agent of ``a" "b`` makes a
        line with one separator too many, which no value may otherwise hold. The extra separators
        are given to one header at a time and the line is matched with them masked, in linear
        time; a reading of X-Forwarded-For counts only if its right-most entry (Envoy's) is then an
        address. The user agent's reading is taken first, then the others' in the format's order.

        The line cannot tell which header the client wrote them in: ``x, 10.0.0.5" "Mozilla`` as
        a user agent reads as well as ``10.0.0.5`` appended to X-Forwarded-For. So when readings
        disagree on X-Forwarded-For, the line gives no client address from it: a client must not
        choose its own. The event is labelled ``gatewatch.ambiguous_quotes`` with every header
        that could hold the separators, the one taken first, and then ``gatewatch.ambiguous_clients``
        with the addresses the readings give (``token_replay`` tells such clients apart by them).

        Other values are the first reading's: a request id the readings disagree on is common
        (``python-requests" "x`` as a user agent reads as well with ``x`` as the request id), and
        leaving it out would make every such request a bypass. A client that writes ``" "`` in
        its Host header can so give its line another request's id, if Envoy logs that Host.
        """
        extra = text.count(_SEPARATOR) - self._separators
        if extra <= 0 or "\x00" in text:  # no NUL: a mask in the text is one this method put there
            return None
        match = self._lenient or self.strict
        readings: list[tuple[str, tuple[str | None, ...]]] = []
        for index, before in self._absorbers:
            found = match(_masked(text, before, extra))
            if found is None:
                continue
            groups = found.groups()
            value = groups[index]
            if value is None or _MASK not in value or sum(_MASK in (g or "") for g in groups) > 1:
                continue  # the masked separators fell elsewhere: not this header's
            value = value.replace(_MASK, _SEPARATOR)
            field = self.slots[index].field
            if field == "forwarded_for" and parse_ip(forwarded_client(value) or "") is None:
                continue  # its right end, Envoy's, is no address: the separators are not its
            readings.append((field, (*groups[:index], value, *groups[index + 1 :])))
        if not readings:
            return None
        groups = readings[0][1]
        clients = None
        xff = self._forwarded_for
        if xff is not None and any(other[xff] != groups[xff] for _, other in readings[1:]):
            groups = (*groups[:xff], None, *groups[xff + 1 :])  # the client could have chosen it
            addresses = {canonical(client) for _, other in readings
                         if (client := forwarded_client(other[xff] or "")) and parse_ip(client)}  # fmt: skip
            clients = ",".join(sorted(addresses)) or None
        return _Absorbed(groups, ",".join(field for field, _ in readings), clients)

    def _fused_plan(self) -> tuple[_Match, list[Leaf], list[Run]] | None:
        """The fused reader's regex, leaves and runs (see :meth:`fused`), ``None`` if it has none."""
        if not self._zip_only:
            return None
        for slot in self.slots:
            if slot.is_label or not (slot.apply is None or isinstance(slot.apply, (Converted, ScalarClaim))):
                return None
        fillers = Counter(slot.field for slot in self.slots)
        shared = [  # a claim in text is a scalar, kept as it is
            (slot.apply is None or isinstance(slot.apply, ScalarClaim)) and slot.pattern is None
            and slot.field in SHARED_TEXT_FIELDS and fillers[slot.field] == 1
            for slot in self.slots
        ]  # fmt: skip
        # Runs: two or more shared text operators in a row (only literals between them).
        run_of: dict[int, list[int]] = {}  # first operator's index -> the run's operators
        current: list[int] = []
        for index in [*range(len(self.slots)), -1]:
            if index >= 0 and shared[index]:
                current.append(index)
                continue
            if len(current) >= 2:
                run_of[current[0]] = current
            current = []
        last_of = {indexes[-1] for indexes in run_of.values()}
        pieces: list[str] = []
        numbers: list[int] = []  # each operator's group number in the fused regex
        runs: list[tuple[int, list[int]]] = []  # (group number, operators' indexes)
        group = 0
        commands = iter(range(len(self.slots)))
        for token, piece in zip(self._tokens, self._strict_pieces):
            if isinstance(token, Literal):
                pieces.append(piece)
                continue
            index = next(commands)
            if index in run_of:
                group += 1
                runs.append((group, run_of[index]))
                pieces.append("(")
            group += 1
            numbers.append(group)
            pieces.append(piece)
            if index in last_of:
                pieces.append(")")
        in_runs = {index for _, indexes in runs for index in indexes}
        plain: list[Leaf] = []
        applied: list[Leaf] = []
        for index, slot in enumerate(self.slots):  # a leaf's path is its group's number
            path = (numbers[index],)
            if index in in_runs:
                continue
            if isinstance(slot.apply, Converted):
                applied.append(Leaf(path, slot.field, convert=slot.apply.convert))
            elif slot.apply is not None:  # a claim in text is always a scalar: kept as it is
                applied.append(Leaf(path, slot.field))
            else:  # a number's group matched \d+: decimal digits, unless the format gave a pattern
                digits = slot.kind is Kind.NUMBER and slot.pattern is None
                plain.append(Leaf(path, slot.field, digits=digits))
        read_runs = [
            Run(number, tuple(Leaf((numbers[index],), self.slots[index].field) for index in indexes))
            for number, indexes in runs
        ]
        # extract() writes applied values after the plain ones: a later leaf wins, so the same order.
        match = re.compile(self._prefix + "".join(pieces), re.DOTALL).fullmatch
        return match, plain + applied, read_runs

    def fused(self, name: str) -> tuple[_Match, Fused] | None:
        """A reader that types the groups of a match straight into an Event (see
        :mod:`ingest.parsers.fused`), with the regex whose match it takes, or ``None`` when this
        format needs the general path (a label, two operators back to back).

        That regex is :attr:`strict` with one more group around each run of shared text
        operators (:class:`~ingest.parsers.fused.Run`): it matches the same lines, with the same
        value in each operator's group. The reader returns ``None`` for any line it does not take
        plainly (a value that does not type), and the caller then runs :meth:`extract` and
        :func:`normalize`.
        """
        plan = self._fused_plan()
        if plan is None:
            return None
        match, leaves, runs = plan
        # Only None is absent: the regex leaves "-" uncaptured, and normalize keeps "" as text.
        reader = fuse(leaves, dash_is_absent=False, name=name, empty_is_absent=False, runs=runs)
        return None if reader is None else (match, reader)

    def fused_parser(self, name: str, general: Parser, max_line_bytes: int, trusted_hops: int = 0) -> Parser | None:
        """The reader of :meth:`fused` as the whole parser (``whole`` of :func:`~ingest.parsers.fused.fuse`):
        it decodes and matches the line itself and hands what it does not take to ``general``."""
        plan = self._fused_plan()
        if plan is None:
            return None
        match, leaves, runs = plan
        whole = Whole(general, max_line_bytes, match)
        return fuse(leaves, False, name, empty_is_absent=False, runs=runs, whole=whole, trusted_hops=trusted_hops)

    def diagnose(self, text: str) -> str:
        """Why ``text`` did not fit: ``truncated`` if it is the start of a line that would."""
        return "truncated" if self._cut_short(text) else "format_mismatch"

    def mismatch_detail(self, text: str) -> str:
        """Where ``text`` stops fitting the format: the token (operator or text) that the longest start
        of the format it fits is followed by, and the offset (in characters) where that start ends.

        A line of another format (Istio's default read as Envoy's) then names what to fix instead of
        only saying it does not fit. Only a line that failed pays: a binary search over the format's
        starts (a start that fits means every shorter one fits), a handful of linear matches.
        """
        fits, fails = 0, len(self._tokens) + 1
        end = 0
        while fails - fits > 1:
            middle = (fits + fails) // 2
            found = self._start(middle)(text)
            if found is None:
                fails = middle
            else:
                fits, end = middle, found.end()
        if fits == len(self._tokens):
            return f"{_DETAILS['format_mismatch']}: the line goes on after the format ends, at offset {end}"
        token = self._tokens[fits]
        if not isinstance(token, Literal):
            return f"{_DETAILS['format_mismatch']}: %{token.text}% does not match at offset {end}"
        before = self._tokens[fits - 1] if fits else None
        if isinstance(before, Command):  # "2x4" for a status reads as "2", then no " ": name the operator
            found = self._start(fits - 1)(text)
            start = found.end() if found is not None else 0
            return (f"{_DETAILS['format_mismatch']}: %{before.text}% at offset {start} is not followed by "
                    f"{token.text!r} (offset {end})")  # fmt: skip
        return f"{_DETAILS['format_mismatch']}: expected {token.text!r} at offset {end}"

    def _start(self, tokens: int) -> _Match:
        """The match of the format's first ``tokens`` tokens at the start of a text (lenient, as a line is read)."""
        found = self._starts.get(tokens)
        if found is None:
            regex = self._prefix + "".join(self._lenient_pieces[:tokens])
            found = self._starts[tokens] = re.compile(regex, re.DOTALL).match
        return found


_SEPARATOR = '" "'
_MASK = "\x00\x1f\x00"  # stands in for a separator inside a value while the line is matched


def _masked(text: str, before: int, extra: int) -> str:
    """``text`` with its separators ``before`` .. ``before + extra - 1`` (counted from 0, left to right)
    replaced by the mask: two replaces in C, where a Python step per separator made a line of 300,000
    of them cost seconds of CPU. ``text`` holds no mask of its own (no NUL), so the second replace,
    which puts the first ``before`` back, finds exactly the masks the first one wrote, in order."""
    return text.replace(_SEPARATOR, _MASK, before + extra).replace(_MASK, _SEPARATOR, before)


def _absorbers(tokens: list[Token], slots: tuple[Slot, ...]) -> tuple[tuple[int, int], ...]:
    """The quoted client headers that may hold ``" "`` (see :meth:`TextPattern._absorbed`), most
    likely first: each one's operator index and the separators the format puts before it."""
    found: list[tuple[int, int, int]] = []  # (preference, operator index, separators before)
    separators = 0
    index = 0
    for position, token in enumerate(tokens):
        if isinstance(token, Literal):
            separators += token.text.count(_SEPARATOR)
            continue
        slot = slots[index]
        client_header = HEADER_OPERATORS.get(slot.command.split("(")[0]) in _CLIENT_HEADERS
        if client_header and _is_quoted(tokens, position) and _quoted_value(slot, tokens, position) is not None:
            preference = {"user_agent": 0, "forwarded_for": 2}.get(slot.field, 1)
            found.append((preference, index, separators))
        index += 1
    return tuple((index, before) for _, index, before in sorted(found))


_CLIENT_HEADERS = frozenset({"REQ", "TRAILER"})  # what the client sends; RESP comes from Billing


def compile_text_pattern(fmt: str, *, whole_line: bool = True) -> TextPattern:
    """Compile ``fmt``; ``whole_line`` allows Ambassador's ``ACCESS`` prefix and a line ending.

    Raises ``ValueError`` naming the operator and position of a broken format.
    """
    return TextPattern(fmt, whole_line=whole_line)


def compile_text_format(fmt: str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, trusted_hops: int = 0) -> Parser:
    """A parser for access logs written with the Envoy format string ``fmt``; ``trusted_hops``: the
    gateway's ``xff_num_trusted_hops`` (:func:`ingest.normalize.gateway_values`)."""
    pattern = compile_text_pattern(fmt, whole_line=True)
    extract = pattern.extract

    def parse(record: RawRecord) -> Event | DeadLetter:
        text = decode_line(record, max_line_bytes)
        if isinstance(text, DeadLetter):
            if text.reason != "invalid_utf8":
                return text
            # Envoy logs a client's header as sent, and HTTP allows bytes past ASCII in one: a single 0xFF in
            # a User-Agent must not hide the request from every rule. Read with each such byte as U+FFFD; a
            # line that does not fit the format even so stays the invalid_utf8 dead letter.
            read = parse_text(record.line.decode("utf-8", "replace").rstrip(), record)
            return read if isinstance(read, Event) else text
        return parse_text(text, record)

    def parse_text(text: str, record: RawRecord) -> Event | DeadLetter:
        if "\n" in text:  # read as one, two lines would mix their requests' fields
            detail = f"holds {text.count(chr(10)) + 1} lines: the shipper joined them (send one line a record)"
            return DeadLetter(record.origin, "format_mismatch", detail, record.line)
        try:
            fields = extract(text)
        except InvalidValueError as error:
            return DeadLetter(record.origin, "invalid_value", str(error), record.line)
        if fields is None:
            reason = pattern.diagnose(text)
            detail = _DETAILS[reason] if reason == "truncated" else pattern.mismatch_detail(text)
            return DeadLetter(record.origin, reason, detail, record.line)
        return normalize(fields, record.origin, record.line, record.created, trusted_hops)

    # The common line is read by the fused reader, which hands the others to parse().
    return pattern.fused_parser("gateway.format", parse, max_line_bytes, trusted_hops) or parse


def _pieces(
    tokens: list[Token], slots: tuple[Slot, ...]
) -> tuple[list[str], list[str], list[tuple[str, str]], bool]:
    """Per token: strict regex, lenient regex, and (non-capturing, cut-short) regexes.

    The last item tells whether every operator's ``-`` is matched outside its
    capturing group, which needs the character that follows it to be known.

    Every value that :func:`_bounded` can bound is matched atomically: one way only, so a line
    costs time linear in its length whatever the format, and a line that fits no reading is
    refused as fast as one that fits (see :func:`_bounded` for why that is safe).
    """
    strict: list[str] = []
    lenient: list[str] = []
    cut: list[tuple[str, str]] = []
    all_absent_matched = True
    separators = "".join(sorted({t.text[0] for t in tokens
                                 if isinstance(t, Literal) and t.text[:1] in _SEPARATOR_CHARS}))  # fmt: skip
    commands = iter(slots)
    for index, token in enumerate(tokens):
        if isinstance(token, Literal):
            escaped = re.escape(token.text)
            strict.append(escaped)
            lenient.append(escaped)
            cut.append((escaped, _prefixes(token.text[:-1])))
            continue
        slot = next(commands)
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        quoted = _is_quoted(tokens, index)
        if after is None:
            follows: str | None = r"\Z"
        elif isinstance(after, Literal):
            follows = re.escape(after.text[0])
        else:  # two operators back to back: "-" is captured and filtered per line
            follows = None
            all_absent_matched = False
        bounded = _bounded(slot, quoted, after, separators)
        fragment = slot.fragment(quoted) if bounded is None else bounded[0]
        atomic = bounded is not None and not _joins_flags(slot, quoted, separators)
        strict.append(_capture(fragment, follows, atomic))
        loose = _quoted_value(slot, tokens, index) if quoted else None
        lenient.append(_capture(loose, follows, atomic=True) if loose else strict[-1])
        full = f"(?>{fragment}|-)" if atomic else f"(?:-|{fragment})"
        partial = bounded[1] if bounded is not None else slot.partial
        cut.append((full, partial))
    return strict, lenient, cut, all_absent_matched


def _is_quoted(tokens: list[Token], index: int) -> bool:
    """The operator at ``index`` is enclosed in double quotes."""
    before = tokens[index - 1] if index > 0 else None
    after = tokens[index + 1] if index + 1 < len(tokens) else None
    return (isinstance(before, Literal) and before.text.endswith('"')
            and isinstance(after, Literal) and after.text.startswith('"'))  # fmt: skip


def _capture(fragment: str, follows: str | None, atomic: bool = False) -> str:
    # "-" followed by what follows the operator is "not set": matched, not captured. Atomic when the
    # value is bounded: "-" read as "not set" or as a value ends in the same place, so trying both on
    # a line that fits neither would double the work at each "-".
    if not follows:
        return f"(-|{fragment})"
    return f"(?>-(?={follows})|({fragment}))" if atomic else f"(?:-(?={follows})|({fragment}))"


_SEPARATOR_CHARS = "|,;"
"""Characters a format may separate its values with besides spaces (a tab is a space to ``\\s``)."""


def _bounded(slot: Slot, quoted: bool, after: Token | None, separators: str = "") -> tuple[str, str] | None:
    """The value's regex and its cut-short regex, matching one way only (possessive), or ``None``
    where the kind's own fragments must stay (a START_TIME pattern, two operators back to back).

    A value ends where what follows it starts: a quoted one at its quote; an unquoted one at a
    space when a space follows, else at the first character ``c`` of the following literal
    (``|``, ``,``, a tab): ``[^c]``, which lets a value hold spaces (a browser's User-Agent in a
    tab-separated format), and a ``c`` not followed by the rest of a longer literal (one ``|``
    of a ``||``-separated value). Giving characters back can then never help, so none are: a
    ``\\S+`` that also matched the separator once made the regex try every split of the line
    (MOSN's 38-field ``||`` format never finished a line). The price: in a format separated by
    one character, a value cannot hold it (``a,b`` is two fields of a comma-separated format).
    Only separators bound values so (:data:`_SEPARATOR_CHARS` and a tab): before another literal
    (``:`` between an IPv6 address and its port) the kind's own fragment stays, backtracking.
    ``separators``: those of the format's literals (``|``, ``,``, ``;``); the last value and one
    followed by a space hold none, so a separator a client writes into a header makes its line
    fit no reading (a dead letter) instead of shifting the values after it: a User-Agent of
    ``x|6.6.6.6:1`` gave the line a client address of the client's choosing.
    """
    if slot.pattern is not None or (after is not None and not isinstance(after, Literal)):
        return None
    if slot.kind is Kind.NUMBER:
        digit_follows = after is not None and after.text[0].isdecimal()
        return None if digit_follows else (r"\d++", r"\d*")
    if slot.kind not in (Kind.TEXT, Kind.JSON):
        return None
    if quoted:
        text, partial = '[^"]*+', '[^"]*'
    elif after is None or after.text[0] == " ":
        text, partial = (rf"[^\s{re.escape(separators)}]++", rf"[^\s{re.escape(separators)}]*") if separators \
            else (r"\S++", r"\S*")
    elif after.text[0] not in _SEPARATOR_CHARS + "\t":
        return None  # ":" after an IPv6 address, "->", "=": a value may hold it, and few such literals follow
    else:
        char, rest = re.escape(after.text[0]), re.escape(after.text[1:])
        text = f"[^{char}]++" if not rest else f"(?:[^{char}]|{char}(?!{rest}))++"
        partial = f"[^{char}]*" if not rest else f"(?:[^{char}]|{char}(?!{rest}))*"
    if slot.kind is Kind.JSON:
        ends = r"\Z" if after is None else re.escape(after.text)
        return f"{_json_object(ends)}|{text}", ".*"
    if _joins_flags(slot, quoted, separators):
        # Envoy joins several flags with commas (503 "UF,URX"): in a comma-separated format the flags
        # after the first are known names, each followed by what ends a value. Given back one by one
        # (not atomic) when the line does not fit otherwise: a User-Agent of "DC" after "UAEX" is the
        # next field, not a flag, or a client could make its lines dead letters. At most 8 of them, so
        # a hostile line costs at most 9 tries of the rest of the format.
        text = rf"{text}(?:,(?:{_FLAG_NAMES})(?![^\s{re.escape(separators)}])){{0,8}}"
    return text, partial


def _joins_flags(slot: Slot, quoted: bool, separators: str) -> bool:
    """%RESPONSE_FLAGS% in a comma-separated format, unquoted: its value may hold the separator."""
    return slot.field == "response_flags" and "," in separators and not quoted and slot.pattern is None


_FLAG_NAMES = "|".join(sorted({*LONG_FLAGS, *LONG_FLAGS.values()}, key=lambda name: (-len(name), name)))


def _json_object(ends: str) -> str:
    """A JSON object (dynamic metadata) that ends at a ``}`` followed by ``ends``, what the format
    writes after it; a ``}`` inside one of its strings does not end it. Possessive, so a line full
    of ``} {`` costs one scan, where ``\\{.*?\\}`` tried every ``}`` for every value."""
    string = r'"(?:[^"\\]++|\\.)*+"'
    return rf'\{{(?:[^"}}]++|{string}|\}}(?!{ends}))*+\}}(?={ends})'


def _quoted_value(slot: Slot, tokens: list[Token], index: int) -> str | None:
    """A quoted value that may itself hold quotes, except where the closing quote is.

    Deterministic on purpose: a quote is part of the value unless what follows
    it is the rest of the closing literal (or ``" "``), so a user agent full of
    quotes costs a linear scan, not a backtracking search. Possessive too, as giving
    characters back can never help: otherwise ``re`` keeps a backtracking point for
    every character of the value (~600 bytes each: 1.2 GB for a 1 MiB line).
    """
    if slot.pattern is not None or slot.kind not in (Kind.TEXT, Kind.JSON):
        return None
    closing = tokens[index + 1]
    assert isinstance(closing, Literal)
    rest = closing.text[1:]
    if rest:
        follow = re.escape(rest)
    elif index + 2 == len(tokens):
        follow = r"\Z"
    else:  # "%A%"%B%: the quote is followed by another value; keep it strict
        return None
    # `" "` is how quoted fields are usually separated: never inside a value,
    # so the last field cannot swallow the fields before it either.
    stops = "|".join(sorted({follow, r'\ "'}))
    value = f'(?:[^"]++|"(?!{stops}))*+'
    if slot.kind is not Kind.JSON:
        return value
    closing_quote = '"' + follow
    return f"{_json_object(closing_quote)}|{value}"


def _prefixes(text: str) -> str:
    """A regex matching any non-empty prefix of ``text`` ('' if there is none)."""
    pattern = ""
    for char in reversed(text):
        pattern = f"{re.escape(char)}(?:{pattern})?" if pattern else re.escape(char)
    return pattern


def _nested(pieces: list[tuple[str, str]]) -> str:
    """A regex matching the start of a line of this format that ends early.

    Piece by piece: the piece then the rest (or the end), or the piece cut short
    at the end. Only run on lines that failed the full match.
    """
    tail = ""
    for full, partial in reversed(pieces):
        after = rf"(?:{tail}|\Z)" if tail else r"\Z"
        alternatives = [f"{full}{after}"]
        if partial:
            alternatives.append(rf"(?:{partial})\Z")
        tail = "(?:" + "|".join(alternatives) + ")"
    return tail or r"\Z"
