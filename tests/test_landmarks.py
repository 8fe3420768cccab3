"""Landmark basins (stats.landmarks): the Nyström completion against all-pairs basins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from sklearn.metrics import adjusted_rand_score

from modeconn.errors import ConfigError, DataError
from modeconn.stats.basins import find_basins
from modeconn.stats.landmarks import (
    CHOICES,
    COMPLETIONS,
    choose_landmarks,
    complete_affinity,
    complete_distance,
    farthest_landmarks,
    landmark_basins,
    landmark_fraction,
    landmark_pairs,
    measured_mask,
    replay_landmarks,
    sequential_landmarks,
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


# ---- choices, completions and the replay ------------------------------------------------


@pytest.mark.parametrize("completion", COMPLETIONS)
@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_method_with_every_member_a_landmark_is_exact(
    choice: str, completion: str, seed: int
) -> None:
    """m = N: every choice picks every member, every completion keeps every entry, and the
    basins are the all-pairs basins."""
    d, _ = _population(24, 3, seed)
    exact = find_basins(d, n_basins=3, delta="median", seed=seed)
    marks = (
        choose_landmarks(24, 24, seed=seed)
        if choice == "random"
        else choose_landmarks(24, 24, seed=seed, method=choice, distance=d)  # type: ignore[arg-type]
    )
    assert marks == tuple(range(24))
    fit = landmark_basins(d, marks, n_basins=3, delta="median", seed=seed, completion=completion)  # type: ignore[arg-type]
    np.testing.assert_array_equal(fit.labels, exact.labels)
    np.testing.assert_allclose(fit.eigenvalues, exact.eigenvalues, atol=1e-8)
    for m in (23, 24):  # m ≥ N − 1: the sweep measures every pair, the replay too
        none, same = replay_landmarks(
            d,
            m,
            choice=choice,
            completion=completion,
            n_basins=3,
            delta="median",
            seed=seed,  # type: ignore[arg-type]
        )
        assert none is None
        np.testing.assert_array_equal(same.labels, exact.labels)


def test_complete_distance_exact_when_all_measured_and_reads_only_measured() -> None:
    d, _ = _population(20, 2, 4)
    np.testing.assert_array_equal(complete_distance(d, range(20)), d)
    marks = choose_landmarks(20, 4, seed=2)
    garbage = d.copy()
    garbage[~measured_mask(20, marks)] = 99.0
    np.testing.assert_array_equal(
        complete_distance(_hide(d, marks), marks), complete_distance(garbage, marks)
    )


def test_complete_distance_within_triangle_bounds_of_a_metric() -> None:
    """On a true metric (Euclidean points) D_ij lies in [max |D_il − D_jl|, min D_il + D_jl],
    so the midpoint errs by at most half that interval; measured entries are kept."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 3))
    d = np.linalg.norm(x[:, None] - x[None], axis=2)  # (30, 30)
    marks = (0, 7, 19)
    est = complete_distance(_hide(d, marks), marks)
    cols = d[:, marks]
    lower = np.abs(cols[:, None, :] - cols[None, :, :]).max(-1)
    upper = (cols[:, None, :] + cols[None, :, :]).min(-1)
    assert np.all(lower <= d + 1e-12) and np.all(d <= upper + 1e-12)
    assert np.all(np.abs(est - d) <= (upper - lower) / 2 + 1e-12)
    mask = measured_mask(30, marks)
    np.testing.assert_array_equal(est[mask], d[mask])
    np.testing.assert_allclose(est, est.T)


def test_farthest_reads_one_row_per_landmark_and_covers_groups() -> None:
    d, groups = _population(40, 4, 0, noise=0.0)
    for seed in range(10):
        asked: list[int] = []
        marks = farthest_landmarks(40, 4, seed=seed, row=lambda i, a=asked: a.append(i) or d[i])
        assert len(asked) == 3 and set(asked) <= set(marks)  # the last row is not read
        assert len({int(groups[i]) for i in marks}) == 4  # max-min reaches every group
        assert marks == choose_landmarks(40, 4, seed=seed, method="farthest", distance=d)
        assert marks == farthest_landmarks(40, 4, seed=seed, row=lambda i: d[i])  # seeded


@pytest.mark.parametrize("completion", COMPLETIONS)
@pytest.mark.parametrize("choice", CHOICES)
def test_replay_is_choose_then_mask_then_complete(choice: str, completion: str) -> None:
    d, _ = _population(40, 2, 6)
    marks, fit = replay_landmarks(
        d,
        6,
        choice=choice,
        landmark_seed=3,
        completion=completion,
        n_basins=2,
        delta="median",  # type: ignore[arg-type]
    )
    want = (
        choose_landmarks(40, 6, seed=3)
        if choice == "random"
        else sequential_landmarks(40, 6, seed=3, row=lambda i: d[i], method=choice)  # type: ignore[arg-type]
    )
    assert marks == want
    again = landmark_basins(_hide(d, want), want, n_basins=2, delta="median", completion=completion)  # type: ignore[arg-type]
    np.testing.assert_array_equal(fit.labels, again.labels)


@pytest.mark.parametrize("completion", COMPLETIONS)
@pytest.mark.parametrize("choice", CHOICES)
def test_every_method_recovers_clear_basins(choice: str, completion: str) -> None:
    for seed in range(3):
        d, groups = _population(60, 2, seed)
        _, fit = replay_landmarks(
            d,
            8,
            choice=choice,
            landmark_seed=seed,
            completion=completion,
            n_basins=2,
            delta="median",  # type: ignore[arg-type]
        )
        assert adjusted_rand_score(groups, fit.labels) == 1.0


def test_bad_method_names() -> None:
    d, _ = _population(10, 2, 0)
    with pytest.raises(ConfigError, match="random, kmeans\\+\\+, farthest"):
        choose_landmarks(10, 3, method="maxmin", distance=d)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs `distance`"):
        choose_landmarks(10, 3, method="farthest")
    with pytest.raises(ConfigError, match="completion must be one of nystrom, triangle"):
        landmark_basins(d, [0, 1, 2], completion="mds")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="complete N×N distance matrix"):
        replay_landmarks(_hide(d, (0,)), 3)
