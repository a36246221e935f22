"""behaviour_outlier: gates at their edges, window closing, explanations, determinism."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest

from detectors.behaviour_outlier import FEATURES, BehaviourOutlier, _population, outlier_scores, robust_z
from detectors.sample import T0, app_event, gateway_event
from ingest.records import Event
from tests.detectors.test_examples import EXAMPLE_CONTEXT
from tests.detectors.test_examples import feed as run


def detector(**overrides: object) -> BehaviourOutlier:
    return BehaviourOutlier(BehaviourOutlier.Config(**overrides), EXAMPLE_CONTEXT)




def scanner(requests: int, start: float = 0.0, ip: str = "10.9.9.9") -> list[Event]:
    return [
        gateway_event(start + i * 250 / requests, request_id=f"s-{start}-{i}", source_ip=ip, path=f"/{i}.php",
                      status=404, bytes_sent=180)
        for i in range(requests)
    ]


def merged(*parts: Iterable[Event]) -> list[Event]:
    return sorted((e for part in parts for e in part), key=lambda e: e.ts)


def test_scanner_finding_explains_itself() -> None:
    (finding,) = run(detector(), _population(40, scanner=True))
    assert (finding.entity_type, finding.entity_value) == ("source.ip", "10.9.9.9")
    assert finding.summary == (
        "10.9.9.9 is unlike its 40 peers: distinct_paths 150 (z=+98), no_token_ratio 1.00 (z=+20), "
        "4xx_ratio 0.88 (z=+17)"
    )
    assert finding.details["features"] == {
        "requests": 160.0, "distinct_paths": 150.0, "4xx_ratio": 0.875, "5xx_ratio": 0.0,
        "mean_bytes_sent": 180.0, "no_token_ratio": 1.0,
    }
    assert finding.details["deviations"]["distinct_paths"] == 98.48
    assert finding.details["score"] == pytest.approx(-0.3575, abs=1e-4)  # the seeded forest: the same every run
    assert finding.details["window_start"] == T0 and finding.details["peers"] == 40
    assert len(finding.request_ids) == 20


def test_fewer_than_min_clients_are_not_scored() -> None:
    assert [f.entity_value for f in run(detector(), _population(19, scanner=True))] == ["10.9.9.9"]  # 20 clients
    det = detector()
    assert run(det, _population(18, scanner=True), end=False) == []
    assert det.advance(math.inf) == []  # 19 clients
    assert det._windows == {}


def test_min_requests_gate() -> None:
    peers = _population(40, scanner=False)
    assert [f.entity_value for f in run(detector(), merged(peers, scanner(20)))] == ["10.9.9.9"]
    assert run(detector(), merged(peers, scanner(19))) == []


def test_min_feature_z_gate() -> None:
    events = _population(40, scanner=True)
    assert run(detector(min_feature_z=98.0), events) != []
    assert run(detector(min_feature_z=99.0), events) == []  # its largest robust z is 98.5


def test_windows_close_when_the_watermark_passes_their_end_and_are_dropped() -> None:
    det = detector()
    second_window = [gateway_event(e.ts - T0 + 300, **_fields(e)) for e in _population(40, scanner=True)]
    assert run(det, [*_population(40, scanner=False), *second_window], end=False) == []
    assert sorted(det._windows) == [T0 + 300]  # the first window closed, quietly, when t=300 arrived
    assert det.advance(T0 + 599) == []
    (finding,) = det.advance(T0 + 600)
    assert finding.details["window_start"] == T0 + 300
    assert det._windows == {}


def test_only_gateway_events_with_an_address_count() -> None:
    det = detector()
    run(det, [app_event(i, source_ip="10.0.0.5", path="/v1/x") for i in range(50)]
        + [gateway_event(60 + i, path="/v1/x", status=200) for i in range(50)], end=False)
    assert det._windows == {}


def test_distinct_paths_saturate_at_the_cap() -> None:
    det = detector(max_paths_per_client=100)
    run(det, scanner(5000), end=False)
    (client,) = det._windows[T0].values()
    assert len(client.paths) == 100 and client.requests == 5000 and len(client.request_ids) == 20


def test_same_input_twice_gives_identical_findings() -> None:
    events = _population(40, scanner=True)
    first, second = run(detector(), events), run(detector(), events)
    assert first and first == second


def test_robust_z() -> None:
    assert list(FEATURES) == ["requests", "distinct_paths", "4xx_ratio", "5xx_ratio", "mean_bytes_sent",
                              "no_token_ratio"]
    matrix = np.array([
        [10, 1, 0, 0, 1000, 0],
        [20, 1, 0, 0, 1100, 0],
        [30, 1, 0, 0, 1200, 0],
        [40, 1, 0, 0, 1300, 0],
        [1000, 1, 0.5, 0.01, 1400, 0],
    ], dtype=float)
    z = robust_z(matrix)[-1]
    # requests: MAD 10; 4xx: MAD 0, so mean deviation 0.1; 5xx: the 0.05 floor; bytes: MAD 100 (over 10 % of 1200)
    assert z == pytest.approx([970 / 14.826, 0.0, 0.5 / 0.12533, 0.01 / 0.05, 200 / 148.26, 0.0])


def test_outlier_scores_are_reproducible() -> None:
    matrix = np.random.default_rng(3).normal(size=(50, len(FEATURES))) + 5
    assert np.array_equal(outlier_scores(matrix), outlier_scores(matrix))
    assert not np.array_equal(outlier_scores(matrix, random_state=8), outlier_scores(matrix))


def test_scoring_some_rows_gives_exactly_their_scores_among_all() -> None:
    """The window's forest scores only its candidates: the same bits as scoring every client."""
    for seed in range(5):
        matrix = np.abs(np.random.default_rng(seed).normal(size=(300, len(FEATURES)))) * 50
        rows = np.flatnonzero(np.random.default_rng(seed + 100).random(300) < 0.05)
        assert np.array_equal(outlier_scores(matrix, rows=rows), outlier_scores(matrix)[rows])


def test_a_window_without_a_candidate_fits_no_forest(monkeypatch: pytest.MonkeyPatch) -> None:
    """No busy client with a far-out feature: nothing could be flagged, so no model is fitted."""
    import detectors.behaviour_outlier as module

    def no_forest(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("fitted a forest for a window without a candidate")

    monkeypatch.setattr(module, "outlier_scores", no_forest)
    assert run(detector(), _population(40, scanner=False)) == []


def _fields(event: Event) -> dict[str, object]:
    return {
        name: getattr(event, name)
        for name in ("request_id", "source_ip", "path", "status", "bytes_sent", "token_sub")
    }
