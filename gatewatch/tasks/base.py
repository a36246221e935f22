"""The task contract: what the serve stage (or the in-memory driver) calls, and in which order.

A task owns one partition of one internal topic (its ``role``: the topic it
reads, ``"requests"``, ``"keyed"`` or ``"findings"``). The driver, for its
partition, in offset order:

1. ``apply(offset, value)`` for each message from ``next_offset`` on (a
   message below ``next_offset`` is ignored: a re-delivery). Never raises on
   the value's contents: poison becomes a dead letter in the next ``take()``.
2. ``take()`` after any number of ``apply`` calls: the messages to produce,
   in order (``(role, partition, value)``: role is the topic to write,
   ``<group_id>-<role>``), and the batch for the store (transactions, alert
   upserts, lifecycle events, dead letters). Produce the messages in this order.
3. ``snapshot()`` right after a ``take()`` whose messages are acknowledged and
   whose batch is stored: checkpoint it with ``next_offset``, then commit that
   offset. :func:`restore_task` continues from it; re-reading from its offset
   re-produces exactly the messages that followed it, with the same seqs, and
   downstream tasks skip them by seq.

Outputs depend only on the messages' contents, so any replica restoring the
same snapshot and reading the same messages produces the same bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from detectors import registry
from detectors.runner import rule_mask
from gatewatch.errors import WireError
from ingest.records import Dataset, DeadLetter, Origin
from ingest.sinks.base import Batch

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig, KafkaConfig

__all__ = [
    "POISON_KEPT_BYTES", "ROLES", "Role", "Task", "TaskOutput", "UpstreamMessage", "Upstreams", "internal_topic",
    "new_task", "poison", "receive", "restore_task", "rule_bit", "rules_of_mask",
]  # fmt: skip

Role = Literal["requests", "keyed", "findings"]
ROLES: tuple[Role, ...] = ("requests", "keyed", "findings")


@dataclass(slots=True)
class TaskOutput:
    """What a task produced since the last ``take()``."""

    messages: list[tuple[Role, int, bytes]] = field(default_factory=list)  # (role, partition, value), send order
    batch: Batch = field(default_factory=Batch)  # transactions, alerts, alert_events, dead_letters
    applied: int = 0  # input messages applied (poison and repeats included)
    records: int = 0  # events, items or findings those messages carried
    late: int = 0  # items processed out of event-time order (later than the watermark)
    redelivered: int = 0  # input messages or events skipped as already applied
    rejected: int = 0  # poison messages (each is also a dead letter in ``batch``)
    detector_errors: Counter[str] = field(default_factory=Counter)  # rule_id -> exceptions


class Upstreams:
    """A downstream task's view of its upstream tasks: each one's last seq and latest tick, and which have ended.

    A message whose seq was already seen is a repeat (a restored upstream re-sending
    what followed its checkpoint) and must be skipped. The frontier is the minimum
    tick over every upstream: an upstream never heard from holds it.
    """

    def __init__(self, sources: Iterable[str], seqs: Mapping[str, int] | None = None,
                 ticks: Mapping[str, float | None] | None = None, final: Iterable[str] = ()) -> None:  # fmt: skip
        self.sources = list(sources)
        self._known = frozenset(self.sources)
        self.seqs: dict[str, int] = dict(seqs or {})
        self.ticks: dict[str, float | None] = dict(ticks or {})
        self.final: set[str] = set(final)

    def __contains__(self, source: str) -> bool:
        return source in self._known

    def accept(self, source: str, seq: int, tick: float | None, final: bool) -> bool:
        """Record one message of ``source``; False if it is a repeat, to be skipped."""
        if seq <= self.seqs.get(source, 0):
            return False
        self.seqs[source] = seq
        if tick is not None:
            previous = self.ticks.get(source)
            self.ticks[source] = tick if previous is None else max(previous, tick)
        if final:
            self.final.add(source)
        return True

    @property
    def all_final(self) -> bool:
        """Every upstream has sent its final message (end of input: the in-memory driver only)."""
        return len(self.final) == len(self.sources)

    def frontier(self) -> float | None:
        """The minimum tick over every upstream; None while one has not sent any."""
        ticks = [self.ticks.get(source) for source in self.sources]
        if any(tick is None for tick in ticks):
            return None
        return min(tick for tick in ticks if tick is not None)

    def newest(self) -> float | None:
        """The newest tick any upstream sent: how far to run once all have ended."""
        known = [tick for tick in self.ticks.values() if tick is not None]
        return max(known) if known else None


class UpstreamMessage(Protocol):
    """A message one task sends another (``keyed_rows``, ``keyed``, ``findings``): who sent it, in which order."""

    source: str  # the sending task's input partition
    seq: int
    tick: float | None
    final: bool


M = TypeVar("M", bound=UpstreamMessage)
Items = TypeVar("Items")


def receive(
    out: TaskOutput, stream: str, upstreams: Upstreams, offset: int, value: bytes,
    decode: Callable[[bytes], M], read: Callable[[M], Items], senders: str,
) -> tuple[M, Items] | None:  # fmt: skip
    """The message at ``offset`` of ``stream`` from an upstream task, and what ``read`` takes from it; None to skip it.

    What the tasks fed by other tasks (KEYED and ALERT) do with a message before
    using it: poison (undecodable, unreadable, or from a source that is not one
    of ``upstreams``, ``senders`` naming what they are) becomes a dead letter in
    ``out``; a repeat (a restored upstream re-sending what followed its
    checkpoint) is counted and skipped.
    """
    try:
        message = decode(value)
        if message.source not in upstreams:
            raise WireError("unknown_source", f"not a {senders} of this group: {message.source[:200]!r}")
        items = read(message)
    except WireError as error:
        out.rejected += 1
        out.batch.dead_letters.append(poison(stream, offset, value, error))
        return None
    if not upstreams.accept(message.source, message.seq, message.tick, message.final):
        out.redelivered += 1
        return None
    return message, items


class Task(Protocol):
    """One partition's task. See the module docstring for the calling order."""

    role: Role
    partition: int

    @property
    def next_offset(self) -> int:
        """The offset of the next input message to apply (0 for a new task)."""
        ...

    @property
    def watermark(self) -> float:
        """Event time up to which this task has processed (-inf before any), for metrics."""
        ...

    @property
    def tick(self) -> float | None:
        """The task's event-time tick: every output for ticks <= it has been taken (None until it has one)."""
        ...

    def apply(self, offset: int, value: bytes) -> None:
        """Apply one input message; poison (undecodable, unknown version/kind/source/stream) is a dead letter."""
        ...

    def take(self) -> TaskOutput:
        """Everything produced since the last take, and the counters since then."""
        ...

    def snapshot(self) -> bytes:
        """The task's whole state as versioned data (a :mod:`gatewatch.wire` checkpoint body)."""
        ...

    def finish(self) -> None:
        """End of input, as replay ends (the in-memory driver only: a live stream never ends)."""
        ...


