"""Ties within float noise: merge_ties makes ranks independent of the last bits."""

from __future__ import annotations

import numpy as np
import pytest
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


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
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


# --------------------------------------------------------------------------- end to end


def _tied_scores() -> tuple[np.ndarray, np.ndarray]:
    # three members on the larger basin's centroid share one score (as on the demo),
    # two on the other's; y is an OOD accuracy that does not follow the ties
    scores = np.array([-0.41, -0.41, -0.41, 0.37, 0.37, -0.2, 0.05, 0.3, -0.33, 0.12])
    y = np.array([0.61, 0.52, 0.58, 0.31, 0.29, 0.55, 0.40, 0.35, 0.50, 0.47])
    return scores, y


def _jittered(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return x + rng.integers(-3, 4, size=x.size) * np.spacing(x)


def _numbers(c: object) -> np.ndarray:
    from modeconn.stats.inference import Correlation

    assert isinstance(c, Correlation)
    return np.array(
        [c.pearson_r, *c.pearson_ci, c.spearman_rho, c.spearman_p, *c.spearman_ci, c.n_boot_used]
    )


def test_correlate_unchanged_by_ulp_jitter_of_tied_scores() -> None:
    """ρ, r and every bootstrap interval are the same when tied scores move by a few ulps."""
    from modeconn.stats.inference import correlate, r_squared

    scores, y = _tied_scores()
    ref = _numbers(correlate(scores, y, n_boot=500, seed=7))
    ref_r2 = r_squared(scores, y, n_boot=500, seed=7)
    raw_moved = False
    for seed in range(20):
        jit = _jittered(scores, seed)
        got = _numbers(correlate(jit, y, n_boot=500, seed=7))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        r2 = r_squared(jit, y, n_boot=500, seed=7)
        np.testing.assert_allclose(
            [r2.r_squared, *r2.r_squared_ci, r2.n_boot_used],
            [ref_r2.r_squared, *ref_r2.r_squared_ci, ref_r2.n_boot_used],
            rtol=0,
            atol=1e-12,
        )
        # without the merge the same jitter reorders the ties: the test has teeth
        raw = _numbers(correlate(jit, y, n_boot=500, seed=7, ties_rtol=None))
        raw_moved |= not np.allclose(raw, ref, rtol=0, atol=1e-12)
    assert raw_moved


def test_find_basins_merges_centroid_ties() -> None:
    """Members that sit on their basin's centroid get one exact score, counted as ties."""
    from modeconn.stats.basins import find_basins

    d = np.full((6, 6), 3.0)
    d[:4, :4] = 0.2
    d[4:, 4:] = 0.2
    np.fill_diagonal(d, 0.0)
    fit = find_basins(d, n_basins=2, delta=1.0)
    assert fit.ties == 6  # two blocks of identical members: every score is tied
    assert len(set(fit.scores[:4].tolist())) == 1
    assert fit.to_dict()["centroids_from"] == "mean"
