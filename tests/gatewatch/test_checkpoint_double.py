"""The in-memory checkpoint store (gatewatch/testing.py) keeps the real store's contract."""

from __future__ import annotations

import inspect

import pytest

from gatewatch.checkpoint import Checkpoint, CheckpointStore
from gatewatch.errors import CheckpointError, SourceError
from gatewatch.testing import MemoryCheckpointStore

ASSIGNMENT = ("gatewatch-detect/0",)


def _checkpoint(offset: int, assignment: tuple[str, ...] = ASSIGNMENT) -> Checkpoint:
    return Checkpoint(assignment, {assignment[0]: offset}, f"state at {offset}".encode(), created_at=float(offset))


def test_it_has_the_real_store_s_methods() -> None:
    for name in ("save", "load", "resumed_from", "close"):
        assert inspect.signature(getattr(MemoryCheckpointStore, name)) == inspect.signature(
            getattr(CheckpointStore, name)
        ), name


def test_load_returns_the_last_two_whole_checkpoints_newest_first_per_assignment() -> None:
    store = MemoryCheckpointStore()
    assert store.load(ASSIGNMENT) == []
    for offset in (10, 20, 30):
        assert store.save(_checkpoint(offset)) == len(_checkpoint(offset).snapshot)
    store.save(_checkpoint(99, ("other/0",)))
    loaded = store.load(list(ASSIGNMENT))
    assert [cp.offsets[ASSIGNMENT[0]] for cp in loaded] == [30, 20]
    assert {cp.slot for cp in loaded} == {"a", "b"}
    assert [cp.snapshot for cp in store.load(["other/0"])] == [b"state at 99"]


def test_a_torn_save_leaves_the_previous_checkpoint_whole() -> None:
    store = MemoryCheckpointStore()
    store.save(_checkpoint(10))
    store.save(_checkpoint(20))
    store.tear_next_save()
    with pytest.raises(CheckpointError) as caught:
        store.save(_checkpoint(30))
    assert isinstance(caught.value, SourceError)  # callers that retry a SourceError keep doing so
    # The torn save overwrote the slot of 10 (the older one); 20 is whole and is what a restart gets.
    assert [cp.offsets[ASSIGNMENT[0]] for cp in store.load(ASSIGNMENT)] == [20]
    store.save(_checkpoint(40))
    assert [cp.offsets[ASSIGNMENT[0]] for cp in store.load(ASSIGNMENT)] == [40, 20]


def test_resuming_from_the_older_checkpoint_protects_its_slot() -> None:
    store = MemoryCheckpointStore()
    store.save(_checkpoint(10))
    store.save(_checkpoint(20))
    newest, older = store.load(ASSIGNMENT)  # say the newest did not decode: the caller restores the older
    store.resumed_from(older)
    store.save(_checkpoint(30))
    # 30 went over the undecodable newest's slot: had it gone over the older's, a crash now would
    # leave nothing to restore. (Only the last two manifests count, so 10 is no longer listed.)
    assert [(cp.offsets[ASSIGNMENT[0]], cp.slot) for cp in store.load(ASSIGNMENT)] == [(30, newest.slot)]


def test_a_failing_store_raises_what_it_was_told_and_writes_nothing() -> None:
    store = MemoryCheckpointStore()
    store.fail_next(CheckpointError("checkpoint write failed: broker down"))
    with pytest.raises(CheckpointError):
        store.save(_checkpoint(10))
    assert store.load(ASSIGNMENT) == [] and store.saves == 0
    store.close()
    with pytest.raises(AssertionError):
        store.load(ASSIGNMENT)