# Bytes of a poison message kept in its dead letter (as serve's detect stage keeps).
POISON_KEPT_BYTES = 64 * 1024


def poison(stream: str, offset: int, value: bytes, error: WireError) -> DeadLetter:
    """The dead letter of an internal message that did not decode; its id derives from topic/partition@offset."""
    detail = error.detail
    if len(value) > POISON_KEPT_BYTES:
        detail += f" (first {POISON_KEPT_BYTES} of {len(value)} bytes kept)"
    return DeadLetter(Origin(Dataset.INTERNAL, stream, offset), error.reason, detail, bytes(value[:POISON_KEPT_BYTES]))


def internal_topic(kafka: KafkaConfig, role: Role) -> str:
    """``<group_id>-requests``, ``<group_id>-keyed`` or ``<group_id>-findings``."""
    return f"{kafka.group_id}-{role}"


def rule_bit(rule_id: str) -> int:
    """The rule's bit in an item's mask: its index in :func:`detectors.registry` (alphabetical, stable)."""
    return rule_mask(rule_id)


def rules_of_mask(mask: int) -> list[str]:
    """The rule ids a mask names, in registry order."""
    return [rule_id for i, rule_id in enumerate(registry()) if mask >> i & 1]


def new_task(config: GatewatchConfig, role: Role, partition: int, partitions: int, input_streams: list[str]) -> Task:
    """A task with empty state for ``role``'s ``partition`` of ``partitions``.

    ``input_streams``: every input partition, ``"topic/partition"`` (a JOIN task
    waits for all of them; the other roles ignore it).
    """
    _check(role, partition, partitions)
    if role == "requests":
        from gatewatch.tasks.join import JoinTask

        return JoinTask(config, partition, partitions, input_streams)
    if role == "keyed":
        from gatewatch.tasks.keyed import KeyedTask

        return KeyedTask(config, partition, partitions)
    from gatewatch.tasks.alert import AlertTask

    return AlertTask(config, partitions)


def restore_task(config: GatewatchConfig, role: Role, partition: int, partitions: int, snapshot: bytes) -> Task:
    """A task continuing from ``snapshot`` (taken by a task of the same role, partition and P).

    Raises :class:`~gatewatch.errors.WireError` or ValueError if the snapshot
    does not decode or is inconsistent; nothing is half-applied (a new task
    is built and only returned once fully restored).
    """
    _check(role, partition, partitions)
    if role == "requests":
        from gatewatch.tasks.join import JoinTask

        return JoinTask.restore(config, partition, partitions, snapshot)
    if role == "keyed":
        from gatewatch.tasks.keyed import KeyedTask

        return KeyedTask.restore(config, partition, partitions, snapshot)
    from gatewatch.tasks.alert import AlertTask

    return AlertTask.restore(config, partitions, snapshot)


def _check(role: str, partition: int, partitions: int) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown task role {role!r}")
    if partitions < 1 or not 0 <= partition < (1 if role == "findings" else partitions):
        raise ValueError(f"partition {partition} out of range for role {role} with {partitions} partitions")


