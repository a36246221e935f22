"""The detector contract: observe records in event-time order, advance with the watermark.

A detector is one module, ``detectors/<rule_id>.py``, holding one class that
subclasses :class:`Detector` with:

- ``rule_id`` — the rule's name, also the module's name;
- ``severity`` — its default severity;
- ``counts`` — what its alerts' ``count`` counts ("errors", "requests", "windows", ...);
- ``Config`` — a frozen pydantic model: every threshold with a default, units in names;
- ``examples()`` — must-alert and must-not-alert cases, run by one shared test.

The engine calls, from one thread:

- ``observe_arrival(event)`` for every parsed event as soon as it arrives, in
  no particular order: for evidence one event proves on its own (a foreign
  peer, an expired or revoked token), so its alert goes out within seconds
  instead of after the reorder buffer. Its findings must depend on nothing
  but the event and the context: no state, no other record.

and, always in event-time order:

- ``observe_event(event)`` for every parsed event (gateway and app);
- ``observe_transaction(txn)`` when the correlator closes a request's records;
- ``advance(watermark)`` when event time has moved on to ``watermark``: no
  record older than it will arrive, so windows ending before it may close.

A detector is offered only what it can use: the hooks its class overrides,
and ``observe_arrival`` / ``observe_event`` only for events of the datasets in
its ``datasets`` (both by default; a rule that reads only the gateway's lines
says so, and is not called for the app's). A rule whose context rules a hook
out (no revocation list, no known gateway) says so in ``wants(hook)``, asked
once when the engine is built, and then costs nothing per record.

Each returns findings. Detectors never read the wall clock, never import a
client library, and must not raise on odd input (the engine counts and skips
an exception, but that loses the detector's view of that record).

The engine hands these hooks batches (:meth:`~detectors.runner.DetectorSet.observe_events`
and its kin: a release's events a second at a time, a tick's transactions): each
rule is called for every item of a batch, in order, before the next rule is.
So rules must share no state with each other; each still sees its own sequence
exactly, and their findings reach the alert book in item order.

State, for checkpoints (``gatewatch serve``): a detector that keeps anything
between calls declares it as data, next to the rule, in one explicit pair:

- ``State`` — a msgspec Struct (``array_like=True``) nested in the class,
  made of plain values: str, int, float, bool, None, lists, tuples, dicts,
  enums, and nested Structs or plain dataclasses of those. The decoder builds
  exactly these declared types, checking every field; the bytes never name
  a class or a function — that is what makes a checkpoint data, not code;
- ``state() -> State`` — the detector's memory as it is now, called between
  two records; it may share (never copy needlessly) the detector's lists and
  dicts, as it is encoded at once;
- ``restore_state(state)`` — on a detector freshly built from *this*
  process's config and context, continue from a decoded ``State``. Settings
  are never part of the state. It may raise ``ValueError`` (or
  :class:`~gatewatch.errors.WireError`) if the state is inconsistent; the
  whole checkpoint is then discarded, never half-applied.

Partitioned detection (``gatewatch serve``, :mod:`gatewatch.tasks`) places
each rule by what it declares, never by a list in the engine:

- ``keyed_by`` — None: one record or one request proves the rule, and it runs
  where requests are joined. Otherwise the short name of the entity whose
  records it needs together (``"source.ip"``, ``"route"``, ``"token.jti"``);
- ``partition_key(item)`` — for such a rule, the entity an event or a
  transaction belongs to (None: the rule would ignore it, so it is not sent).
  Every item with the same key reaches the same partition, in event-time order.
  A transaction may hold several (two tokens under one request id), an event too (a line
  whose client reads two ways): the rule's ``partition_keys(item)`` names them all, the item
  reaches each of their partitions, and there the rule judges only the entities it ``owns(key)``;
- a rule that compares entities with each other (``behaviour_outlier``'s model
  over all clients of a window) *gathers*: it declares a ``Row`` type, its
  keyed half turns closed windows into rows (``gather(watermark)``), and one
  place judges the rows of every partition (``judge(watermark, rows)``). Its
  own ``advance`` is ``judge(w, gather(w))``, so a single process runs it as before.

A stateless rule keeps the defaults below (``State = None``). The same pair
is the convention of every stateful component the pipeline checkpoints
(:class:`~ingest.order.EventOrder`, :class:`~ingest.correlate.Correlator`,
:class:`~detectors.alerts.AlertBook`); a new one follows it and is added to
``gatewatch.topology.PipelineState``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from detectors.trust import TrustPolicy
from ingest.records import MAX_REQUEST_MS, Dataset, Event, Transaction


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of evidence that a rule fired for an entity at event time ``ts``.

    The alert book folds findings for the same (rule, entity) within a
    suppression window into one alert; findings with the same ``key`` (a
    request's several log lines) count once in it. ``window_ts`` (None: ``ts``)
    names the window: the findings that make one burst reach its threshold fold
    into the window of its first, not split at a window's edge into alerts below it.
    """

    rule: str
    severity: Severity
    entity_type: str
    entity_value: str
    ts: float
    summary: str
    request_ids: tuple[str, ...] = ()
    reason: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)
    key: str | None = None
    window_ts: float | None = None


