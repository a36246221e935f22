"""Redaction: secrets leave a record where it is normalized, before any sink, log or terminal sees it.

One entry point, :meth:`Redactor.redact`, for each record kind that carries
text read from outside: an :class:`~ingest.records.Event` (every text field and
label), a :class:`~ingest.records.DeadLetter` (its detail and its raw line) and
a plain string (a log line). Transactions and alerts are built from redacted
events only, so they need no pass of their own.

What is replaced, and by which marker (``h`` is an HMAC-SHA256 of the secret
under the configured key, truncated, so two uses of one secret still match):

=====================================================  ===============================================
found                                                  becomes
=====================================================  ===============================================
a card number: 13-19 digits passing Luhn, spaces or    ``[REDACTED:pan last4=1111 h=…]``
dashes allowed between groups
a JWT (``eyJ…`` + two more base64url segments)         ``[REDACTED:jwt jti=… sub=… h=…]`` (claims
                                                       read without verifying, kept when harmless)
``cvv``/``cvc`` followed by 3-4 digits                 ``cvv: [REDACTED:cvv h=…]``
a configured header (``Authorization``, ``Cookie``…)   ``Authorization: Bearer [REDACTED:… h=…]``
``NAME=value`` for a configured query parameter        ``password=[REDACTED:secret h=…]``
``"NAME": value`` for a configured JSON key            ``"token": "[REDACTED:secret h=…]"``
``scheme://user:password@`` in a URL                   ``scheme://user:[REDACTED:secret h=…]@``
=====================================================  ===============================================

A name matches a configured one when, case-insensitive and with ``-`` read as
``_``, it ends with it: ``api_key`` covers ``x-api-key``, ``token`` covers
``access_token``; a separator may be left out (``apiKey``). A list or an object as a
secret's value (a header list, ``{"password": {"old": …}}``) becomes one marker. Markers
are never redacted again, so a second pass (a log line quoting a stored value) leaves
them as they are.

Cost: clean records must pay almost nothing. Each text of an event (a field,
a flag, a label) is folded once and checked with a few substring searches, one
of them for digit runs; only a record that trips one of them goes through the
full patterns. Texts found clean are remembered (a bounded set, clean verdicts
only), so those that repeat from record to record (a route, a user agent, a
client, a token) cost one set lookup, and a hex request id (a UUID) is searched
for digit runs only, the one needle a hex string can hold, and once a request:
the other side's line finds its id remembered clean. A text holding a group of
four digits, a dash and three more (any dashed card number does, and one UUID in
seven) is also tried with the card-number pattern alone, in a hex id at its first
character only. The full patterns
cost ~200 ns a character wherever they run, so a suspect text (but a very short
one) is searched for where a match can start (a name, a digit run, ...) and the
patterns are tried there only: a 2 MB line costs a few substring searches, not 0.4 s.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import operator
import re
import secrets
from collections.abc import Callable, Collection, Iterable
from typing import Any, overload

import msgspec

from ingest.records import DeadLetter, Event, RawRecord
from ingest.redact_key import DEFAULT_HASH_KEY_ENV, resolve_hash_key
from ingest.redact_patterns import (
    CONTAINER, MAX_LIST_CREDENTIALS, MORE_CREDENTIALS, QUOTED, QUOTED_ITEMS, SCHEMES, header_value, name_pattern,
    PAIR_COOKIE, PAIR_CREDENTIAL, PLACEHOLDER, pair_closes, pair_opens, quoted_value, separator,
)
from ingest.redact_starts import CHARS_PER_MATCH_START, LONG_TEXT_CHARS, MatchStarts, name_spellings, sub_at
from ingest.redact_values import card_numbers, jwt_claims
from ingest.settings import HasRedact, RedactSettings

log = logging.getLogger(__name__)

MAX_MATCHES_PER_TEXT = 1000
"""Candidates (a secret, or digit groups that may be a card) judged one by one in a text; past them
its rest is one marker (``withheld=<characters>``). 900 KB of ``password=x`` or of card-like digit
groups cost ~1 us a character (a second of CPU a line) in markers and Luhn checks: a client's
headers must not buy that much of the pipeline."""
DEFAULT_QUERY_PARAMS = ("password", "token", "secret", "api_key")
DEFAULT_JSON_KEYS = ("password", "token", "secret", "api_key")
DEFAULT_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
MARKER_PREFIX = "[REDACTED:"
_KINDS = ("pan", "jwt", "cvv", "secret", "authorization", "cookie")
_CVV_WORDS = ("cvv", "cvc")
# Claims are kept in a marker only when they cannot smuggle a secret back in.
# One key per process when none is configured: hashes then match within this process only.
_PROCESS_KEY = secrets.token_bytes(32)

# Folded text: lower case, every digit and space a "0", "_" read as "-". A card number then
# shows as 13 zeros (digits, spaces) or, written with dashes, as 4-4-4-4 or 4-6-4 groups.
# Not 4-4-4: the middle groups of one UUID in ~70 look like that, and each sent its event
# through the full patterns.
_FOLD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _", b"abcdefghijklmnopqrstuvwxyz00000000000-"
)
_PAN_NEEDLES = ("0" * 13, "0000-0000-0000-0000", "0000-000000-0000")
# Spaces and dashes mixed in one card number ("4111-1111 1111-1111" folds to 0000-000000000-0000,
# "4111 1111-1111 1111" to 000000000-000000000): the full patterns take them, but none of the
# needles above found them. A UUID holds neither run unless 9 digits follow its 4th group.
_MIXED_PAN_NEEDLES = ("0000-000000000", "000000000-0000")
# A request id is nearly always hex and dashes (a UUID): folded by this table (hex letters
# read as "x", anything else as "?"), only needles of digits and dashes can be in it.
_HEX_ID_FOLD = bytes(
    ord("0") if c in b"0123456789" else ord("x") if c in b"abcdefABCDEF" else c if c == ord("-") else ord("?")
    for c in range(256)
)
# Every other card number written with a dash holds "0000-000" folded (a group of 4, a dash, a
# group of 3 or more: 4-4-5, 4-3-3-3, 4-6-3, which none of the needles above found), and so does
# one UUID in 7: a text holding it is suspect only if the patterns' own "pan" alternative, run
# alone, finds a place to match (~0.6 us on a UUID). It is not a needle for that reason.
_DASHED_PAN_HINT = "0000-000"
# The full patterns' card number: not next to a letter or a dash-joined hex group (ids and
# UUIDs are not card numbers).
_PAN = (
    r"(?<![0-9A-Za-z_])(?<![0-9A-Za-z_]-)(?P<pan>[0-9](?:[ -]?[0-9]){12,47})(?![0-9A-Za-z_])(?!-[0-9A-Za-z_])"
)
_PAN_ALONE = re.compile(_PAN)
_USERINFO = re.compile(r"://([^\s/@:\[\]]+):(?!\[REDACTED:)([^\s/@\[\]]+)@")

# Text fields of an Event, fetched in one C call on the hot path.
_TEXT_FIELDS = tuple(
    spec.name
    for spec in msgspec.structs.fields(Event)
    if spec.type == (str | None) and spec.name != "id"
)
_text_values = operator.attrgetter(*_TEXT_FIELDS)
Labelled = Callable[[str], Iterable[tuple[str, str]]]
"""A format's label values in a raw line: ``(label name, value as the line holds it)``."""


