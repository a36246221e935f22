"""http_5xx_burst: a route's or an upstream host's 5xx rate jumps well above its own history.

Each request is judged twice, for its route (entity ``route``) and for the
upstream host that answered it (entity ``upstream.address``), each against its
own baseline: one failing pod among healthy siblings moves its route's rate by
a fraction only. A host is tracked per route it serves and alerts only when it
also fails ``sibling_factor`` times more than the route's other hosts: a host
that is its route's only one, or fails like all the others, is the route's
failure, and the route alert says so once. Without any route key (no route
name, cluster or authority) a host is judged on its baseline alone.

Per route (and per host), requests and 5xx responses are counted in ``bucket_secs`` buckets;
the window is the last ``window_secs / bucket_secs`` buckets (the current one
included). A bucket enters the route's baseline only once it has left the
window, so a storm cannot raise its own bar while it is being judged.

The baseline is an exponentially decayed ratio, errors over requests, each sum
halving every ``baseline_half_life_secs`` of event time: busy buckets weigh more
than a bucket with one request, and a route's first bucket is already an
unbiased estimate (no warm-up from zero). A route with no history at all is
judged against ``min_baseline_rate``, so a route that is chronically failing
when the detector starts alerts until its first buckets leave the window.

Findings are rate-limited to one per route per bucket while the condition holds.

Each table (routes, hosts per route, the routes' hosted sums) keeps at most
``max_tracked_routes`` entries: under Envoy's default format a route is what the
client wrote (Host and first path segment), and a flood trial's unique paths grew
replay to 565 MB and serve past its soak figure by ~1.7 KB a path. Past the cap,
each sweep drops the entries with the least traffic (decayed baseline plus
window), oldest first: a client's one-request paths go, a real route's history
stays. Until the cap is reached nothing is dropped that would not be idle anyway.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from pydantic import Field

from detectors.base import Detector, DetectorConfig, DetectorContext, Example, Finding, Severity
from detectors.sample import gateway_event
from ingest.records import Dataset, Event, Transaction
from ingest.routes import route_of

_GATEWAY = Dataset.GATEWAY  # a module global: reading an enum's member costs ~80 ns on Python 3.11


def route_key(event: Event) -> str | None:
    """Route name, else upstream cluster, else ``host/first-path-segment`` (:func:`ingest.routes.route_of`)."""
    return route_of(event.route_name, event.upstream_cluster, event.authority, event.path)


class _Route:
    __slots__ = ("buckets", "win_requests", "win_errors", "base_requests", "base_errors",
                 "base_ts", "last_ts", "fired_bucket", "recent_ids")

    def __init__(self) -> None:
        self.buckets: deque[list[Any]] = deque()  # [bucket_start (float), requests, errors (int)], in the window
        self.win_requests = 0
        self.win_errors = 0
        self.base_requests = 0.0  # decayed sums of buckets that left the window
        self.base_errors = 0.0
        self.base_ts: float | None = None  # start of the last bucket folded into the baseline
        self.last_ts = 0.0
        self.fired_bucket = -math.inf
        self.recent_ids: deque[str | None] = deque(maxlen=20)  # request ids of the latest 5xx


def _drop_least_used(table: dict[str, _Route], count: int) -> None:
    """Drop ``count`` entries of ``table``: the least traffic first (decayed baseline plus window), then the
    longest unseen, then by key (the same records drop the same entries)."""
    ranked = sorted(table.items(), key=lambda item: (item[1].base_requests + item[1].win_requests, item[1].last_ts,
                                                     item[0]))  # fmt: skip
    for key, _ in ranked[:count]:
        del table[key]


class _RouteState(msgspec.Struct, array_like=True, gc=False):
    """A :class:`_Route`, field for field, for a checkpoint."""

    buckets: list[tuple[float, int, int]]
    win_requests: int
    win_errors: int
    base_requests: float
    base_errors: float
    base_ts: float | None
    last_ts: float
    fired_bucket: float
    recent_ids: list[str | None]


def _save(table: dict[str, _Route]) -> dict[str, _RouteState]:
    return {key: _RouteState([tuple(b) for b in r.buckets], r.win_requests, r.win_errors, r.base_requests,
                             r.base_errors, r.base_ts, r.last_ts, r.fired_bucket, list(r.recent_ids))
            for key, r in table.items()}  # fmt: skip


def _load(saved_table: dict[str, _RouteState]) -> dict[str, _Route]:
    table: dict[str, _Route] = {}
    for key, saved in saved_table.items():
        route = table[key] = _Route()
        route.buckets.extend([list(bucket) for bucket in saved.buckets])
        route.win_requests, route.win_errors = saved.win_requests, saved.win_errors
        route.base_requests, route.base_errors = saved.base_requests, saved.base_errors
        route.base_ts = saved.base_ts
        route.last_ts, route.fired_bucket = saved.last_ts, saved.fired_bucket
        route.recent_ids.extend(saved.recent_ids)
    return table


class Http5xxBurst(Detector):
    """≥ ``min_errors`` 5xx on a route in ``window_secs``, at ≥ ``rate_factor`` × its baseline rate."""

    rule_id = "http_5xx_burst"
    counts = "buckets"
    severity = Severity.MEDIUM
    datasets = frozenset({Dataset.GATEWAY})
    keyed_by = "route"  # a host is judged per route it serves: its state lives with the route's

    class Config(DetectorConfig):
        window_secs: float = Field(120.0, gt=0)
        bucket_secs: float = Field(10.0, gt=0)
        min_errors: int = Field(20, ge=1)
        rate_factor: float = Field(5.0, gt=0)
        baseline_half_life_secs: float = Field(1800.0, gt=0)
        min_baseline_rate: float = Field(0.01, ge=0, le=1)
        # forget a route or host unseen this long: its history would weigh 2**-12 against new traffic
        route_idle_secs: float = Field(21600.0, gt=0)
        # an upstream host alerts only when its rate is also this many times its route's other hosts'
        sibling_factor: float = Field(2.0, gt=0)
        # entries a table keeps past a sweep (~1.7 KB each): the least-used go first
        max_tracked_routes: int = Field(10_000, ge=1)

    config: Config

    def __init__(self, config: DetectorConfig, context: DetectorContext) -> None:
        super().__init__(config, context)
        # Keyed by the route's name and by the host's address as logged: plain strings.
        self._routes: dict[str, _Route] = {}
        self._upstreams: dict[str, _Route] = {}  # "<route>\x1f<host>", or the host without a route
        self._hosted: dict[str, _Route] = {}  # per route, only the requests that reached a host: the siblings' sum
        self._next_sweep = -math.inf
        self._bucket_secs = self.config.bucket_secs  # read for every line: a plain attribute is quicker

    class State(msgspec.Struct, array_like=True, gc=False):
        routes: dict[str, _RouteState]
        next_sweep: float
        upstreams: dict[str, _RouteState] = {}
        hosted: dict[str, _RouteState] = {}

    def state(self) -> State:
        return self.State(
            _save(self._routes), self._next_sweep, _save(self._upstreams), _save(self._hosted)
        )

    def restore_state(self, state: State) -> None:
        self._routes = _load(state.routes)
        self._upstreams = _load(state.upstreams)
        self._hosted = _load(state.hosted)
        self._next_sweep = state.next_sweep

    def partition_key(self, item: Event | Transaction) -> str | None:
        if type(item) is not Event or item.dataset is not Dataset.GATEWAY or item.status is None or item.status < 100:
            return None
        key = route_key(item)
        return f"route={key}" if key is not None else (f"upstream={item.upstream_host}" if item.upstream_host else None)

    def observe_event(self, event: Event) -> Iterable[Finding]:
        status = event.status
        if status is None or status < 100 or event.dataset is not _GATEWAY:
            return ()  # Envoy logs status 0 when no response was sent: not a request outcome
        # Every request is counted, up to three times: for its route, for its host within the
        # route and for the route's hosts together. Only a 5xx can then make a table fire.
        error = 500 <= status <= 599
        ts = event.ts
        start = ts - ts % self._bucket_secs
        request_id = event.request_id
        key = event.route_name or route_key(event)  # most lines name their route: no call for them
        host = event.upstream_host
        route = upstream = hosted = None
        if key is not None:
            route = self._count(self._routes, key, ts, start, error, request_id)
        if host:
            # A host is judged per route it serves: its siblings are the route's other hosts
            # (a request Envoy answered itself, a 401 say, reached no host and is no sibling).
            if key is not None:
                hosted = self._count(self._hosted, key, ts, start, error, request_id)
            pair = host if key is None else f"{key}\x1f{host}"
            upstream = self._count(self._upstreams, pair, ts, start, error, request_id)
        if not error:
            return ()
        findings: tuple[Finding, ...] = ()
        if route is not None:
            assert key is not None
            findings += self._judge("route", key, route, ts)
        if upstream is not None:
            assert host is not None
            findings += self._judge("upstream.address", host, upstream, ts, hosted)
        return findings

    def _count(
        self, table: dict[str, _Route], key: str, ts: float, start: float, error: bool, request_id: str | None
    ) -> _Route:
        """Count a request in ``table[key]``'s bucket starting at ``start``."""
        route = table.get(key)
        if route is None:
            route = table[key] = _Route()
        buckets = route.buckets
        if not buckets or start > buckets[-1][0]:  # a slightly late record counts in the current bucket
            self._slide(route, start)
            buckets.append([start, 0, 0])
        bucket = buckets[-1]
        bucket[1] += 1
        route.win_requests += 1
        route.last_ts = ts
        if error:
            bucket[2] += 1
            route.win_errors += 1
            route.recent_ids.append(request_id)
        return route

    def _judge(
        self, kind: str, entity: str, route: _Route, ts: float, of_route: _Route | None = None
    ) -> tuple[Finding, ...]:
        """A finding if ``route``'s window, just grown by a 5xx, is a burst (once per bucket)."""
        cfg = self.config
        bucket_start = route.buckets[-1][0]
        if route.win_errors < cfg.min_errors or route.fired_bucket == bucket_start:
            return ()
        learned = route.base_errors / route.base_requests if route.base_requests else 0.0
        baseline = max(learned, cfg.min_baseline_rate)
        rate = route.win_errors / route.win_requests
        if rate < cfg.rate_factor * baseline:
            return ()
        siblings_rate = None
        if of_route is not None:
            # A host that is its route's only one, or fails no worse than its siblings, is the
            # route's failure: the route's own judgement covers it, so the host stays quiet.
            requests = of_route.win_requests - route.win_requests
            if requests <= 0:
                return ()
            siblings_rate = (of_route.win_errors - route.win_errors) / requests
            if rate < cfg.sibling_factor * siblings_rate:
                return ()
        route.fired_bucket = bucket_start
        return (self._finding(kind, entity, route, ts, rate, baseline, learned, siblings_rate),)

    def advance(self, watermark: float) -> Iterable[Finding]:
        if watermark < self._next_sweep:
            return ()
        if not math.isfinite(watermark):
            self._routes.clear()  # end of the replay: no record will follow
            self._upstreams.clear()
            self._hosted.clear()
            return ()
        cfg = self.config
        start = watermark - watermark % cfg.bucket_secs
        idle_before = watermark - cfg.route_idle_secs
        for table in (self._routes, self._upstreams, self._hosted):
            for key in [k for k, route in table.items() if route.last_ts < idle_before]:
                del table[key]
            if len(table) > cfg.max_tracked_routes:
                _drop_least_used(table, len(table) - cfg.max_tracked_routes)
            for route in table.values():
                self._slide(route, start)  # quiet routes fold their old buckets too
        self._next_sweep = start + cfg.bucket_secs
        return ()

    def _slide(self, route: _Route, start: float) -> None:
        """Fold the buckets that are out of the window ending with bucket ``start`` into the baseline."""
        cfg = self.config
        buckets = route.buckets
        while buckets and buckets[0][0] <= start - cfg.window_secs:
            bucket_start, requests, errors = buckets.popleft()
            if route.base_ts is not None:
                decay = 0.5 ** ((bucket_start - route.base_ts) / cfg.baseline_half_life_secs)
                route.base_requests *= decay
                route.base_errors *= decay
            route.base_requests += requests
            route.base_errors += errors
            route.base_ts = bucket_start
            route.win_requests -= requests
            route.win_errors -= errors

    def _finding(
        self,
        kind: str,
        key: str,
        route: _Route,
        ts: float,
        rate: float,
        baseline: float,
        learned: float,
        siblings_rate: float | None,
    ) -> Finding:
        cfg = self.config
        siblings = "" if siblings_rate is None else f"; its route's other hosts {siblings_rate:.1%}"
        details = {} if siblings_rate is None else {"siblings_rate": round(siblings_rate, 4)}
        return self.finding(
            kind,
            key,
            ts,
            f"{'route' if kind == 'route' else 'upstream host'} {key}: "
            f"{route.win_errors} of {route.win_requests} requests ({rate:.1%}) returned 5xx "
            f"in the last {cfg.window_secs:g} s, {rate / baseline:.1f}× its baseline {baseline:.2%}{siblings}",
            route.recent_ids,
            details={
                "errors": route.win_errors,
                "requests": route.win_requests,
                "error_rate": round(rate, 4),
                "baseline_rate": round(baseline, 4),  # learned_rate, or min_baseline_rate if higher
                "learned_rate": round(learned, 4),
                "rate_factor": cfg.rate_factor,
                "window_secs": cfg.window_secs,
                **details,
            },
        )

    @classmethod
    def examples(cls) -> Iterable[Example]:
        yield Example("storm_on_one_route", _traffic(
            ("billing-invoices", 0, 720, 5, lambda i, t: 503 if t >= 600 and i % 5 < 2 else _every(i, 200)),
            ("billing-payments", 0, 720, 5, lambda i, t: _every(i, 200)),
        ), frozenset({"billing-invoices"}))
        # rate constant at 2 %: more errors per window as traffic grows, never more per request
        yield Example("traffic_ramp_constant_rate", _traffic(
            *(("billing-invoices", m * 60, m * 60 + 60, 1 + m // 2, lambda i, t: _every(i, 50)) for m in range(20)),
        ), frozenset())
        yield Example("isolated_blip", _traffic(
            ("billing-invoices", 0, 300, 0.2, lambda i, t: 502 if 20 <= i < 24 else 200),
        ), frozenset())
        # 25 % errors is this route's normal; learned at night, when 25 % of 12 requests stays under min_errors
        yield Example("high_steady_baseline", _traffic(
            ("legacy-export", 0, 900, 0.1, lambda i, t: _every(i, 4)),
            ("legacy-export", 900, 1500, 5, lambda i, t: _every(i, 4)),
        ), frozenset())
        # ten pods at 2 % errors; one then fails 60 % of its share: the route moves to ~8 %,
        # under 5x its 2 %, while the pod is 30x its own
        healthy = (1.0, lambda i, t: _every(i, 50))
        siblings = {f"10.1.0.{n}:8080": healthy for n in range(1, 10)}
        yield Example("one_failing_pod", _traffic(
            _pods("billing-invoices", 0, 600, {**siblings, "10.1.0.10:8080": healthy}),
            _pods("billing-invoices", 600, 900, {
                **siblings, "10.1.0.10:8080": (1.0, lambda i, t: 503 if i % 5 < 3 else 200),
            }),
        ), frozenset({"10.1.0.10:8080"}))
        # a pod leaving the endpoints answers the few requests still sent to it with 503:
        # a third of its window, but fewer than min_errors
        yield Example("draining_pod", _traffic(
            _pods("billing-invoices", 0, 500, {**siblings, "10.1.0.10:8080": healthy}),
            _pods("billing-invoices", 500, 900, siblings),
            _pods("billing-invoices", 600, 605, {"10.1.0.10:8080": (1.0, lambda i, t: 503)}),
        ), frozenset())
        # a pod's share grows a hundredfold at its usual 8 % (over 5x min_baseline_rate), learned
        # at night: many more errors, never more per request
        usual = (lambda i, t: _every(i, 12))
        yield Example("pod_share_grows", _traffic(
            _pods("legacy-export", 0, 900, {"10.1.0.1:8080": (0.1, usual), "10.1.0.2:8080": (0.1, usual)}),
            _pods("legacy-export", 900, 1500, {"10.1.0.1:8080": (10.0, usual), "10.1.0.2:8080": (0.1, usual)}),
        ), frozenset())


_Row = tuple[float, str, int, str | None]  # time, route, status, upstream address
_Flow = tuple[str, float, float, float, Callable[[int, float], int]]


def _pods(route: str, begin: float, end: float, pods: dict[str, tuple[float, Callable[[int, float], int]]]) -> list[_Row]:
    """Flows of one route spread over its pods: address -> (requests per second, status(i, t))."""
    rows: list[_Row] = []
    for address, (per_sec, status) in pods.items():
        for i in range(int((end - begin) * per_sec)):
            t = begin + i / per_sec
            rows.append((t, route, status(i, t), address))
    return rows


def _every(i: int, n: int) -> int:
    return 500 if i % n == n - 1 else 200


def _traffic(*flows: _Flow | list[_Row]) -> tuple[Event, ...]:
    """Flows of (route, start, end, requests per second, status(i, t)) or rows of :func:`_pods`, in time order."""
    rows: list[_Row] = []
    for flow in flows:
        if isinstance(flow, list):
            rows.extend(flow)
            continue
        route, begin, end, per_sec, status = flow
        for i in range(int((end - begin) * per_sec)):
            t = begin + i / per_sec
            rows.append((t, route, status(i, t), None))
    rows.sort(key=lambda row: row[0])
    return tuple(
        gateway_event(
            t, request_id=f"{route}-{n}", route_name=route, status=code, path="/v1/x", upstream_host=address
        )
        for n, (t, route, code, address) in enumerate(rows)
    )
