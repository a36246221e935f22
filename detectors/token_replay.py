"""token_replay: one token presented from several client addresses within its lifetime.

A short-lived JWT is bound to the client that obtained it; the same ``jti``
arriving from a second address means the token was copied. The client address
is what the gateway saw; for an app-only transaction it is the app's peer,
unless that peer is the gateway itself (Billing sees the gateway pod as the
peer of every proxied request, which says nothing about the client), or no
gateway identity or network is configured to tell.

Each ``jti`` is remembered until ``exp + skew_allowance_secs`` (or
``default_token_lifetime_secs`` after first use when ``exp`` is unknown), plus
the join window and ``late_transaction_allowance_secs``: a transaction reaches
the rule a join window after its request's last record, and a request that ran
for minutes (begun while the token lived) is judged only when it ends. A request
longer than the allowance that began just before ``exp`` is judged after the
token was forgotten, and cannot be told from the token's first use.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import msgspec
from pydantic import Field, model_validator

from detectors.base import Detector, DetectorConfig, DetectorContext, Example, Finding, Severity
from detectors.sample import T0, app_event, gateway_event, transaction
from ingest.ecs import iso
from ingest.records import AMBIGUOUS_CLIENTS_LABEL, Event, Transaction


@dataclass(slots=True)
class _Token:
    until: float  # uses after this are outside the token's lifetime
    seq: int  # tells this entry from a replaced one in the eviction heap
    distinct_addresses: int = 0  # addresses counted; past the cap, more than it keeps
    # address -> (first_seen, first request id); the newest max_addresses_per_token
    addresses: dict[str, tuple[float, str]] = field(default_factory=dict)


class TokenReplay(Detector):
    """One ``jti`` from ``min_distinct_addresses`` or more client addresses within its lifetime."""

    rule_id = "token_replay"
    counts = "new addresses"
    severity = Severity.HIGH
    keyed_by = "token.jti"

    class Config(DetectorConfig):
        min_distinct_addresses: int = Field(2, ge=2)  # one address is every token's normal use
        skew_allowance_secs: float = 30.0
        default_token_lifetime_secs: float = 3600.0
        # beyond correlate.join_window_secs: the longest request judged against uses before it (a detection
        # audit's 200 s export begun 10 s before exp from a second address went unseen at 120)
        late_transaction_allowance_secs: float = Field(600.0, ge=0)
        max_addresses_per_token: int = Field(16, ge=2)
        max_tracked_tokens: int = Field(1_000_000, ge=1)

        @model_validator(mode="after")
        def _cap_covers_threshold(self) -> Self:
            if self.max_addresses_per_token < self.min_distinct_addresses:
                raise ValueError("max_addresses_per_token must be at least min_distinct_addresses")
            return self

    config: Config

    def __init__(self, config: DetectorConfig, context: DetectorContext) -> None:
        super().__init__(config, context)
        self._tokens: dict[str, _Token] = {}
        self._expiry: list[tuple[float, int, str]] = []  # (until, seq, jti) min-heap
        self._seq = 0

    class State(msgspec.Struct, array_like=True, gc=False):
        tokens: dict[str, _Token]  # a plain dataclass of plain values: decoded field by field
        expiry: list[tuple[float, int, str]]
        seq: int

    def state(self) -> State:
        return self.State(self._tokens, self._expiry, self._seq)

    def restore_state(self, state: State) -> None:
        self._tokens, self._expiry, self._seq = dict(state.tokens), list(state.expiry), state.seq
        heapq.heapify(self._expiry)

    def partition_key(self, item: Event | Transaction) -> str | None:
        if type(item) is not Transaction:
            return None
        jti = _first_jti(item)
        return jti if jti else None

    def partition_keys(self, item: Event | Transaction) -> tuple[str, ...]:
        # Every token the request's lines carry: under one request id (a client may set its own) each attempt is
        # judged, and a second token must reach its own partition.
        if type(item) is not Transaction:
            return super().partition_keys(item)
        return tuple(dict.fromkeys(event.token_jti for event in (*item.gateway, *item.app) if event.token_jti))

    def observe_transaction(self, txn: Transaction) -> Iterable[Finding]:
        gateway = txn.gateway
        # Most requests: one gateway line carrying the token and the client address.
        first = gateway[0] if len(gateway) == 1 else None
        if first is not None and (jti := first.token_jti) and (address := first.source_ip):
            entry = self._tokens.get(jti)
            if entry is not None and address in entry.addresses and first.ts <= entry.until:
                return ()  # most requests: a known client reusing its live token
            if not self.owns(jti):
                return ()
            finding = self._judge(jti, address, first.ts, first.token_exp, txn, first_use=True)
            return () if finding is None else (finding,)
        findings = []
        for n, (jti, address, ts, exp) in enumerate(self._uses(txn)):
            if self.owns(jti):
                finding = self._judge(jti, address, ts, exp, txn, first_use=n == 0)
                if finding is not None:
                    findings.append(finding)
        return findings

    def _uses(self, txn: Transaction) -> list[tuple[str, str, float, float | None]]:
        """Each (token, client address) the request presented, with the time and ``exp`` of its first attempt.

        Every gateway attempt counts, not only the first: a client that sets its own ``X-Request-Id`` (Envoy
        keeps it when ``preserve_external_request_id`` is on) sent its own token, then a stolen one under the
        same id, and the stolen one was never judged (a flood trial). An attempt without a token takes the
        app's; one without an address, the request's (see :meth:`_client_address`).
        """
        uses: dict[tuple[str, str], tuple[float, float | None]] = {}
        # The request's own token and address, looked up once: a request id held open has thousands of attempts.
        request_jti = request_address = _UNKNOWN
        for attempt in txn.gateway:
            jti = attempt.token_jti
            if not jti:
                if request_jti is _UNKNOWN:
                    request_jti = _first_jti(txn)
                jti = request_jti
                if not jti:
                    continue
            address = attempt.source_ip
            if not address:
                if request_address is _UNKNOWN:
                    request_address = self._client_address(txn)
                address = request_address
            if address is not None and (jti, address) not in uses:
                uses[(jti, address)] = (attempt.ts, attempt.token_exp)
        if not txn.gateway:
            jti = _first_jti(txn)
            address = self._client_address(txn) if jti else None
            if jti and address is not None:
                uses[(jti, address)] = (txn.first_ts, None)
        return [(jti, address, ts, exp) for (jti, address), (ts, exp) in uses.items()]

    def _judge(
        self, jti: str, address: str, ts: float, exp: float | None, txn: Transaction, first_use: bool
    ) -> Finding | None:
        """One use of ``jti`` from ``address`` at ``ts``: a finding if it is the token's new address within its life.

        The request's first use is dated by its first record (an app line may precede the gateway's by clock
        skew); a use at or before ``until`` puts that record there too, so it is looked up only past that.
        """
        entry = self._tokens.get(jti)
        # Most uses are a known client reusing its live token.
        if entry is not None and address in entry.addresses and ts <= entry.until:
            return None
        if first_use:
            ts = txn.first_ts
        cfg = self.config
        if entry is None or ts > entry.until:
            if exp is None:
                exp = _exp_of(txn, jti)
            if isinstance(exp, (int, float)):
                until = exp + cfg.skew_allowance_secs
                if ts > until:
                    return None  # a dead token: token_expired_accepted's business, not replay
            else:
                until = ts + cfg.default_token_lifetime_secs
            entry = self._track(jti, until)
        if address in entry.addresses:
            return None
        if len(entry.addresses) >= cfg.max_addresses_per_token:
            # Past the cap the oldest address makes room. Counting every use of an address not kept grew the
            # alert with each reuse (a detection audit); refusing new ones kept a later wave of new addresses,
            # in a later alert window, from alerting at all (the check of that fix). Now the newest addresses
            # are known, and an address comes back as new only after as many others came after it.
            del entry.addresses[next(iter(entry.addresses))]
        entry.distinct_addresses += 1
        entry.addresses[address] = (ts, txn.request_id)
        if entry.distinct_addresses < cfg.min_distinct_addresses:
            return None
        return self._finding(jti, address, ts, txn, entry)

    def advance(self, watermark: float) -> Iterable[Finding]:
        horizon = watermark - self.config.late_transaction_allowance_secs - self.context.join_window_secs
        while self._expiry and self._expiry[0][0] < horizon:
            self._forget_oldest()
        return ()

    def _client_address(self, txn: Transaction) -> str | None:
        for event in txn.gateway:
            if event.source_ip:
                return event.source_ip
        for event in txn.gateway:
            # A client that made its line read two ways has no address, and must not hide by it: it is
            # the one client its readings' addresses name, unlike every client with an address.
            if (clients := event.label(AMBIGUOUS_CLIENTS_LABEL)) is not None:
                return f"ambiguous:{clients}"
        trust = self.context.trust
        if not trust.knows_gateway:
            # The app's peer is then most likely a gateway replica, not a client: two replicas
            # would make every token look replayed. A request the gateway logged has its client.
            return None
        for event in txn.app:
            if event.source_ip and not trust.peer_is_gateway(event):
                return event.source_ip
        return None

    def _track(self, jti: str, until: float) -> _Token:
        self._seq += 1
        entry = self._tokens[jti] = _Token(until=until, seq=self._seq)
        heapq.heappush(self._expiry, (until, self._seq, jti))
        while len(self._tokens) > self.config.max_tracked_tokens:
            self._forget_oldest()  # a flood of tokens: drop the ones closest to expiry first
        return entry

    def _forget_oldest(self) -> None:
        _, seq, jti = heapq.heappop(self._expiry)
        entry = self._tokens.get(jti)
        if entry is not None and entry.seq == seq:
            del self._tokens[jti]

    def _finding(self, jti: str, address: str, ts: float, txn: Transaction, entry: _Token) -> Finding:
        listed = sorted(entry.addresses.items(), key=lambda item: item[1])
        truncated = entry.distinct_addresses > len(listed)  # the oldest made room for newer ones
        sub = txn.first("token_sub")
        return self.finding(
            "token.jti",
            jti,
            ts,
            f"Token {jti}{f' (sub {sub})' if sub else ''} was presented from "
            f"{entry.distinct_addresses} distinct client addresses within its lifetime "
            f"({'…, ' if truncated else ''}{', '.join(a for a, _ in listed)}); newest: {address}.",
            dict.fromkeys([rid for _, (_, rid) in listed] + [txn.request_id]),
            details={
                "distinct_addresses": entry.distinct_addresses,
                "addresses": [a for a, _ in listed],
                "addresses_truncated": truncated,
                "first_seen": {a: iso(first) for a, (first, _) in listed},
                "new_address": address,
                "token_sub": sub,
            },
        )

    @classmethod
    def examples(cls) -> Iterable[Example]:
        exp = T0 + 900
        gw_peer = {"source_ip": "10.0.0.5", "peer_identity": "spiffe://billing.example/ns/edge/sa/ambassador"}

        def used(rid: str, ts: float, client: str, jti: str, app_peer: dict[str, str] | None = None) -> Transaction:
            token = {"token_jti": jti, "token_sub": "user-1", "token_exp": exp}
            return transaction(
                rid,
                gateway=(gateway_event(ts, request_id=rid, source_ip=client, status=200, **token),),
                app=(app_event(ts + 0.05, request_id=rid, status=200, **(app_peer or gw_peer), **token),),
            )

        def app_only(rid: str, ts: float, peer: dict[str, str], jti: str) -> Transaction:
            token = {"token_jti": jti, "token_exp": exp}
            return transaction(rid, app=(app_event(ts, request_id=rid, status=200, **peer, **token),))

        yield Example(
            "same token from a second client address",
            (used("r-1", 10, "203.0.113.7", "jti-stolen"), used("r-2", 40, "198.51.100.23", "jti-stolen")),
            alerts=frozenset({"jti-stolen"}),
        )
        yield Example(
            "same token sent straight to the app from another host",
            (
                used("r-1", 10, "203.0.113.7", "jti-stolen"),
                app_only("r-2", 40, {"source_ip": "10.9.9.9"}, "jti-stolen"),
            ),
            alerts=frozenset({"jti-stolen"}),
        )
        yield Example(
            "many users behind one NAT address",
            tuple(used(f"r-{i}", 10 + i, "198.51.100.1", f"jti-{i}") for i in range(5)),
            alerts=frozenset(),
        )
        yield Example(
            "one client retrying with its token",
            (used("r-1", 10, "203.0.113.7", "jti-a"), used("r-2", 11, "203.0.113.7", "jti-a")),
            alerts=frozenset(),
        )
        yield Example(
            "app-only line whose peer is the gateway pod is not a second client",
            (used("r-1", 10, "203.0.113.7", "jti-a"), app_only("r-2", 40, gw_peer, "jti-a")),
            alerts=frozenset(),
        )
        # A client that sets its own request id sends its own token, then a stolen one under the same id.
        thief = {"source_ip": "192.0.2.66", "status": 200, "token_exp": exp}
        yield Example(
            "a stolen token behind the thief's own under one request id",
            (
                used("r-1", 10, "203.0.113.7", "jti-taken"),
                transaction("r-x", gateway=(gateway_event(60, request_id="r-x", token_jti="jti-mine", **thief),
                                            gateway_event(61, request_id="r-x", token_jti="jti-taken", **thief))),
            ),
            alerts=frozenset({"jti-taken"}),
        )
        # A line whose client address reads two ways still has a client: the one its readings name.
        unclear = gateway_event(40, request_id="r-2", status=200, token_jti="jti-b", token_exp=exp,
                                labels=((AMBIGUOUS_CLIENTS_LABEL, "198.51.100.9,203.0.113.5"),))
        yield Example(
            "a token from a client whose address reads two ways",
            (used("r-1", 10, "203.0.113.7", "jti-b"), transaction("r-2", gateway=(unclear,))),
            alerts=frozenset({"jti-b"}),
        )


_UNKNOWN: Any = object()  # not looked up yet (None is a lookup's answer)


def _exp_of(txn: Transaction, jti: str) -> float | None:
    """The ``exp`` a line of ``txn`` logged with ``jti`` (or with no token: the gateway may log the claim alone)."""
    for event in (*txn.gateway, *txn.app):
        if event.token_exp is not None and event.token_jti in (jti, None):
            return event.token_exp
    return None


def _first_jti(txn: Transaction) -> str | None:
    """``txn.first("token_jti")``, without joining the two sides into a new tuple: it runs for every request."""
    for event in txn.gateway:
        if event.token_jti is not None:
            return event.token_jti
    for event in txn.app:
        if event.token_jti is not None:
            return event.token_jti
    return None
