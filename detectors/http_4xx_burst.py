"""http_4xx_burst: one client draws many client errors in a short time.

Credential stuffing (401), authorization probing (403), path and id scanning
(404) and ignored rate limits (429) all look like this from the gateway. The
client is the token's subject when the request carried one (an authenticated
user may move between addresses), else the address the gateway saw.

Each client keeps a sliding window of its recent 4xx: a deque of
(ts, status, request id), trimmed to ``window_secs`` on every new error and
capped at ``max_tracked_errors`` entries, so a flood costs bounded memory (the
count then saturates at the cap; the decision is unchanged as long as the cap
is at least ``min_errors``). Idle clients are dropped in ``advance``.

When the count reaches ``min_errors``, every error in the window is a finding
(dated by its own time, in the alert window of the burst's first error: a burst
that crosses a window's edge is not split into two alerts below the threshold),
and so is each further error while the count stays at or above it (in its own
window: a burst that goes on is an alert per window). Each finding is keyed by
its error and names its request, so the alert book folds them into one alert
per client whose ``count`` is the burst's errors, whose ``first_seen`` is its
first, and whose request ids are its earliest; the summary and details are
those of the moment the threshold was reached.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Self

import msgspec
from pydantic import Field, model_validator

from detectors.base import Detector, DetectorConfig, DetectorContext, Example, Finding, Severity
from detectors.sample import gateway_event
from ingest.records import AMBIGUOUS_CLIENTS_LABEL, Dataset, Event, Transaction


class _Client:
    __slots__ = ("ambiguous", "errors", "statuses")

    def __init__(self) -> None:
        self.errors: deque[tuple[float, int, str | None]] = deque()  # (ts, status, request_id)
        self.statuses: dict[int, int] = {}  # status -> count over ``errors``
        # times of the errors counted from lines whose client reads two ways (this address may be one a client wrote)
        self.ambiguous: deque[float] = deque()


class Http4xxBurst(Detector):
    """≥ ``min_errors`` responses 400–499 to one client within ``window_secs``."""

    rule_id = "http_4xx_burst"
    counts = "errors"
    severity = Severity.MEDIUM
    datasets = frozenset({Dataset.GATEWAY})
    keyed_by = "client"  # the token's subject, else the address: the alert's entity

    class Config(DetectorConfig):
        window_secs: float = Field(60.0, gt=0)
        min_errors: int = Field(30, ge=1)
        max_request_ids: int = Field(20, ge=0)  # the burst's first errors the alert names
        max_tracked_errors: int = Field(1000, ge=1)

        @model_validator(mode="after")
        def _cap_covers_threshold(self) -> Self:
            if self.max_tracked_errors < self.min_errors:
                raise ValueError("max_tracked_errors must be at least min_errors")
            return self

    config: Config

    def __init__(self, config: DetectorConfig, context: DetectorContext) -> None:
        super().__init__(config, context)
        self._clients: dict[tuple[str, str], _Client] = {}
        self._next_sweep = -math.inf
        # Clients whose window reached min_errors only because it was lowered across a restart: never reported.
        self._unreported: set[tuple[str, str]] = set()

    class State(msgspec.Struct, array_like=True, gc=False):
        # per client: (key kind, key value, its errors as (ts, status, request id)); statuses are recounted
        clients: list[tuple[str, str, list[tuple[float, int, str | None]]]]
        next_sweep: float
        min_errors: int | None = None  # the threshold they were judged by (None: an older checkpoint)
        ambiguous: list[tuple[str, str, list[float]]] = []  # per client, its ambiguous errors' times

    def state(self) -> State:
        return self.State([(kind, value, list(c.errors)) for (kind, value), c in self._clients.items()],
                          self._next_sweep, self.config.min_errors,
                          [(kind, value, list(c.ambiguous)) for (kind, value), c in self._clients.items()
                           if c.ambiguous])  # fmt: skip

    def restore_state(self, state: State) -> None:
        self._clients = {}
        for kind, value, errors in state.clients:
            client = self._clients[(kind, value)] = _Client()
            client.errors.extend(errors)
            for _, status, _ in errors:
                client.statuses[status] = client.statuses.get(status, 0) + 1
        for kind, value, times in state.ambiguous:
            if (kind, value) in self._clients:
                client = self._clients[(kind, value)]
                client.ambiguous.extend(times[-len(client.errors) :])
        self._next_sweep = state.next_sweep
        # min_errors lowered across the restart: a window between the two thresholds was never reported, and
        # its next error is the crossing (the README: a new threshold applies to the windows already open).
        lowered_from, now = state.min_errors, self.config.min_errors
        self._unreported = set()
        if lowered_from is not None and lowered_from > now:
            self._unreported = {key for key, c in self._clients.items() if now <= len(c.errors) < lowered_from}

    def partition_key(self, item: Event | Transaction) -> str | None:
        if type(item) is not Event or item.dataset is not Dataset.GATEWAY:
            return None
        if item.status is None or not 400 <= item.status <= 499:
            return None
        # the client's key as observe_event makes it, so one client's errors meet in one partition
        if item.token_sub:
            return f"token.sub={item.token_sub}"
        return f"source.ip={item.source_ip}" if item.source_ip else None

    def partition_keys(self, item: Event | Transaction) -> tuple[str, ...]:
        """Its one key, or each address a line whose client reads two ways may be from (see :meth:`observe_event`)."""
        if (key := self.partition_key(item)) is not None:
            return (key,)
        if type(item) is not Event or item.status is None or not 400 <= item.status <= 499:
            return ()
        return tuple(f"source.ip={client}" for client in _ambiguous_clients(item))

    def observe_event(self, event: Event) -> Iterable[Finding]:
        status = event.status
        if status is None or status < 400 or status > 499 or event.dataset is not Dataset.GATEWAY:
            return ()
        if event.token_sub:
            return self._count(("token.sub", event.token_sub), event, status)
        if event.source_ip:
            return self._count(("source.ip", event.source_ip), event, status)
        # A client that writes '" "' in a header makes its line read two ways, with X-Forwarded-For's
        # right end, its address, differing: the line has none, and naming none let a client hide a
        # burst behind the trick. It counts for every address it may be from: the sender's own is one.
        findings: list[Finding] = []
        for client in _ambiguous_clients(event):
            if self.owns(f"source.ip={client}"):
                findings += self._count(("source.ip", client), event, status, ambiguous=True)
        return findings

    def _count(
        self, key: tuple[str, str], event: Event, status: int, ambiguous: bool = False
    ) -> list[Finding] | tuple[()]:
        """Count ``event``'s error for client ``key``: the findings if its window holds ``min_errors`` now."""
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _Client()
        cfg = self.config
        ts = event.ts
        errors, statuses = client.errors, client.statuses
        horizon = ts - cfg.window_secs
        while errors and errors[0][0] <= horizon:
            _forget_oldest(client)
        below = len(errors) < cfg.min_errors  # before this error (a full cap is not a crossing)
        if self._unreported and key in self._unreported:
            below = True
            self._unreported.discard(key)
        while len(errors) >= cfg.max_tracked_errors:
            _forget_oldest(client)
        request_id = event.request_id
        errors.append((ts, status, request_id))
        if ambiguous:
            client.ambiguous.append(ts)
        statuses[status] = statuses.get(status, 0) + 1
        if len(errors) < cfg.min_errors:
            return ()
        if below:  # the threshold is reached now: the errors that reached it are the burst's first
            return self._findings(key, client, list(client.errors), errors[0][0])
        return self._findings(key, client, [(ts, status, request_id)], None)

    def advance(self, watermark: float) -> Iterable[Finding]:
        if watermark < self._next_sweep:
            return ()
        if not math.isfinite(watermark):
            self._clients.clear()  # end of the replay: no record will follow
            return ()
        # a full scan once per window: an idle client lingers at most two windows
        horizon = watermark - self.config.window_secs
        for key in [k for k, client in self._clients.items() if client.errors[-1][0] <= horizon]:
            del self._clients[key]
        self._next_sweep = watermark + self.config.window_secs
        return ()

    def _findings(
        self, key: tuple[str, str], client: _Client, errors: list[tuple[float, int, str | None]],
        window_ts: float | None,
    ) -> list[Finding]:
        """A finding for each of ``errors``, with the client's window as it stands now, in the alert window of
        ``window_ts`` (None: each its own); the first ``max_request_ids`` name their request."""
        cfg = self.config
        named = cfg.max_request_ids
        count = len(client.errors)
        shown = f"{count}+" if count >= cfg.max_tracked_errors else str(count)
        by_count = sorted(client.statuses.items(), key=lambda item: (-item[1], item[0]))
        summary = (f"{key[1]} got {shown} client errors in {cfg.window_secs:g} s "
                   f"({', '.join(f'{s}×{n}' for s, n in by_count[:3])})")  # fmt: skip
        reason = _reason(client.statuses, count)
        details: dict[str, object] = {
            "count": count,
            "window_secs": cfg.window_secs,
            "statuses": {str(s): n for s, n in sorted(client.statuses.items())},
        }
        ambiguous = len(client.ambiguous)
        if ambiguous:
            # Such a line counts under each address it may be from, and the client wrote all but one of them:
            # an address all of whose errors came so may be someone else's, named to have it blocked.
            details["ambiguous_errors"] = ambiguous
            summary += (f"; {'all' if ambiguous == count else ambiguous} from lines whose client address reads "
                        f"two ways: this address may be one the client wrote")  # fmt: skip
        return [
            self.finding(key[0], key[1], ts, summary, (request_id,) if i < named else (), reason=reason,
                         details=details, key=f"{ts!r} {request_id}", window_ts=window_ts)  # fmt: skip
            for i, (ts, _, request_id) in enumerate(errors)
        ]

    @classmethod
    def examples(cls) -> Iterable[Example]:
        yield Example("credential_stuffing", tuple(
            gateway_event(i * 0.8, request_id=f"cs-{i}", status=401, method="POST", path="/v1/login",
                          source_ip="203.0.113.50")
            for i in range(40)
        ), frozenset({"203.0.113.50"}), reason="auth_failures")
        yield Example("path_scan", tuple(
            gateway_event(i * 0.3, request_id=f"ps-{i}", status=404, path=f"/{word}",
                          source_ip="198.51.100.7")
            for i, word in enumerate(f"{w}{n}" for w in ("admin", ".env", "backup", "wp-login") for n in range(15))
        ), frozenset({"198.51.100.7"}), reason="not_found")
        # a logged-in user walking other people's invoices, from two addresses
        yield Example("invoice_enumeration_by_token", tuple(
            gateway_event(i * 1.5, request_id=f"ie-{i}", status=403, path=f"/v1/invoices/{1000 + i}",
                          token_sub="user-4711", source_ip=f"192.0.2.{10 + i % 2}")
            for i in range(35)
        ), frozenset({"user-4711"}), reason="auth_failures")
        # from 15 s before an alert window's edge: one alert of the whole burst, not two below the threshold
        yield Example("burst_across_an_alert_window_edge", tuple(
            gateway_event(585 + i, request_id=f"we-{i}", status=401, method="POST", path="/v1/login",
                          source_ip="203.0.113.51")
            for i in range(32)
        ), frozenset({"203.0.113.51"}), reason="auth_failures")
        # '" "' in the user agent: each line reads two ways, the client's own address and one it chose,
        # a new one each time; the sender's address still counts every error
        yield Example("credential_stuffing_behind_a_quoted_user_agent", tuple(
            gateway_event(i * 0.8, request_id=f"cq-{i}", status=401, method="POST", path="/v1/login",
                          labels=(("gatewatch.ambiguous_quotes", "user_agent,forwarded_for"),
                                  (AMBIGUOUS_CLIENTS_LABEL, f"203.0.113.52,6.6.6.{i}")))
            for i in range(40)
        ), frozenset({"203.0.113.52"}), reason="auth_failures")
        yield Example("occasional_404s", tuple(
            gateway_event(i * 15.0, request_id=f"o-{i}", status=404, path="/favicon.ico", source_ip="192.0.2.99")
            for i in range(40)
        ), frozenset())
        yield Example("many_clients_few_404s", tuple(
            gateway_event(i * 0.3, request_id=f"m-{i}", status=404, path="/v1/old",
                          source_ip=f"198.51.100.{100 + i % 60}")
            for i in range(180)
        ), frozenset())


def _ambiguous_clients(event: Event) -> list[str]:
    """The addresses a line whose client reads two ways may be from (``gatewatch.ambiguous_clients``)."""
    clients = event.label(AMBIGUOUS_CLIENTS_LABEL) if event.labels else None
    return clients.split(",") if clients else []


def _reason(statuses: dict[int, int], count: int) -> str:
    """Which kind of 4xx makes up at least half: a low-cardinality label for triage."""
    if 2 * (statuses.get(401, 0) + statuses.get(403, 0)) >= count:
        return "auth_failures"
    if 2 * statuses.get(404, 0) >= count:
        return "not_found"
    if 2 * statuses.get(429, 0) >= count:
        return "rate_limited"
    return "client_errors"


def _forget_oldest(client: _Client) -> None:
    ts, status, _ = client.errors.popleft()
    # The ambiguous errors leave with theirs (by the window or by the cap), oldest first: never more than the errors.
    if client.ambiguous and client.ambiguous[0] <= ts:
        client.ambiguous.popleft()
    left = client.statuses[status] - 1
    if left:
        client.statuses[status] = left
    else:
        del client.statuses[status]
