"""The numpy isolation forest against scikit-learn's IsolationForest, the model it follows."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from detectors.behaviour_outlier import BehaviourOutlier, _population, feature_matrix, model_input
from detectors.isolation_forest import average_path_length, isolation_scores
from tests.detectors.test_examples import EXAMPLE_CONTEXT
from tests.detectors.test_examples import feed as run

SEEDS = range(8)


def _window(clients: int, scanner: bool) -> tuple[np.ndarray, list[str]]:
    """behaviour_outlier's model input for one window of ``_population``, and the clients' addresses."""
    det = BehaviourOutlier(BehaviourOutlier.Config(), EXAMPLE_CONTEXT)
    run(det, _population(clients, scanner), end=False)
    rows = sorted(det.gather(math.inf), key=lambda row: row.ip)
    return model_input(feature_matrix(rows)), [row.ip for row in rows]


def _theirs(matrix: np.ndarray, seed: int) -> np.ndarray:
    forest = IsolationForest(n_estimators=100, contamination="auto", random_state=seed).fit(matrix)
    scores: np.ndarray = forest.decision_function(matrix)
    return scores


def _planted(clients: int) -> np.ndarray:
    """Gaussian clients of unequal spreads, a discrete and a sparse feature, and three far out."""
    rng = np.random.default_rng(11)
    matrix = rng.normal(size=(clients, 6)) * [1.0, 2.0, 3.0, 5.0, 1.0, 1.0]
    matrix[:, 4] = np.round(matrix[:, 4])
    matrix[:, 5] = 0.0
    matrix[:5, 5] = 1.0
    matrix[:3, :4] += 9.0
    return matrix


@pytest.mark.parametrize("clients", [40, 300, 700])  # 700: each tree draws 256 of them
def test_scores_agree_with_scikit_learn_on_planted_outliers(clients: int) -> None:
    matrix = _planted(clients)
    ours = np.mean([isolation_scores(matrix, seed=seed) for seed in SEEDS], axis=0)
    theirs = np.mean([_theirs(matrix, seed) for seed in SEEDS], axis=0)
    assert np.corrcoef(ours, theirs)[0, 1] > 0.99  # 0.9966-0.9984 measured
    assert np.abs(ours - theirs).max() < 0.03  # 0.010-0.017 measured
    assert set(np.argsort(ours)[:3]) == set(np.argsort(theirs)[:3]) == {0, 1, 2}


@pytest.mark.parametrize("clients", [20, 100, 600])
def test_behaviour_outliers_windows_score_as_with_scikit_learn(clients: int) -> None:
    """The rule's calibration (its module docstring) holds: a scanner and a homogeneous window score alike."""
    matrix, ips = _window(clients, scanner=True)
    scanner = ips.index("10.9.9.9")
    ours = [isolation_scores(matrix, seed=seed)[scanner] for seed in SEEDS]
    theirs = [_theirs(matrix, seed)[scanner] for seed in SEEDS]
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.02
    matrix, _ = _window(clients, scanner=False)
    ours_lowest = [isolation_scores(matrix, seed=seed).min() for seed in SEEDS]
    theirs_lowest = [_theirs(matrix, seed).min() for seed in SEEDS]
    assert abs(np.mean(ours_lowest) - np.mean(theirs_lowest)) < 0.02


def test_rows_that_cannot_be_told_apart_score_as_in_scikit_learn() -> None:
    same = np.ones((50, 4))  # every tree is one leaf of 50 rows: not isolated at all
    assert np.allclose(isolation_scores(same), _theirs(same, 7), atol=1e-12)
    assert np.allclose(isolation_scores(same), 0.0, atol=1e-12)
    two = np.array([[0.0, 1.0], [1.0, 0.0]])  # one split, a leaf of one row each side
    assert np.allclose(isolation_scores(two), _theirs(two, 7)) and np.allclose(isolation_scores(two), 0.0)


def test_duplicates_and_constant_features_still_isolate_the_odd_row() -> None:
    # Nodes constant in every feature (the duplicates) are leaves; constant features are never split on.
    matrix = np.zeros((60, 5))
    matrix[:, 1] = np.repeat([1.0, 2.0, 3.0], 20)
    matrix[59] = [0.0, 2.0, 0.0, 40.0, 0.0]
    scores = isolation_scores(matrix)
    assert scores.argmin() == 59 and scores[59] < -0.2
    assert np.all(scores[:59] > -0.05)


def test_average_path_length_is_the_binary_search_trees() -> None:
    assert list(average_path_length(np.array([0, 1, 2]))) == [0.0, 0.0, 1.0]
    harmonic = sum(1 / k for k in range(1, 256))  # H(255), which ln(255) + Euler's gamma approximates within 1/510
    assert average_path_length(np.array([256]))[0] == pytest.approx(2 * harmonic - 2 * 255 / 256, abs=2 / 510)


def test_scores_are_the_seeds() -> None:
    matrix = _planted(100)
    assert np.array_equal(isolation_scores(matrix, seed=3), isolation_scores(matrix, seed=3))
    assert not np.array_equal(isolation_scores(matrix, seed=3), isolation_scores(matrix, seed=4))
    rows = np.array([0, 17, 99])
    assert np.array_equal(isolation_scores(matrix, rows, seed=3), isolation_scores(matrix, seed=3)[rows])


def test_values_out_of_range_or_missing_score_without_a_warning() -> None:
    matrix = _planted(60)
    matrix[10, 0], matrix[11, 1], matrix[12, 2], matrix[13, 3] = 1e300, -np.inf, np.inf, np.nan
    scores = isolation_scores(matrix)  # the tests turn warnings into errors
    assert np.isfinite(scores).all()
    assert scores[10] < np.median(scores)  # far beyond the others, as float32's largest value


def test_fewer_than_two_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        isolation_scores(np.zeros((1, 3)))


def test_detection_imports_no_scikit_learn() -> None:
    """behaviour_outlier scores a window without scikit-learn (~130 MiB that serve no longer loads)."""
    code = (
        "import sys\n"
        "from detectors.behaviour_outlier import BehaviourOutlier, _population\n"
        "from tests.detectors.test_examples import EXAMPLE_CONTEXT, feed\n"
        "findings = feed(BehaviourOutlier(BehaviourOutlier.Config(), EXAMPLE_CONTEXT), _population(40, True))\n"
        "print(len(findings), any(name.split('.')[0] == 'sklearn' for name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert done.stdout.split() == ["1", "False"]