def _repeating_texts(event: Event) -> tuple[str | None, ...]:
    """Every text field of ``event`` but its request id: the values that repeat from record to record.

    A route, a user agent, a client, a path, a token's jti: their clean verdicts are kept
    (see Redactor._suspect_event). Not the request id, new for nearly every record, which
    would only push the others out. Read as attributes, not with operator.attrgetter: a
    third of its cost for 22 fields. tests/ingest/test_redact_precheck.py checks it reads them all.
    """
    return (
        event.method, event.path, event.protocol, event.response_code_details, event.upstream_host,
        event.upstream_cluster, event.route_name, event.authority, event.user_agent, event.forwarded_for,
        event.source_ip, event.peer_identity, event.tls_version, event.user_id, event.org_id, event.action,
        event.outcome, event.level, event.message, event.token_jti, event.token_sub, event.token_org,
    )  # fmt: skip


# Values a Redactor keeps as clean; past this it forgets them all and starts over, so
# hostile variety costs the plain search per value and a bounded amount of memory.
CLEAN_CACHE_VALUES = 1 << 15
# Request ids a Redactor keeps as clean, for the other side of the same request: a gateway
# line and the app's line carry one id and are read close together (by time), so the
# second costs a set lookup instead of a search. Past this it forgets them all.
CLEAN_CACHE_IDS = 1 << 12


