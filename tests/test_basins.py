"""Tests for modeconn.stats.basins: affinity, eigengap, spectral basins, correlation, summaries."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import adjusted_rand_score
from tolerances import ATOL, RTOL

import modeconn.measures.barriers
import modeconn.stats.basins
import modeconn.stats.inference
from modeconn.errors import ConfigError, DataError
from modeconn.stats.basins import (
    BasinFit,
    Correlation,
    affinity,
    basin_recovery,
    basin_table,
    choose_n_basins,
    correlate,
    find_basins,
)


def block_distance(sizes, *, within=0.1, between=3.0, noise=0.02, seed=0):
    """Distance matrix of groups of the given sizes: small inside a group, large across.

    Returns (D, groups) with D symmetric, zero on the diagonal, non-negative.
    """
    groups = np.repeat(np.arange(len(sizes)), sizes)
    n = groups.size
    d = np.where(groups[:, None] == groups[None, :], within, between)
    rng = np.random.default_rng(seed)
    e = rng.uniform(0.0, noise, size=(n, n))
    d = d + (e + e.T) / 2
    np.fill_diagonal(d, 0.0)
    return d, groups


@pytest.mark.parametrize(
    "module", [modeconn.stats.basins, modeconn.stats.inference, modeconn.measures.barriers]
)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------- affinity


def test_affinity_hand_computed():
    d = np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # δ = 1: exp(−4/2) = e^−2, exp(−1/2) = e^−0.5, exp(0) = 1.
    s = affinity(d)
    expected = np.exp(-np.array([[0.0, 2.0, 0.5], [2.0, 0.0, 0.0], [0.5, 0.0, 0.0]]))
    np.testing.assert_allclose(s, expected, rtol=RTOL, atol=ATOL)
    # δ = 2: exp(−4/8) = e^−0.5 for the distance-2 pair.
    assert affinity(d, delta=2.0)[0, 1] == pytest.approx(np.exp(-0.5), rel=RTOL)
    np.testing.assert_array_equal(s, s.T)


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        (np.zeros((2, 3)), r"square 2-D array \(N×N\); got shape \(2, 3\)"),
        (np.zeros(3), r"got shape \(3,\)"),
        (
            np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0.3]]),
            r"a distance matrix must have a zero diagonal; got 0.3 at \[2, 2\]",
        ),
        (np.array([[0, 1, 2], [1, 0, 1], [1, 1, 0.0]]), r"symmetric; got 2.0 at \[0, 2\]"),
        (np.array([[0, -1], [-1, 0.0]]), r"non-negative; got -1.0 at \[0, 1\]"),
        (np.array([[0, np.nan], [np.nan, 0.0]]), r"finite; got nan at \[0, 1\]"),
    ],
)
def test_bad_distance_matrices(matrix, match):
    with pytest.raises(DataError, match=match):
        affinity(matrix)
    with pytest.raises(DataError, match=match):
        find_basins(matrix)


def test_tiny_asymmetry_is_tolerated():
    d, _ = block_distance([3, 3])
    d[0, 1] += 1e-12  # float noise, not a transposition mistake
    s = affinity(d)
    np.testing.assert_array_equal(s, s.T)


@pytest.mark.parametrize("delta", [0.0, -1.0, np.inf, np.nan])
def test_bad_delta(delta):
    with pytest.raises(ConfigError, match="delta must be a finite number > 0"):
        affinity(np.zeros((3, 3)), delta=delta)


# --------------------------------------------------------------------------- eigengap


@pytest.mark.parametrize("sizes", [[4, 4], [3, 6], [3, 3, 3], [2, 5, 4], [3, 3, 3, 3]])
def test_eigengap_counts_blocks(sizes):
    d, _ = block_distance(sizes)
    assert choose_n_basins(affinity(d)) == len(sizes)


def test_eigengap_hand_computed():
    # Two exact blocks of 3 with no link across would be disconnected; with S = 1 inside a
    # block and ε across, the normalised Laplacian has eigenvalues ≈ 0, 0, then ≈ 3/2
    # (the complete graph K₃ without self-loops: 3/(3−1)). The largest gap is after λ₂ → 2.
    s = np.kron(np.eye(2), np.ones((3, 3))) + 1e-6
    lam = modeconn.stats.basins._laplacian_eigenvalues(s)
    np.testing.assert_allclose(lam, [0.0, 0.0, 1.5, 1.5, 1.5, 1.5], atol=1e-5)
    assert choose_n_basins(s) == 2


def test_choose_n_basins_max_k():
    d, _ = block_distance([2, 2, 2, 2])
    s = affinity(d)
    assert choose_n_basins(s) == 4
    assert choose_n_basins(s, max_k=3) in (2, 3)  # 4 is out of reach
    with pytest.raises(ConfigError, match=r"max_k must be an integer in \[2, 7\]"):
        choose_n_basins(s, max_k=8)
    with pytest.raises(ConfigError, match="max_k"):
        choose_n_basins(s, max_k=1)


def test_choose_n_basins_errors():
    with pytest.raises(DataError, match="at least 3 members; got 2"):
        choose_n_basins(np.ones((2, 2)))
    with pytest.raises(DataError, match="row 2 has no off-diagonal weight"):
        choose_n_basins(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


# --------------------------------------------------------------------------- find_basins


def test_two_groups_recovered():
    # Members 0–2 form the smaller group, 3–7 the larger: relabelling must put 3–7 in basin 0.
    d, groups = block_distance([3, 5])
    fit = find_basins(d, n_basins=2)
    assert basin_recovery(fit.labels, groups) == pytest.approx(1.0)
    np.testing.assert_array_equal(fit.labels, [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(fit.sizes, [5, 3])
    # Score = ‖w − c₀‖ − ‖w − c₁‖: negative in the larger basin, positive in the smaller.
    assert np.all(fit.scores[fit.labels == 0] < 0)
    assert np.all(fit.scores[fit.labels == 1] > 0)
    assert fit.n_basins == 2
    assert fit.n_basins_from == "argument"


def test_find_basins_shapes_and_centroids():
    d, groups = block_distance([3, 3, 4], seed=1)
    fit = find_basins(d)  # eigengap picks 3
    assert fit.n_basins == 3
    assert fit.n_basins_from == "eigengap"
    assert basin_recovery(fit.labels, groups) == pytest.approx(1.0)
    assert fit.embedding.shape == (10, 3)
    assert fit.centroids.shape == (3, 3)
    assert fit.eigenvalues.shape == (10,)
    assert np.all(np.diff(fit.eigenvalues) >= -ATOL)
    assert fit.eigenvalues[0] == pytest.approx(0.0, abs=1e-8)
    assert fit.sizes[0] == 4  # the group of 4 is basin 0
    for b in range(3):
        np.testing.assert_allclose(
            fit.centroids[b], fit.embedding[fit.labels == b].mean(axis=0), atol=ATOL
        )
    expected = np.linalg.norm(fit.embedding - fit.centroids[0], axis=1) - np.linalg.norm(
        fit.embedding - fit.centroids[1], axis=1
    )
    np.testing.assert_allclose(fit.scores, expected, atol=ATOL)


def test_ties_go_to_lowest_member_index():
    # Two groups of 3, the second listed first in member order: basin 0 holds member 0.
    d, _ = block_distance([3, 3], seed=2)
    perm = np.array([3, 4, 5, 0, 1, 2])
    fit = find_basins(d[np.ix_(perm, perm)], n_basins=2)
    assert fit.labels[0] == 0
    np.testing.assert_array_equal(fit.labels, [0, 0, 0, 1, 1, 1])


def test_find_basins_is_deterministic():
    d, _ = block_distance([4, 6], noise=0.5, seed=3)
    a, b = find_basins(d, seed=7), find_basins(d, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_basin_fit_round_trip_and_read_only():
    d, _ = block_distance([3, 4])
    fit = find_basins(d, n_basins=2, delta=0.8, seed=3)
    back = BasinFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    for name in ("labels", "embedding", "centroids", "scores", "eigenvalues"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fit, name))
    assert (back.n_basins, back.delta, back.seed, back.n_basins_from) == (2, 0.8, 3, "argument")
    assert back.labels.dtype == np.int64
    with pytest.raises(ValueError):
        fit.labels[0] = 1  # arrays of a frozen result are read-only
    with pytest.raises(DataError, match=r"missing keys \['scores'\]"):
        BasinFit.from_dict({k: v for k, v in fit.to_dict().items() if k != "scores"})


def test_find_basins_errors():
    with pytest.raises(DataError, match="at least 3 members; got 2"):
        find_basins(np.array([[0.0, 1.0], [1.0, 0.0]]))
    d, _ = block_distance([3, 3])
    for bad in (1, 6, 2.0, True):
        with pytest.raises(ConfigError, match=r"n_basins must be an integer in \[2, 5\]"):
            find_basins(d, n_basins=bad)
    with pytest.raises(ConfigError, match="delta"):
        find_basins(d, delta=0.0)


# --------------------------------------------------------------------------- correlate


def test_correlate_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.8 * x + 0.5 * rng.normal(size=40)
    c = correlate(x, y, n_boot=500, seed=1)
    pr, sr = stats.pearsonr(x, y), stats.spearmanr(x, y)
    assert c.pearson_r == pytest.approx(pr.statistic, rel=RTOL)
    assert c.pearson_p == pytest.approx(pr.pvalue, rel=RTOL)
    assert c.spearman_rho == pytest.approx(sr.statistic, rel=RTOL)
    assert c.spearman_p == pytest.approx(sr.pvalue, rel=RTOL)
    assert c.pearson_ci[0] <= c.pearson_r <= c.pearson_ci[1]
    assert c.spearman_ci[0] <= c.spearman_rho <= c.spearman_ci[1]
    assert -1.0 <= c.pearson_ci[0] < c.pearson_ci[1] <= 1.0
    assert (c.n, c.n_boot, c.n_boot_used, c.confidence, c.seed) == (40, 500, 500, 0.95, 1)


def test_correlate_seeded_and_confidence():
    rng = np.random.default_rng(1)
    x = rng.normal(size=20)
    y = x + rng.normal(size=20)
    a, b = correlate(x, y, n_boot=300, seed=5), correlate(x, y, n_boot=300, seed=5)
    assert a == b
    other = correlate(x, y, n_boot=300, seed=6)
    assert other.pearson_ci != a.pearson_ci
    narrow = correlate(x, y, n_boot=300, confidence=0.5, seed=5)
    assert narrow.pearson_ci[1] - narrow.pearson_ci[0] < a.pearson_ci[1] - a.pearson_ci[0]


def test_correlate_skips_degenerate_resamples():
    # With 3 members, 3 of the 27 equally likely resamples repeat one member (constant x).
    c = correlate([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], n_boot=400, seed=0)
    assert 0 < c.n_boot_used < 400
    assert np.isfinite(c.pearson_ci).all()


def test_bootstrap_spearman_is_pearson_on_ranks():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, size=(20, 9)).astype(float)  # ties on purpose
    b = rng.normal(size=(20, 9))
    got = modeconn.stats.inference._rowwise_pearson(
        stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    )
    for row in range(20):
        if np.ptp(a[row]) > 0:
            assert got[row] == pytest.approx(stats.spearmanr(a[row], b[row]).statistic, rel=RTOL)


def test_correlation_round_trip():
    c = correlate([1.0, 2.0, 3.0, 5.0], [2.0, 1.0, 4.0, 6.0], n_boot=50)
    d = json.loads(json.dumps(c.to_dict()))
    assert Correlation.from_dict(d) == c
    with pytest.raises(DataError, match="missing key 'n'"):
        Correlation.from_dict({k: v for k, v in d.items() if k != "n"})


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        ([1, 2, 3], [1, 2], {}, DataError, "same length; got 3 and 2"),
        ([1, 2], [1, 2], {}, DataError, "at least 3 points; got 2"),
        ([1, 1, 1], [1, 2, 3], {}, DataError, r"x is constant"),
        ([1, 2, 3], [4, 4, 4], {}, DataError, r"y is constant"),
        ([1, np.nan, 3], [1, 2, 3], {}, DataError, r"x must be finite; got nan at index 1"),
        ([[1, 2, 3]], [1, 2, 3], {}, DataError, r"1-D"),
        ([1, 2, 3], [1, 3, 2], {"n_boot": 0}, ConfigError, "n_boot"),
        ([1, 2, 3], [1, 3, 2], {"confidence": 1.0}, ConfigError, "confidence"),
    ],
)
def test_correlate_errors(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        correlate(x, y, **kwargs)


# --------------------------------------------------------------------------- summaries


def test_basin_recovery():
    assert basin_recovery([0, 0, 1, 1, 2], ["b", "b", "a", "a", "c"]) == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 3, 30), rng.integers(0, 2, 30)
    assert basin_recovery(a, b) == pytest.approx(adjusted_rand_score(b, a), rel=RTOL)
    with pytest.raises(DataError, match="one entry per member; got 2 and 3"):
        basin_recovery([0, 1], [0, 1, 1])


def test_basin_table_hand_computed():
    labels = [1, 0, 0, 1, 0]
    ood = [0.2, 0.6, 0.7, 0.4, 0.8]
    iid = [0.84, 0.80, 0.82, 0.86, 0.84]
    t = basin_table(labels, {"ood": ood, "iid": iid})
    assert t.index.name == "basin"
    assert list(t.index) == [0, 1]
    assert list(t.columns) == ["size", "ood_mean", "ood_std", "iid_mean", "iid_std"]
    assert list(t["size"]) == [3, 2]
    # Basin 0: OOD [.6, .7, .8] → mean .7, sample std √((.01 + 0 + .01)/2) = .1.
    assert t.loc[0, "ood_mean"] == pytest.approx(0.7, abs=ATOL)
    assert t.loc[0, "ood_std"] == pytest.approx(0.1, abs=ATOL)
    # Basin 1: OOD [.2, .4] → mean .3, std √((.01 + .01)/1) = √.02.
    assert t.loc[1, "ood_mean"] == pytest.approx(0.3, abs=ATOL)
    assert t.loc[1, "ood_std"] == pytest.approx(np.sqrt(0.02), abs=ATOL)
    assert t.loc[1, "iid_mean"] == pytest.approx(0.85, abs=ATOL)
    with pytest.raises(DataError, match=r"values\['ood'\] must hold one number per member \(5\)"):
        basin_table(labels, {"ood": [0.1, 0.2]})
    assert list(basin_table(labels, {}).columns) == ["size"]


def test_median_delta_follows_the_distances() -> None:
    from modeconn.stats.basins import median_delta

    # off-diagonal distances 0.2, 0.4, 0.6 (each twice): median 0.4
    d = np.array([[0.0, 0.2, 0.4], [0.2, 0.0, 0.6], [0.4, 0.6, 0.0]])
    assert median_delta(d) == pytest.approx(0.4)
    assert median_delta(np.zeros((3, 3))) == 1.0  # no scale to follow: the paper's δ


def test_small_gaps_need_a_data_scale_to_show_two_basins() -> None:
    from modeconn.stats.basins import affinity, find_basins, median_delta

    # two blocks with gaps 0.01 inside and 0.05 between: at δ = 1 every similarity is
    # exp(−0.05²/2) ≈ 0.9988 or more, but at the median scale the blocks separate
    d = np.full((6, 6), 0.05)
    d[:3, :3] = d[3:, 3:] = 0.01
    np.fill_diagonal(d, 0.0)
    s = affinity(d, delta=1.0)
    assert s.min() > 0.998
    fit = find_basins(d, n_basins=2, delta=median_delta(d))
    assert sorted(fit.labels[:3].tolist()) == [fit.labels[0]] * 3
    assert set(fit.labels[:3]) != set(fit.labels[3:])
