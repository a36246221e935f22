"""Every rule's state survives a checkpoint: stop anywhere in its examples, encode, decode, go on, same findings."""

from __future__ import annotations

import pytest

from detectors import registry
from detectors.alerts import AlertBook
from detectors.base import Detector, Example, Finding
from ingest.codec import decode_state, encode_state
from tests.detectors.test_examples import CASES, EXAMPLE_CONTEXT, feed


def _through_checkpoint(detector: Detector) -> Detector:
    """A fresh detector of the same rule and config, restored from ``detector``'s encoded state."""
    cls = type(detector)
    restored = cls(detector.config, detector.context)
    if cls.State is not None:
        restored.restore_state(decode_state(encode_state(detector.state()), cls.State))
    return restored


@pytest.mark.parametrize(("cls", "example"), CASES)
def test_stopping_anywhere_and_restoring_gives_the_same_findings(cls: type[Detector], example: Example) -> None:
    records = example.records
    reference = feed(cls(cls.Config(), EXAMPLE_CONTEXT), records)
    for cut in sorted({1, len(records) // 3, len(records) // 2, len(records) - 1}):
        first = cls(cls.Config(), EXAMPLE_CONTEXT)
        findings = feed(first, records[:cut], end=False)
        # Records after the cut, in the original; replayed into the restored one.
        restored = _through_checkpoint(first)
        findings += feed(restored, records[cut:])
        assert findings == reference, f"cut at {cut} of {len(records)}"


@pytest.mark.parametrize("cls", list(registry().values()), ids=list(registry()))
def test_a_rule_that_remembers_anything_declares_its_state(cls: type[Detector]) -> None:
    """A rule whose instances hold more than their config and context must checkpoint it."""
    detector = cls(cls.Config(), EXAMPLE_CONTEXT)
    for example in cls.examples():
        feed(detector, example.records, end=False)
    memory = set(vars(detector)) - {"config", "context"}
    if cls.State is None:
        assert not memory, f"{cls.rule_id} keeps {sorted(memory)} but declares no State"
        assert detector.state() is None
    else:
        assert memory, f"{cls.rule_id} declares a State but keeps nothing"
        state = decode_state(encode_state(detector.state()), cls.State)
        assert isinstance(state, cls.State)


def test_the_alert_book_continues_from_its_state() -> None:
    """Every example's findings through one book, checkpointed after each third: the same alerts."""
    findings: list[Finding] = []
    for cls, example in (case.values for case in CASES):
        findings += feed(cls(cls.Config(), EXAMPLE_CONTEXT), example.records)
    findings.sort(key=lambda f: f.ts)
    assert len({f.rule for f in findings}) >= 6

    def run(cuts: set[int]) -> dict[str, dict[str, object]]:
        book = AlertBook(suppression_window_secs=60.0, max_request_ids=5)
        alerts = {}
        for i, finding in enumerate(findings):
            if i in cuts:
                restored = AlertBook(60.0, 5)
                restored.restore_state(decode_state(encode_state(book.state()), AlertBook.State))
                book = restored
            alert = book.add(finding)
            alerts[alert.id] = alert.to_document()
            book.expire(finding.ts - 600)  # some windows forgotten along the way: their keys are state too
        return alerts

    assert run({len(findings) // 3, 2 * len(findings) // 3}) == run(set())