def remember_clean(memory: set[Any], found: Collection[Any], cap: int, *always: Any) -> None:
    """Add ``found`` to a memory of clean verdicts held to ``cap``: past it, all is forgotten but ``always``."""
    if len(memory) + len(found) > cap:
        memory.clear()
        memory.update(always)
    if len(found) <= cap:  # more at once than the memory holds: none of it kept
        memory.update(found)


# A header's name starts a word, or follows WSGI's "HTTP_" (request.META["HTTP_AUTHORIZATION"]).
_HEADER_START = r"(?:(?<=HTTP_)|(?<=http_)|(?<![A-Za-z0-9_-]))"


class Redactor:
    """Replaces secrets in records and text by markers; see the module docstring for what and how.

    Build one per process with :meth:`from_config`. Its one state after
    construction is the sets of texts and request ids it found clean, which
    change no result, only its cost: it is safe to share between threads.
    """

    def __init__(
        self,
        *,
        query_params: Iterable[str] = DEFAULT_QUERY_PARAMS,
        json_keys: Iterable[str] = DEFAULT_JSON_KEYS,
        headers: Iterable[str] = DEFAULT_HEADERS,
        hash_key: bytes | None = None,
        hash_hex_chars: int = 12,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self._key = hash_key or _PROCESS_KEY
        self._hex_chars = hash_hex_chars
        query_params, json_keys, headers = tuple(query_params), tuple(json_keys), tuple(headers)
        self._names = {
            **{_norm(n): "secret" for n in (*query_params, *json_keys)},
            **{_norm(n): "cvv" for n in _CVV_WORDS},
            **{_norm(n): _header_kind(n) for n in headers},
        }
        # Pre-check needles, in the folded form _suspect compares: any of them sends a value
        # through the full patterns. A needle containing another one is redundant.
        needles = {"@", "eyj", "cv", *_PAN_NEEDLES, *_MIXED_PAN_NEEDLES}
        needles.update(spelling for n in (*query_params, *json_keys, *headers) for spelling in name_spellings(_fold(n)))
        self._needles = tuple(
            sorted(n for n in needles if not any(o != n and o in n for o in needles))
        )
        # The card-number needles are digit runs holding "0000" (four digits): a text without
        # it, most of them, skips those searches. Four of the five also hold _DASHED_PAN_HINT,
        # looked for anyway: only a text holding it searches them (each search ~70 ns).
        self._run_needles = tuple(n for n in self._needles if "0000" in n and _DASHED_PAN_HINT not in n)
        self._dashed_needles = tuple(n for n in self._needles if _DASHED_PAN_HINT in n)
        self._other_needles = tuple(n for n in self._needles if "0000" not in n)
        # The needles a hex id can hold: runs of digits and dashes. Every other one holds a
        # character no hex id has, unless a configured name is spelt in hex letters ("fee"):
        # then ids take the plain search (None). Those without "0000" (none but for an odd
        # config) are searched first; the others as _suspect searches them.
        in_hex_id = [n for n in self._needles if set(n) <= set("0abcdef-")]
        self._hex_id_needles = None if any(set(n) & set("abcdef") for n in in_hex_id) else tuple(in_hex_id)
        self._hex_id_other_needles = tuple(n for n in in_hex_id if "0000" not in n)
        # Texts (field values, flags, label pairs) already found clean: see _suspect_event.
        # Only clean verdicts are kept, so a stale or raced entry can cost a search, never a secret.
        self._clean: set[str | tuple[str, str] | None] = {None}
        self._clean_ids: set[str] = set()  # see CLEAN_CACHE_IDS
        # A needle holding the "\x1f" that joins an event's texts could span two of them:
        # then (an odd config) texts are never judged one by one.
        self._judge_texts_alone = not any("\x1f" in n for n in self._needles)
        marker = (
            r"\[REDACTED:(?:" + "|".join(_KINDS) + r")(?: last4=[0-9]{4})?(?: withheld=[0-9]{1,9})?"
            r"(?: jti=(?!(?:[^ \]]*?[0-9]){13})(?![^ \]]*eyJ)[A-Za-z0-9._@+-]{1,64})?"
            r"(?: sub=(?!(?:[^ \]]*?[0-9]){13})(?![^ \]]*eyJ)[A-Za-z0-9._@+-]{1,64})?"
            r" h=[0-9a-f]{8,64}\]"
        )
        not_marker = r"(?!\s*\[REDACTED:)"
        unquoted = r"[^\s,;&#}\]\"'{\[]+"
        # A header's value stops at "]" and "\\" too: Go prints http.Header as map[Authorization:[Bearer x]],
        # and a "\\" starts JSON's escaped quote, which belongs to the line around the value. Credentials
        # after the first: a header sent twice ("Basic x, Bearer y"), Go's list ([Bearer x Basic y]).
        header_unquoted = header_value("h_open", "h")
        cookie_unquoted = r"(?P<c_uv>[^\r\n\"']+)"
        auth_headers = name_pattern(n for n in headers if _header_kind(n) == "authorization")
        cookie_headers = name_pattern(n for n in headers if _header_kind(n) == "cookie")
        self._pattern = re.compile(
            rf"(?P<marker>{marker})"
            rf"|{_HEADER_START}{pair_opens('h')}(?P<h_name>(?i:{auth_headers}))"
            rf"{separator('h', PAIR_CREDENTIAL)}{not_marker}(?P<h_open>(?:\[(?!REDACTED:)\s*)+)?{not_marker}(?!\[)"
            rf"(?:{quoted_value('h')}|{header_unquoted}){pair_closes('h')}"
            rf"(?(h_open)(?P<h_qmore>(?:\s*,\s*(?:{QUOTED}|[^\s,\]\"']+))*+))"
            rf"|{_HEADER_START}{pair_opens('c')}(?P<c_name>(?i:{cookie_headers}))"
            rf"{separator('c', PAIR_COOKIE)}{not_marker}"
            rf"(?:{CONTAINER.format('c')}|{quoted_value('c')}|{cookie_unquoted}){pair_closes('c')}"
            rf"|(?P<q_name>(?i:{name_pattern(query_params)}))(?P<q_sep> ?= ?)(?![=\s]){not_marker}(?!{PLACEHOLDER})"
            rf"(?:{CONTAINER.format('q')}|{quoted_value('q')}|(?P<q_uv>[^\s&#\"';,]+))"
            rf"|(?P<j_name>(?i:{name_pattern(json_keys)}))(?P<j_sep>\\?[\"']?\s*(?:=>|:)\s*){not_marker}"
            rf"(?:{CONTAINER.format('j')}|{quoted_value('j')}|(?P<j_uv>{unquoted}))"
            rf"|(?P<cvv_name>(?i:cvv2?|cvc2?))(?P<cvv_sep>\\?[\"']?\s*[:=]?\s*\\?[\"']?)(?P<cvv>[0-9]{{3,4}})(?![0-9])"
            r"|(?P<jwt>eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)"
            rf"|{_PAN}"
        )

        # Where a match of the pattern can start (a long text is matched only there).
        self._starts = MatchStarts.for_names((*query_params, *json_keys, *headers))

    @classmethod
    def from_config(cls, config: RedactSettings) -> Redactor:
        """The redactor the ``redact`` config section describes; reads the hash key (file or env).

        Raises :class:`~ingest.errors.ConfigError` for an unreadable or empty key file.
        """
        return cls(
            query_params=config.query_params,
            json_keys=config.json_keys,
            headers=config.headers,
            hash_key=resolve_hash_key(config),
            hash_hex_chars=config.hash_hex_chars,
            enabled=config.enabled,
        )

    # -- the entry point ---------------------------------------------------------------------

    @overload
    def redact(self, record: Event) -> Event: ...
    @overload
    def redact(self, record: DeadLetter) -> DeadLetter: ...
    @overload
    def redact(self, record: str) -> str: ...
    def redact(self, record: Event | DeadLetter | str) -> Event | DeadLetter | str:
        """``record`` with every secret replaced by its marker; the same object when it holds none."""
        if not self.enabled:
            return record
        if type(record) is Event:
            return self._event(record)
        if type(record) is DeadLetter:
            return self._dead_letter(record)
        if isinstance(record, str):
            return self._text(record) if self._suspect(record) else record
        raise TypeError(f"cannot redact a {type(record).__name__}")

    def wrap(self, parser: Callable[[RawRecord], Event | DeadLetter], labelled: Labelled | None = None
             ) -> Callable[[RawRecord], Event | DeadLetter]:  # fmt: skip
        """``parser`` whose every result is redacted: the one place records are redacted.
        ``labelled``: its format's label values in a line (see :meth:`redact_dead_letter`)."""
        if not self.enabled:
            return parser
        suspect_event, redact_fields, redact_letter = self._suspect_event, self._redacted_fields, self._dead_letter

        def parse_redacted(record: RawRecord) -> Event | DeadLetter:
            result = parser(record)
            # type() is: exact, and cheaper per record than isinstance; mypy narrows only its if branch
            if type(result) is Event:
                return redact_fields(result) if suspect_event(result) else result
            return redact_letter(result, labelled)  # type: ignore[arg-type]

        return parse_redacted

    # -- internals ------------------------------------------------------------------------------

    def _suspect(self, text: str) -> bool:
        # One C pass folds case and digits, then a few substring searches (str searches
        # beat bytes ones here): a regex over the same text cost twice as much.
        folded = text.encode("utf-8", "surrogatepass").translate(_FOLD).decode("latin-1")
        if "0000" in folded:
            if self._card_needle_in(folded):
                return True
            if _DASHED_PAN_HINT in folded and _PAN_ALONE.search(text) is not None:
                return True
        for needle in self._other_needles:
            if needle in folded:
                return True
        return False

    def _suspect_event(self, event: Event) -> bool:
        """Whether a needle is in any of ``event``'s texts: then it goes through the full patterns.

        The verdict of searching all its texts joined, since no needle spans two of them.
        But most texts of a record repeat earlier records' (a route, a user agent, a client,
        a token's jti): one set lookup each, in C, finds them clean again, and only the
        request id and the texts not seen before are searched.
        """
        clean = self._clean
        request_id = event.request_id
        texts, flags, labels = _repeating_texts(event), event.response_flags, event.labels
        if (
            clean.issuperset(texts)
            and (not flags or clean.issuperset(flags))
            and (not labels or clean.issuperset(labels))
        ):
            return request_id is not None and self._suspect_id(request_id)
        if not self._judge_texts_alone:
            return self._suspect(_joined_texts(event))
        unseen = {*texts, *flags, *labels}.difference(clean)
        for text in unseen:
            if isinstance(text, tuple):  # a label: its name and its value
                if self._suspect(text[0]) or self._suspect(text[1]):
                    return True
            elif text and self._suspect(text):
                return True
        remember_clean(clean, unseen, CLEAN_CACHE_VALUES, None)
        return request_id is not None and self._suspect_id(request_id)

    def _suspect_id(self, request_id: str) -> bool:
        # _suspect's verdict, in a third of its time for a hex id: its needles are runs of
        # digits and dashes, and digits and dashes fold the same in both tables. An id
        # found clean is remembered for the request's other side (CLEAN_CACHE_IDS).
        clean_ids = self._clean_ids
        if request_id in clean_ids:
            return False
        needles = self._hex_id_needles
        folded = request_id.encode("utf-8", "surrogatepass").translate(_HEX_ID_FOLD).decode("latin-1")
        if needles is None or "?" in folded:
            if self._suspect(request_id):
                return True
        else:
            # _suspect's searches in its order (a needle with a letter but hex ones is never
            # found here): digits and dashes fold alike in both tables.
            for needle in self._hex_id_other_needles:
                if needle in folded:
                    return True
            if "0000" in folded:
                if self._card_needle_in(folded):
                    return True
                if _DASHED_PAN_HINT in folded:
                    # In a hex id every character but a dash is a letter or digit, so the
                    # pattern's look-behinds let a card start only at the first character or
                    # after "--": one place to try instead of a search.
                    if "--" in folded or folded[0] == "-":
                        if _PAN_ALONE.search(request_id) is not None:
                            return True
                    elif folded[0] == "0" and _PAN_ALONE.match(request_id) is not None:
                        return True
        remember_clean(clean_ids, (request_id,), CLEAN_CACHE_IDS)
        return False

    def _card_needle_in(self, folded: str) -> bool:
        # A card number's needle in a folded text holding "0000": a digit run, else (only where
        # _DASHED_PAN_HINT is) one of the dashed ones.
        for needle in self._run_needles:
            if needle in folded:
                return True
        if _DASHED_PAN_HINT in folded:
            for needle in self._dashed_needles:
                if needle in folded:
                    return True
        return False

    def _event(self, event: Event) -> Event:
        return self._redacted_fields(event) if self._suspect_event(event) else event

    def _redacted_fields(self, event: Event) -> Event:
        # The full patterns over every text of an event the pre-check found suspect.
        changes: dict[str, Any] = {}
        for name in _TEXT_FIELDS:
            value = getattr(event, name)
            if name == "token_jti" and value and value.isdigit():
                # A numeric token id (a snowflake) passes Luhn one time in ten: it is the key revocation
                # lists name the token by, and a JWT the gateway checked chose it, not a card holder.
                continue
            if value and self._suspect(value) and (new := self._text(value)) != value:
                changes[name] = new
        if event.labels:
            labels = tuple((k, self._labelled(k, v)) for k, v in event.labels)
            if labels != event.labels:
                changes["labels"] = labels
        if event.response_flags:
            flags = tuple(self._text(f) for f in event.response_flags)
            if flags != event.response_flags:
                changes["response_flags"] = flags
        if not changes:
            return event
        return msgspec.structs.replace(event, **changes)

    def _labelled(self, name: str, value: str) -> str:
        # A label named like a secret (a header operator, a JSON key) is a secret whatever it holds.
        norm = _norm(name.rsplit(".", 1)[-1])
        squashed = norm.replace("_", "")
        for configured, kind in self._names.items():
            if norm == configured or norm.endswith("_" + configured) or squashed.endswith(configured.replace("_", "")):
                if value.startswith(MARKER_PREFIX):
                    return value
                if kind == "authorization":
                    return self._credential(value)
                if kind == "cvv" and not value.strip().isdigit():
                    break
                return self._marker(kind, value)
        return self._text(value)

    def redact_dead_letter(self, letter: DeadLetter, labelled: Labelled | None) -> DeadLetter:
        """``redact(letter)``, where ``labelled(line)`` gives the values its format's label
        operators hold in the line: a text format logs ``%REQ(AUTHORIZATION)%`` by its place, with
        no name beside it, so only the format says which value is a credential."""
        return self._dead_letter(letter, labelled) if self.enabled else letter

    def _dead_letter(self, letter: DeadLetter, labelled: Labelled | None = None) -> DeadLetter:
        # Raw bytes may not be UTF-8: surrogateescape keeps every undecodable byte as it was.
        line = new_line = letter.line.decode("utf-8", "surrogateescape")
        detail = self.redact(letter.detail)
        for name, value in labelled(line) if labelled is not None else ():
            if (marked := self._labelled(name, value)) != value:
                new_line = new_line.replace(value, marked)
        new_line = self._text(new_line) if self._suspect(new_line) else new_line
        if detail == letter.detail and new_line == line:
            return letter
        return DeadLetter(
            letter.origin, letter.reason, detail, new_line.encode("utf-8", "surrogateescape")
        )

    def _text(self, text: str) -> str:
        if len(text) < LONG_TEXT_CHARS:
            text = self._pattern.sub(self._replace, text)
        else:
            starts = None if self._starts is None else self._starts.find(text, len(text) // CHARS_PER_MATCH_START)
            text = sub_at(self._pattern, self._replace, text, starts, MAX_MATCHES_PER_TEXT, self._withheld, "marker")
        if "://" in text:
            text = _USERINFO.sub(lambda m: f"://{m[1]}:{self._marker('secret', m[2])}@", text)
        return text

    def _withheld(self, rest: str) -> str:
        return self._marker("secret", rest, f" withheld={len(rest)}")

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup
        if match["marker"] is not None:
            return match[0]
        if match["pan"] is not None:
            return self._pans(match["pan"])
        if match["jwt"] is not None:
            return self._jwt(match["jwt"])
        if match["cvv"] is not None:
            return f"{match['cvv_name']}{match['cvv_sep']}{self._marker('cvv', match['cvv'])}"
        for prefix, name_kind in (("h", "authorization"), ("c", "cookie"), ("q", "secret"), ("j", "secret")):
            name = match[f"{prefix}_name"]
            if name is None:
                continue
            sep = match[f"{prefix}_sep"]
            head = f"{name}{sep}"
            if prefix in "cjq" and (container := match[f"{prefix}_cv"]) is not None:
                quote = sep[:2] if sep.startswith('\\"') else sep[:1] if sep[:1] in "\"'" else ""
                return f"{head}{quote}{self._marker(name_kind, container)}{quote}"
            if prefix == "h" and match["h_open"]:
                head += match["h_open"]
            for quote, group in (('"', "qv"), ('\\"', "ev"), ("'", "sv")):
                if (value := match[f"{prefix}_{group}"]) is not None:
                    more = match["h_qmore"] if prefix == "h" else None  # the list's other values
                    more = self._more_credentials(QUOTED_ITEMS, more,
                                                  lambda m: f"{m[1]}{self._credential(m[2])}{m[1]}")  # fmt: skip
                    return f"{head}{quote}{self._value(name_kind, value)}{quote}{more}"
            if prefix == "h":
                scheme = match["h_scheme"]
                more = self._more_credentials(MORE_CREDENTIALS, match["h_more"],
                                              lambda m: m[1] + self._credential(m[2]))  # fmt: skip
                return head + (f"{scheme} " if scheme else "") + self._value("authorization", match["h_uv"]) + more
            value = self._value(name_kind, match[f"{prefix}_uv"])
            # "token": 5 stays JSON: the marker is text.
            return head + (f'"{value}"' if head.endswith('"') or '":' in head else value)
        raise AssertionError(f"unhandled match group {kind}")  # pragma: no cover

    def _more_credentials(self, item: re.Pattern[str], more: str | None, redact: Callable[[re.Match[str]], str]) -> str:
        """A header's further values (``more``), each redacted; past :data:`MAX_LIST_CREDENTIALS`, one marker."""
        if not more:
            return ""
        found = list(itertools.islice(item.finditer(more), MAX_LIST_CREDENTIALS + 1))
        if len(found) <= MAX_LIST_CREDENTIALS:
            return item.sub(redact, more)
        cut = found[-1].start()  # a list of hundreds of values would cost a marker each: the rest is one
        return item.sub(redact, more[:cut]) + self._withheld(more[cut:])

    def _value(self, kind: str, value: str) -> str:
        if kind == "authorization":
            return self._credential(value)
        if value.startswith(MARKER_PREFIX):
            return value
        return self._marker(kind, value)

    def _credential(self, value: str) -> str:
        # Keep the scheme ("Bearer", "Basic"): it tells the analyst what was presented.
        scheme, space, credential = value.strip().partition(" ")
        if not space or scheme.lower() not in SCHEMES:
            scheme, space, credential = "", "", value.strip()
        if credential.startswith(MARKER_PREFIX) or not credential:
            return value
        if credential.startswith("eyJ") and credential.count(".") == 2:
            secret = self._jwt(credential)
        else:
            secret = self._marker("authorization", credential)
        return f"{scheme}{space}{secret}"

    def _jwt(self, token: str) -> str:
        claims = jwt_claims(token)
        extra = "".join(f" {name}={claims[name]}" for name in ("jti", "sub") if name in claims)
        return self._marker("jwt", token, extra)

    def _pans(self, span: str) -> str:
        pieces: list[str] = []
        done = 0
        for start, end, number in card_numbers(span):
            pieces += (span[done:start], self._marker("pan", number, f" last4={number[-4:]}"))
            done = end
        return "".join(pieces) + span[done:] if pieces else span

    def _marker(self, kind: str, secret: str, extra: str = "") -> str:
        digest = hmac.new(self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"{MARKER_PREFIX}{kind}{extra} h={digest[: self._hex_chars]}]"


def _joined_texts(event: Event) -> str:
    # Every text of an event in one string, for one search instead of one per field.
    text = "\x1f".join(filter(None, _text_values(event)))
    if event.labels or event.response_flags:
        text = "\x1f".join((text, *event.response_flags, *(f"{k}\x1f{v}" for k, v in event.labels)))
    return text


def _fold(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _header_kind(name: str) -> str:
    return "cookie" if "cookie" in name.lower() else "authorization"


def build_redactor(config: HasRedact, *, warn_unkeyed: bool = False) -> Redactor:
    """The redactor for a whole config.

    ``warn_unkeyed`` (serve): say so when no hash key is configured, since replicas
    and restarts then hash one secret differently. A replay is one process: its
    hashes match within the run either way.
    """
    redactor = Redactor.from_config(config.redact)
    if warn_unkeyed and redactor.enabled and resolve_hash_key(config.redact) is None:
        log.warning(
            "redact_hash_key_unset: set redact.hash_key_file or $%s so a secret hashes the same "
            "in every process and run; using a random key for this process",
            config.redact.hash_key_env or DEFAULT_HASH_KEY_ENV,
        )
    return redactor
