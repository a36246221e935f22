"""Isolation forest scores (Liu, Ting and Zhou, 2008), all trees grown together with numpy.

behaviour_outlier grows a forest each window. scikit-learn's IsolationForest took ~0.1 s of CPU
a fit however few the clients, nearly all of it per tree in Python (a seeded RandomState, a
cloned estimator, its input checked again, for each of 100 trees): at 10 requests/s, 42% of a
replay. Here the trees grow a level at a time, every node of every tree in the same few array
operations, and the rows to score ride down the trees as they grow, so no tree is stored:
~10 ms for a window of 220 clients.

The model is scikit-learn's with ``contamination="auto"``:

- each tree is grown on ``min(256, n)`` rows drawn without replacement, to a depth of
  ``ceil(log2(rows))``;
- a node splits on a feature drawn among those not constant in it, at a threshold drawn
  uniformly between that feature's least and greatest value there (a row goes right when
  above it); a node of one row, or constant in every feature, is a leaf;
- a row's path length in a tree is its leaf's depth plus ``c(rows in the leaf)``, c(n) being
  the average path length of an unsuccessful search in a binary search tree of n keys;
- its score is ``0.5 - 2 ** (-mean path length / c(rows a tree))``, scikit-learn's
  ``decision_function``: below 0 is more isolated than usual, 0 is not isolated at all.

The random draws are its own (a seeded numpy Generator: the same input gives the same scores),
so a row's score differs from scikit-learn's as two forests' do.
tests/detectors/test_isolation_forest.py holds the two side by side.
"""

from __future__ import annotations

import numpy as np

TREES = 100
ROWS_A_TREE = 256
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def average_path_length(rows: np.ndarray) -> np.ndarray:
    """c(n) of each count in ``rows``: 0 for one row, 1 for two, 2·H(n-1) - 2(n-1)/n above."""
    n = rows.astype(np.float64)
    lengths = np.where(n == 2, 1.0, 0.0)
    many = n > 2
    lengths[many] = 2.0 * (np.log(n[many] - 1.0) + np.euler_gamma) - 2.0 * (n[many] - 1.0) / n[many]
    return lengths


def isolation_scores(matrix: np.ndarray, rows: np.ndarray | None = None, seed: int = 7) -> np.ndarray:
    """The score of each row of ``matrix`` (or of each row of ``rows``) in a forest grown on all of them."""
    # float32, as scikit-learn's trees read it; a value past float32's range is its largest, not inf
    data = np.ascontiguousarray(np.clip(matrix, -_FLOAT32_MAX, _FLOAT32_MAX), dtype=np.float32)
    count, width = data.shape
    if count < 2:
        raise ValueError(f"an isolation forest needs at least 2 rows, got {count}")
    queries = data if rows is None else np.ascontiguousarray(data[rows])
    rng = np.random.default_rng(seed)
    sample = min(ROWS_A_TREE, count)
    max_depth = int(np.ceil(np.log2(sample)))
    if sample == count:  # every row in every tree: a tree's rows need no order
        drawn = np.tile(np.arange(count), TREES)
    else:
        drawn = np.argpartition(rng.random((TREES, count)), sample - 1, axis=1)[:, :sample].ravel()
    # The training rows of every tree ("items", rows of ``data``) and the rows being scored in
    # every tree ("riders", rows of ``queries``), each with its node: ``tree << depth | node``, the
    # node numbered left to right within its level, so that sorting by node groups a node's rows.
    items, nodes = drawn, np.repeat(np.arange(TREES, dtype=np.int64), sample)
    rider_rows = np.tile(np.arange(len(queries)), TREES)
    rider_nodes = np.repeat(np.arange(TREES, dtype=np.int64), len(queries))
    riding = np.arange(len(rider_nodes))
    lengths = np.zeros(len(rider_nodes))
    for depth in range(max_depth + 1):
        order = np.argsort(nodes, kind="stable")
        nodes, items = nodes[order], items[order]
        starts = np.flatnonzero(np.concatenate(([True], nodes[1:] != nodes[:-1])))
        sizes = np.diff(np.append(starts, len(nodes)))
        group = np.repeat(np.arange(len(starts)), sizes)
        if depth < max_depth:
            feature, least, greatest, chosen = _split_features(data, items, group, starts, sizes > 1, rng)
        else:
            feature = np.full(len(starts), -1)
        leaf = feature < 0
        # Each rider is in a node holding training rows: a split leaves rows on both sides.
        at = np.searchsorted(nodes[starts], rider_nodes[riding])
        ends = leaf[at]
        lengths[riding[ends]] = depth + average_path_length(sizes[at[ends]])
        riding, at = riding[~ends], at[~ends]
        if not len(riding):
            break
        threshold = least + rng.random(len(starts)) * (greatest - least)
        threshold = np.where(threshold >= greatest, least, threshold)  # rounding: keep a row on each side
        kept = ~leaf[group]
        items, group = items[kept], group[kept]
        nodes = (nodes[kept] << 1) | (chosen[kept] > threshold[group])
        rider_right = queries.take(rider_rows[riding] * width + feature[at]) > threshold[at]
        rider_nodes[riding] = (rider_nodes[riding] << 1) | rider_right
    mean_length = lengths.reshape(TREES, len(queries)).mean(axis=0)
    scores: np.ndarray = 0.5 - 2.0 ** (-mean_length / average_path_length(np.array([sample]))[0])
    return scores


def _split_features(
    data: np.ndarray, items: np.ndarray, group: np.ndarray, starts: np.ndarray, splitting: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each splitting node's feature, drawn among those not constant in it (-1 for a node constant in
    every feature, or not splitting), that feature's least and greatest value there (float64), and
    each row's value of its node's feature.

    Each node ranks the features by a random key and tries them in that order until one varies:
    the first that does is as likely to be any of them. Most nodes split on the first one tried.
    """
    nodes, width = len(starts), data.shape[1]
    feature = np.full(nodes, -1)
    least, greatest = np.zeros(nodes), np.zeros(nodes)
    keys = rng.random((nodes, width))
    open_nodes = np.flatnonzero(splitting)
    items_now, group_now, starts_now = items, group, starts
    chosen = rows = np.empty(0)  # from the first attempt on: every row's value, the open nodes' rows
    for attempt in range(width):
        column = keys.argmin(axis=1)
        picked = data.take(items_now * width + column[group_now])
        if attempt:
            chosen[rows] = picked  # a row of a node found now keeps it; the others are tried again
        else:
            chosen = picked
        low, high = np.minimum.reduceat(picked, starts_now), np.maximum.reduceat(picked, starts_now)
        if not attempt:
            low, high = low[open_nodes], high[open_nodes]
        varies = high > low
        found = open_nodes[varies]
        feature[found] = column[found]
        least[found], greatest[found] = low[varies], high[varies]
        open_nodes = open_nodes[~varies]
        if not len(open_nodes):
            break
        keys[np.arange(nodes), column] = np.inf  # tried
        rows = np.zeros(nodes, dtype=bool)
        rows[open_nodes] = True
        rows = rows[group]  # the rows of the nodes still open
        items_now, group_now = items[rows], group[rows]
        starts_now = np.searchsorted(group_now, open_nodes)
    return feature, least, greatest, chosen
