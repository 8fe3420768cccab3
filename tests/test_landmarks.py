"""Landmark basins (stats.landmarks): the Nyström completion against all-pairs basins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from sklearn.metrics import adjusted_rand_score

from modeconn.errors import ConfigError, DataError
from modeconn.stats.basins import find_basins
from modeconn.stats.landmarks import (
    choose_landmarks,
    complete_affinity,
    landmark_basins,
    landmark_fraction,
    landmark_pairs,
    measured_mask,
)


def _population(n: int, k: int, seed: int, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A barrier matrix of k basins: small gaps within, large across, with noise."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, k, size=n)
    groups[:k] = np.arange(k)  # every basin present
    within = rng.uniform(0.0, 0.2, size=(n, n))
    across = rng.uniform(1.0, 2.0, size=(n, n))
    d = np.where(groups[:, None] == groups[None, :], within, across)
    d += noise * rng.standard_normal((n, n))
    d = np.abs((d + d.T) / 2)
    np.fill_diagonal(d, 0.0)
    return d, groups


def _hide(d: np.ndarray, landmarks: tuple[int, ...]) -> np.ndarray:
    out = d.copy()
    out[~measured_mask(len(d), landmarks)] = np.nan
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("delta", [1.0, "median"])
def test_all_landmarks_equal_exact_spectral_basins(seed: int, k: int, delta: object) -> None:
    """m = N: the Nyström embedding spans the exact embedding's subspace, same clusters."""
    d, _ = _population(30, k, seed)
    exact = find_basins(d, n_basins=k, delta=delta, seed=seed)  # type: ignore[arg-type]
    ny = landmark_basins(d, tuple(range(30)), n_basins=k, delta=delta, seed=seed)  # type: ignore[arg-type]
    assert adjusted_rand_score(exact.labels, ny.labels) == 1.0
    np.testing.assert_array_equal(exact.labels, ny.labels)
    # the embeddings may differ by a sign or rotation within the subspace: compare subspaces
    angles = subspace_angles(exact.embedding, ny.embedding)
    assert float(np.max(angles)) < 1e-6
    np.testing.assert_allclose(ny.eigenvalues, exact.eigenvalues, atol=1e-8)
    assert ny.delta == pytest.approx(exact.delta)


def test_complete_affinity_exact_when_all_measured() -> None:
    d, _ = _population(20, 2, 5)
    s = complete_affinity(d, range(20), delta=0.7)
    np.testing.assert_allclose(s, np.exp(-(d**2) / (2 * 0.7**2)), rtol=0, atol=1e-12)


def test_completion_reads_only_measured_entries() -> None:
    d, _ = _population(25, 2, 3)
    marks = choose_landmarks(25, 5, seed=1)
    a = complete_affinity(_hide(d, marks), marks, delta=1.0)
    garbage = d.copy()
    garbage[~measured_mask(25, marks)] = 99.0
    b = complete_affinity(garbage, marks, delta=1.0)
    np.testing.assert_array_equal(a, b)
    assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(np.diag(a), 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_few_landmarks_recover_clear_basins(seed: int) -> None:
    d, groups = _population(60, 2, seed)
    marks = choose_landmarks(60, 8, seed=seed)
    fit = landmark_basins(_hide(d, marks), marks, n_basins=2, delta="median", seed=0)
    full = find_basins(d, n_basins=2, delta="median", seed=0)
    assert adjusted_rand_score(full.labels, fit.labels) == 1.0
    assert adjusted_rand_score(groups, fit.labels) == 1.0


def test_choose_landmarks_seeded_distinct_sorted() -> None:
    a = choose_landmarks(50, 10, seed=3)
    assert a == choose_landmarks(50, 10, seed=3)
    assert a != choose_landmarks(50, 10, seed=4)
    assert list(a) == sorted(set(a)) and len(a) == 10


def test_kmeanspp_spreads_over_groups() -> None:
    d, groups = _population(40, 4, 0, noise=0.0)
    for seed in range(10):
        marks = choose_landmarks(40, 4, seed=seed, method="kmeans++", distance=d)
        assert len({int(groups[i]) for i in marks}) >= 3


def test_pairs_and_fraction_agree() -> None:
    n, marks = 30, (2, 7, 11)
    pairs = landmark_pairs(n, marks)
    assert len(pairs) == round(landmark_fraction(n, 3) * n * (n - 1) / 2)
    mask = measured_mask(n, marks)
    assert sum(bool(mask[i, j]) for i in range(n) for j in range(i + 1, n)) == len(pairs)
    assert landmark_fraction(n, n) == 1.0


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="landmarks must be an integer"):
        choose_landmarks(10, 11)
    with pytest.raises(ConfigError, match="needs `distance`"):
        choose_landmarks(10, 3, method="kmeans++")
    d, _ = _population(10, 2, 0)
    d[0, 5] = d[5, 0] = np.nan
    with pytest.raises(DataError, match="landmark 0"):
        complete_affinity(d, [0], delta=1.0)
