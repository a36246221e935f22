"""Hypothesis strategies the parser tests share."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


def json_values(keys: Sequence[str], max_list: int, max_leaves: int) -> st.SearchStrategy[object]:
    """Any JSON value, nesting objects whose keys are drawn from ``keys``."""
    return st.recursive(
        st.one_of(
            st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
            st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=max_list), st.dictionaries(st.sampled_from(list(keys)), children)
        ),
        max_leaves=max_leaves,
    )
