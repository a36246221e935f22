"""Which task the detect stage runs for a partition it is assigned: kept, restored from a checkpoint, or new.

How a task resumes, in order of preference: ``kept_state`` (the same partition
assigned back and nobody committed past this process's position: its state is
in memory), ``checkpoint`` (the latest checkpoint of the partition whose state
decodes; ``previous_checkpoint`` when only the one before it does), else
``committed_offsets``: a new task, empty state, from the group's committed
offset (logged ``state_fresh``). A checkpoint without an offset for its
partition, or one whose state does not decode, is never half-applied: the
task is used only once fully restored.

A checkpoint taken under other settings (a threshold, a window, the trust
lists) is restored all the same, as ``serve`` without Kafka restores its own:
the tasks are built from the new config and take the old state (logged
``state_under_new_config``). Starting them empty instead lost every request
in flight: an operator trial changed one threshold and got two and a half
minutes of transactions never stored, and gateway_bypass alerts for requests
whose gateway line the discarded state had read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kafka import KafkaConsumer, TopicPartition

from gatewatch.checkpoint import Checkpoint, CheckpointStore
from gatewatch.metrics import ServeMetrics
from gatewatch.serve_stage import kv
from gatewatch.serve_topics import InternalTopics
from gatewatch.tasks.base import Role, Task, new_task, restore_task
from ingest.sources.kafka import stream_name

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig

__all__ = ["OwnedTask", "Resumer"]

log = logging.getLogger("gatewatch.serve")


@dataclass(slots=True)
class OwnedTask:
    """A task this process runs, with the offset of the next message of its partition to read."""

    task: Task
    tp: TopicPartition
    stream: str
    role: str
    next_offset: int
    applied: bool = False  # messages applied since its last take()
    dirty: bool = False  # state changed since its last checkpoint



class Resumer:
    """Makes the tasks of newly assigned partitions; holds what that needs from the detect stage."""

    def __init__(
        self,
        config: GatewatchConfig,
        digest: str,
        metrics: ServeMetrics,
        consumer: KafkaConsumer,
        checkpoints: CheckpointStore,
        topics: InternalTopics,
    ) -> None:
        self.config = config
        self._digest = digest
        self._metrics = metrics
        self._consumer = consumer
        self._checkpoints = checkpoints
        self._topics = topics

    def resume(
        self, partitions: list[TopicPartition], parked: dict[TopicPartition, OwnedTask]
    ) -> list[tuple[OwnedTask, str]]:
        """A task for each of ``partitions``, with the offset to continue from, and how it was made.

        How: kept_state (the same partition back, nobody committed past it),
        checkpoint, previous_checkpoint (the latest did not decode),
        committed_offsets (no usable checkpoint: fresh state, logged).
        """
        consumer, checkpoints, topics = self._consumer, self._checkpoints, self._topics
        committed = {tp: consumer.committed(tp) for tp in partitions}
        resumed: list[tuple[OwnedTask, str]] = []
        load: list[TopicPartition] = []
        for tp in partitions:
            kept = parked.get(tp)
            if kept is not None and (committed[tp] is None or committed[tp] <= kept.next_offset):
                resumed.append((kept, "kept_state"))
            else:
                load.append(tp)
        if not load:
            return resumed
        found = checkpoints.load_many([(stream_name(tp),) for tp in load])
        fresh: list[TopicPartition] = []
        for tp in load:
            stream = stream_name(tp)
            role = topics.role(tp.topic)
            assert role is not None
            restored = self._restore(tp, role, found.get((stream,), []))
            if restored is None:
                fresh.append(tp)
            else:
                resumed.append(restored)
        if fresh:
            starts = {tp: committed[tp] for tp in fresh if committed[tp] is not None}
            missing = [tp for tp in fresh if tp not in starts]
            if missing:
                starts.update(consumer.beginning_offsets(missing))
            streams = self._input_streams()
            for tp in fresh:
                role = topics.role(tp.topic)
                assert role is not None
                task = new_task(self.config, role, tp.partition, topics.partitions, streams)
                if role == "findings" and int(starts[tp]) == 0:
                    # not the first: an upgrade from a release with the single detect topic, whose ids were
                    # <alert id>-<n>, so this task's ids must differ from them
                    sent = holds_messages(consumer, self.config.kafka.topics.alerts)
                    task.sent_before = sent  # type: ignore[attr-defined]
                resumed.append((OwnedTask(task, tp, stream_name(tp), role, int(starts[tp]), dirty=True),
                                "committed_offsets"))  # fmt: skip
        return resumed

    def _restore(self, tp: TopicPartition, role: Role, found: list[Checkpoint]) -> tuple[OwnedTask, str] | None:
        topics = self._topics
        stream = stream_name(tp)
        reason = "no_checkpoint"
        for age, checkpoint in enumerate(found):
            offset = checkpoint.offsets.get(stream)
            if offset is None or offset < 0:
                reason = "malformed"
                log.warning(kv("checkpoint_unusable", task=stream, reason=reason, error="no offset for the partition"))
                continue
            try:
                task = restore_task(self.config, role, tp.partition, topics.partitions, checkpoint.snapshot)
            except Exception as error:  # noqa: BLE001 (typed but inconsistent state: whatever a restore raises)
                # Never half-applied: the task is used only once everything decoded.
                reason = "state_undecodable"
                self._metrics.record_error("checkpoint", "undecodable")
                log.warning(kv("checkpoint_unusable", task=stream, reason=reason, error=str(error)[:300],
                               which="latest" if age == 0 else "previous"))  # fmt: skip
                continue
            if checkpoint.config_digest != self._digest:
                log.warning(kv("state_under_new_config", stage="detect", task=stream,
                               note="the new settings apply from here to the state built under the old ones"))  # fmt: skip
            if age:
                self._checkpoints.resumed_from(checkpoint)
                log.warning(kv("checkpoint_fallback", stage="detect", task=stream,
                               note="restored the previous checkpoint", offset=offset))  # fmt: skip
            return OwnedTask(task, tp, stream, role, offset), "checkpoint" if age == 0 else "previous_checkpoint"
        log.warning(kv("state_fresh", stage="detect", task=stream, reason=reason,
                       note="the task's state starts empty at the committed offset"))  # fmt: skip
        return None

    def _input_streams(self) -> list[str]:
        """Every input partition, ``<topic>/<partition>``: a fresh join task waits for each until it is heard from."""
        consumer = self._consumer
        topics = self.config.kafka.topics
        streams = []
        for topic in (topics.gateway, topics.app):
            for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                streams.append(stream_name(TopicPartition(topic, partition)))
        return streams


def holds_messages(consumer: KafkaConsumer, topic: str) -> bool:
    """``topic`` exists and holds at least one message (asked of the broker; nothing is read)."""
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        return False
    ends, starts = consumer.end_offsets(partitions), consumer.beginning_offsets(partitions)
    return any(ends[tp] > starts[tp] for tp in partitions)
