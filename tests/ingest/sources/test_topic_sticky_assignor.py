"""The detect group's assignor: every member gets its share of every topic, and partitions stay where they were.

Runs kafka-python's own member-metadata encoding (the sticky assignor's user
data), so a library change under :class:`TopicStickyAssignor` fails here.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from kafka import TopicPartition

from ingest.sources.kafka_client import TopicStickyAssignor

P = 6
SIZES = {"g-requests": P, "g-keyed": P, "g-findings": 1}


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(SIZES[topic]))


def _member(member_id: str, owned: list[TopicPartition] | None = None, generation: int = 1) -> SimpleNamespace:
    metadata = TopicStickyAssignor._metadata(sorted(SIZES), owned, generation)
    return SimpleNamespace(member_id=member_id, group_instance_id=None, metadata=metadata)


def _assign(members: list[SimpleNamespace]) -> dict[str, list[TopicPartition]]:
    result = TopicStickyAssignor().assign(_Cluster(), members)
    return {member_id: sorted(assignment.partitions()) for member_id, assignment in result.items()}


def _per_topic(assignment: dict[str, list[TopicPartition]], topic: str) -> Counter[str]:
    return Counter({m: sum(1 for tp in tps if tp.topic == topic) for m, tps in assignment.items()})


def test_every_member_gets_its_share_of_every_topic_and_each_partition_one_owner() -> None:
    for count in (1, 2, 3, 4):
        assignment = _assign([_member(f"m{i}") for i in range(count)])
        every = [tp for tps in assignment.values() for tp in tps]
        assert sorted(every) == sorted(TopicPartition(t, p) for t, n in SIZES.items() for p in range(n))
        for topic in ("g-requests", "g-keyed"):
            shares = _per_topic(assignment, topic).values()
            assert max(shares) - min(shares) <= 1, (count, topic, assignment)


def test_a_joining_member_takes_partitions_from_the_others_and_the_rest_stay() -> None:
    before = _assign([_member("a"), _member("b")])
    after = _assign([_member("a", before["a"]), _member("b", before["b"]), _member("c")])
    assert {topic: sorted(_per_topic(after, topic).values()) for topic in ("g-requests", "g-keyed")} == {
        "g-requests": [2, 2, 2], "g-keyed": [2, 2, 2]
    }  # fmt: skip
    for member in ("a", "b"):
        assert set(after[member]) <= set(before[member])  # nothing moved between the old members
    moved = len(after["c"])
    assert moved == 4  # only what the newcomer needs: 2 join and 2 keyed partitions


def test_a_member_leaving_hands_its_partitions_to_the_rest_without_moving_theirs() -> None:
    before = _assign([_member("a"), _member("b"), _member("c")])
    after = _assign([_member("a", before["a"]), _member("c", before["c"])])
    assert set(before["a"]) <= set(after["a"]) and set(before["c"]) <= set(after["c"])
    assert sorted(after["a"] + after["c"]) == sorted(before["a"] + before["b"] + before["c"])
