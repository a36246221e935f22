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
from typing import Self

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
    distinct_addresses: int = 0  # len(addresses); kept for the checkpoints that hold it
    # address -> (first_seen, first request id); at most max_addresses_per_token
    addresses: dict[str, tuple[float, str]] = field(default_factory=dict)


class TokenReplay(Detector):
    """One ``jti`` from ``min_distinct_addresses`` or more client addresses within its lifetime."""

    rule_id = "token_replay"
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

    def observe_transaction(self, txn: Transaction) -> Iterable[Finding]:
        # Most requests: the gateway's line carries the token and the client address; no call for them.
        first = txn.gateway[0] if txn.gateway else None
        jti = first.token_jti if first is not None and first.token_jti is not None else _first_jti(txn)
        if not jti:
            return ()
        address = first.source_ip if first is not None and first.source_ip else self._client_address(txn)
        if address is None:
            return ()
        entry = self._tokens.get(jti)
        # Most requests are a known client reusing its live token. Any one record at or before
        # ``until`` puts the request's first record there too, so the exact first_ts (a min over
        # every record) is needed only for a new address or a token past its lifetime.
        if entry is not None and address in entry.addresses and (txn.gateway or txn.app)[0].ts <= entry.until:
            return ()
        cfg = self.config
        ts = txn.first_ts
        if entry is None or ts > entry.until:
            exp = txn.first("token_exp")
            if isinstance(exp, (int, float)):
                until = exp + cfg.skew_allowance_secs
                if ts > until:
                    return ()  # a dead token: token_expired_accepted's business, not replay
            else:
                until = ts + cfg.default_token_lifetime_secs
            entry = self._track(jti, until)
        if address in entry.addresses:
            return ()
        if len(entry.addresses) >= cfg.max_addresses_per_token:
            # Past the cap a new address cannot be told from one seen before: counting each use would grow
            # the alert with every reuse. The alert stands as it is, at the cap ("16+").
            return ()
        entry.distinct_addresses += 1
        entry.addresses[address] = (ts, txn.request_id)
        if entry.distinct_addresses < cfg.min_distinct_addresses:
            return ()
        return (self._finding(jti, address, ts, txn, entry),)

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
        truncated = len(listed) >= self.config.max_addresses_per_token  # more may follow, uncounted
        sub = txn.first("token_sub")
        return self.finding(
            "token.jti",
            jti,
            ts,
            f"Token {jti}{f' (sub {sub})' if sub else ''} was presented from "
            f"{entry.distinct_addresses}{'+' if truncated else ''} distinct client addresses within its lifetime "
            f"({', '.join(a for a, _ in listed)}); newest: {address}.",
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


def _first_jti(txn: Transaction) -> str | None:
    """``txn.first("token_jti")``, without joining the two sides into a new tuple: it runs for every request."""
    for event in txn.gateway:
        if event.token_jti is not None:
            return event.token_jti
    for event in txn.app:
        if event.token_jti is not None:
            return event.token_jti
    return None