class DetectorConfig(BaseModel):
    """Base of every detector's ``Config``: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Example:
    """A detector's own test case: records in, the entities that must (not) alert.

    ``records`` are events and transactions fed in order; ``alerts`` is the set
    of entity values that must raise a finding (empty for a benign look-alike).
    """

    name: str
    records: tuple[Event | Transaction, ...]
    alerts: frozenset[str]
    reason: str | None = None


class Detector:
    """Base class: override what the rule needs; the defaults observe nothing."""

    rule_id: ClassVar[str]
    severity: ClassVar[Severity]
    counts: ClassVar[str]
    """What one unit of its alerts' ``count`` is ("errors", "requests", ...): a finding with its own key."""
    Config: ClassVar[type[DetectorConfig]] = DetectorConfig
    State: ClassVar[type[Any] | None] = None  # a stateless rule
    datasets: ClassVar[frozenset[Dataset]] = frozenset(Dataset)
    """The events the rule reads in ``observe_arrival`` / ``observe_event``; it is offered no others."""
    keyed_by: ClassVar[str | None] = None
    """None: proved by one record or one request. Else the entity its records are partitioned by."""
    Row: ClassVar[type[Any] | None] = None
    """A gathering rule's row type (a msgspec Struct of plain values): what ``gather`` returns."""

    def __init__(self, config: DetectorConfig, context: "DetectorContext") -> None:
        self.config = config
        self.context = context

    def observe_arrival(self, event: Event) -> Iterable[Finding]:
        return ()

    def observe_event(self, event: Event) -> Iterable[Finding]:
        return ()

    def observe_transaction(self, txn: Transaction) -> Iterable[Finding]:
        return ()

    def advance(self, watermark: float) -> Iterable[Finding]:
        return ()

    def wants(self, hook: str) -> bool:
        """Whether the engine offers ``hook`` (a hook's name) to this detector; asked once, when it is built.

        By default, the hooks its class overrides. False only where the hook, given this
        detector's config and context, can find nothing; a keyed rule's ``partition_key`` still
        answers None for what it does not want (the JOIN task routes by the overridden hooks).
        """
        return getattr(type(self), hook) is not getattr(Detector, hook)

    def partition_key(self, item: Event | Transaction) -> str | None:
        """The entity ``item`` belongs to, for a rule with ``keyed_by``; None: the rule does not need it.

        Must be None exactly for items the rule ignores, and the same for
        every item whose findings or state it shares with another.
        """
        return None

    def partition_keys(self, item: Event | Transaction) -> tuple[str, ...]:
        """Every entity ``item`` holds, for a rule that judges each apart: it goes to each one's partition
        (an event only where the rule overrides this). By default, its one ``partition_key``."""
        key = self.partition_key(item)
        return () if key is None else (key,)

    def owns(self, key: str) -> bool:
        """Whether this instance judges entity ``key``: every one in a single pipeline; in serve, a keyed task's
        rules own the keys of its partition (set by the task)."""
        return True

    def gather(self, watermark: float) -> list[Any]:
        """A gathering rule's keyed half: the rows of the windows ``watermark`` has closed (then forgotten)."""
        return []

    def judge(self, watermark: float, rows: list[Any]) -> Iterable[Finding]:
        """A gathering rule's model half: findings over ``rows`` gathered from every partition at ``watermark``."""
        return ()

    def state(self) -> Any:
        """The rule's memory as a ``State`` (see the module docstring); None for a stateless rule."""
        return None

    def restore_state(self, state: Any) -> None:
        """Continue from a decoded ``State``, on a detector built from the current config."""

    @classmethod
    def examples(cls) -> Iterable[Example]:
        return ()

    def finding(
        self,
        entity_type: str,
        entity_value: str,
        ts: float,
        summary: str,
        request_ids: Iterable[str | None] = (),
        reason: str | None = None,
        details: Mapping[str, object] | None = None,
        severity: Severity | None = None,
        key: str | None = None,
        window_ts: float | None = None,
    ) -> Finding:
        return Finding(
            rule=self.rule_id,
            severity=severity or self.severity,
            entity_type=entity_type,
            entity_value=entity_value,
            ts=ts,
            summary=summary,
            request_ids=tuple(r for r in request_ids if r),
            reason=reason,
            details=details or {},
            key=key,
            window_ts=window_ts,
        )


NO_REVOCATIONS: Mapping[str, float] = MappingProxyType({})
"""The revocation list of a deployment that names none (``tokens.revoked`` unset)."""


@dataclass(frozen=True)
class DetectorContext:
    """Deployment facts shared by detectors: who the gateway is, revoked tokens, how requests are joined.

    ``revoked`` maps a token's ``jti`` to its revocation time (epoch seconds). A list that
    ``serve`` reads again while it runs changes in place, empty at first or not; only
    :data:`NO_REVOCATIONS` says there is none to watch. ``join_window_secs`` is
    ``correlate.join_window_secs``: how far apart a request's records may be (clock skew, retries).
    """

    trust: TrustPolicy
    revoked: Mapping[str, float] = field(default_factory=lambda: NO_REVOCATIONS)
    join_window_secs: float = 30.0


def seconds(value: float) -> str:
    """Seconds for a summary, to the millisecond and no further: 30.001 s past an allowance of 30 s is not "30"."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def request_start(event: Event) -> float:
    """When the request behind ``event`` began, as far as its record tells.

    A gateway line is dated at the request's start (``%START_TIME%``); Billing writes its line
    when it answers, so a duration it logged (``latency_ms``) is taken off: a 60 s export begun
    before its token expired, or was revoked, used the token in time.
    """
    duration = event.duration_ms
    if duration and duration > 0 and event.dataset is Dataset.APP:
        return event.ts - (duration if duration < MAX_REQUEST_MS else MAX_REQUEST_MS) / 1000
    return event.ts

