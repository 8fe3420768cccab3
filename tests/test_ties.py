"""Ties within float noise: merge_ties makes ranks independent of the last bits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from modeconn.stats.ties import count_ties, merge_ties, tie_tolerance


def test_hand_computed_groups() -> None:
    # 0.3 and 0.3 + 1e-12 are one group (gap 1e-12 < 1e-9); 0.3 + 1e-6 is not
    x = np.array([0.3, 0.3 + 1e-12, 0.3 + 1e-6, -0.1])
    m = merge_ties(x)
    assert m[0] == m[1]
    assert m[2] == x[2] and m[3] == x[3]
    assert count_ties(x) == 2


def test_chain_is_one_group() -> None:
    # a–b and b–c each within tolerance: single linkage makes a, b, c one group
    tol = tie_tolerance(np.array([1.0]))
    x = np.array([1.0, 1.0 + 0.6 * tol, 1.0 + 1.2 * tol])
    assert len(set(merge_ties(x).tolist())) == 1


def test_nan_left_alone() -> None:
    m = merge_ties([np.nan, 0.1, 0.1 + 1e-17])
    assert np.isnan(m[0]) and m[1] == m[2]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=3, max_size=12),
    st.integers(0, 2**32 - 1),
)
def test_ranks_unchanged_by_ulp_jitter(levels: list[int], seed: int) -> None:
    base = np.array(levels, dtype=np.float64) * 0.137 + 0.05
    rng = np.random.default_rng(seed)
    jitter = base + rng.integers(-4, 5, size=base.size) * np.spacing(base)
    y = rng.normal(size=base.size)
    r0 = stats.rankdata(merge_ties(base))
    r1 = stats.rankdata(merge_ties(jitter))
    assert np.array_equal(r0, r1)
    rho0 = stats.spearmanr(merge_ties(base), y).statistic
    rho1 = stats.spearmanr(merge_ties(jitter), y).statistic
    assert (np.isnan(rho0) and np.isnan(rho1)) or abs(rho0 - rho1) < 1e-12
