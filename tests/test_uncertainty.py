"""Bootstrap over the evaluation sample: weights, distance draws, label alignment, stability."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modeconn.errors import ConfigError, DataError
from modeconn.measures.barriers import convexity_gap
from modeconn.stats.uncertainty import (
    align_labels,
    distance_samples,
    resample_weights,
    sample_uncertainty,
    size_stability,
    subsample_weights,
)

ALPHAS = np.linspace(0.0, 1.0, 5)


def _population(n_examples: int, *, gap: float, noise: float, seed: int = 0):
    """Two groups of 3 members; a path between groups bulges by `gap` in the middle.

    Per-example losses = a flat 1.0, plus the bulge sin(πα)·gap on between-group paths,
    plus example noise; so the convexity gap is ≈ gap between groups and ≈ 0 within.
    """
    rng = np.random.default_rng(seed)
    group = [0, 0, 0, 1, 1, 1]
    pairs = list(itertools.combinations(range(6), 2))
    ex = np.empty((len(pairs), len(ALPHAS), n_examples))
    for p, (i, j) in enumerate(pairs):
        bulge = gap * np.sin(np.pi * ALPHAS) if group[i] != group[j] else 0.0 * ALPHAS
        ex[p] = 1.0 + bulge[:, None] + noise * rng.standard_normal((len(ALPHAS), n_examples))
    return ex, pairs, group


def test_resample_weights_are_the_means_of_explicit_draws() -> None:
    values = np.arange(10, dtype=float) ** 2
    w = resample_weights(10, samples=5, seed=3)
    # the same draws, made independently with the same generator
    idx = np.random.default_rng(3).integers(0, 10, size=(5, 10))
    np.testing.assert_allclose(w @ values, values[idx].mean(axis=1))


def test_subsample_weights_pick_distinct_examples() -> None:
    w = subsample_weights(10, 4, repeats=3, seed=0)
    assert ((w > 0).sum(axis=1) == 4).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    with pytest.raises(ConfigError, match="sizes"):
        subsample_weights(10, 11, repeats=1)


def test_distance_samples_match_a_direct_computation() -> None:
    ex, pairs, _ = _population(8, gap=0.5, noise=0.1)
    w = resample_weights(8, samples=4, seed=1)
    d = distance_samples(ex, w, pairs, 6, alphas=ALPHAS, metric="convexity_gap")
    idx = np.random.default_rng(1).integers(0, 8, size=(4, 8))
    for b in range(4):
        for p, (i, j) in enumerate(pairs):
            curve = ex[p][:, idx[b]].mean(axis=1)  # mean loss of draw b at every α
            assert d[b, i, j] == pytest.approx(convexity_gap(curve, ALPHAS), abs=1e-12)
            assert d[b, j, i] == d[b, i, j]
    assert np.all(d[:, range(6), range(6)] == 0)
    with pytest.raises(DataError, match="pairs, alphas, examples"):
        distance_samples(ex[:, :3], w, pairs, 6, alphas=ALPHAS, metric="convexity_gap")


def test_align_labels() -> None:
    assert align_labels([1, 1, 0, 0], [0, 0, 1, 1]).tolist() == [0, 0, 1, 1]
    # 3 of 4 agree after renaming 1→0, 0→1
    assert align_labels([1, 1, 0, 1], [0, 0, 1, 1]).tolist() == [0, 0, 1, 0]


def test_clear_basins_survive_every_draw() -> None:
    ex, pairs, group = _population(64, gap=1.0, noise=0.05)
    ood = np.array([0.1, 0.15, 0.2, 0.8, 0.85, 0.9])
    u = sample_uncertainty(
        ex, pairs, [f"m{i}" for i in range(6)], group,
        alphas=ALPHAS, metric="convexity_gap", n_basins=2, delta="median", ood=ood,
        samples=12, seed=0,
    )  # fmt: skip
    assert u.failed == 0
    np.testing.assert_allclose(u.keep, 1.0)
    np.testing.assert_allclose(u.ari, 1.0)
    # between-group entries ≈ 1.0, within ≈ 0; the intervals bracket them
    assert u.distance_lo[0, 5] > 0.8 and u.distance_hi[0, 5] < 1.2
    assert u.distance_hi[0, 1] < 0.2
    # basin 1 holds the high-OOD members; the score points to basin 1, so r > 0
    assert np.all(u.correlation > 0.9)
    assert u.keep_frame(group)["kept"].tolist() == [1.0] * 6


def test_noise_only_population_is_unstable() -> None:
    ex, pairs, _ = _population(16, gap=0.0, noise=0.5, seed=2)
    reference = [0, 0, 0, 0, 1, 1]
    u = sample_uncertainty(
        ex, pairs, [f"m{i}" for i in range(6)], reference,
        alphas=ALPHAS, metric="convexity_gap", n_basins=2, delta="median", samples=12,
    )  # fmt: skip
    assert u.ari.mean() < 0.5
    assert u.keep.min() < 0.9


def test_size_stability_clear_vs_noise() -> None:
    ex, pairs, group = _population(64, gap=1.0, noise=0.05)
    t = size_stability(
        ex, pairs, 6, group, sizes=[8, 32], alphas=ALPHAS, metric="convexity_gap",
        n_basins=2, delta="median", repeats=4,
    )  # fmt: skip
    assert t["size"].tolist() == [8, 32]
    np.testing.assert_allclose(t["ari_mean"], 1.0)
    np.testing.assert_allclose(t["identical"], 1.0)


def test_noise_note_fires_on_instability_not_on_a_large_delta() -> None:
    """The basins are called noise only when the bootstrap keeps them < half the time."""
    from modeconn.analyses.uncertainty import instability_notes
    from modeconn.results import _notes
    from modeconn.stats.basins import find_basins
    from modeconn.stats.uncertainty import sample_uncertainty

    rng = np.random.default_rng(0)
    n, alphas = 6, np.linspace(0, 1, 5)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    group = np.array([0, 0, 0, 1, 1, 1])
    bump = np.sin(np.pi * alphas)[:, None]  # (A, 1)

    def population(between: float, within: float) -> np.ndarray:
        return np.stack(
            [
                0.5
                + bump
                * (between if group[i] != group[j] else within)
                * rng.gamma(2.0, 0.5, size=(1, 128))
                for i, j in pairs
            ]
        )  # (P, A, 128)

    # clear basins with tiny barriers: at δ = 1 every similarity is above 0.9999, yet the
    # basins are the groups and the bootstrap keeps them: no note either way
    clear = population(0.01, 0.002)
    from modeconn.stats.uncertainty import distance_samples

    d = distance_samples(clear, np.full((1, 128), 1 / 128), pairs, n, alphas=alphas,
                         metric="convexity_gap")[0]  # fmt: skip
    fit = find_basins(d, n_basins=2, delta=1.0)
    assert not any("noise" in note or "precision" in note for note in _notes(fit, d, n))
    u = sample_uncertainty(
        clear, pairs, list("abcdef"), fit.labels, alphas=alphas,
        metric="convexity_gap", n_basins=2, delta=1.0, samples=30,
    )  # fmt: skip
    assert instability_notes(u, examples=128, split="s") == []

    # no structure at all: every pair alike up to the sample's noise; the note fires
    flat = population(0.01, 0.01)
    d = distance_samples(flat, np.full((1, 128), 1 / 128), pairs, n, alphas=alphas,
                         metric="convexity_gap")[0]  # fmt: skip
    fit = find_basins(d, n_basins=2, delta="median")
    u = sample_uncertainty(
        flat, pairs, list("abcdef"), fit.labels, alphas=alphas,
        metric="convexity_gap", n_basins=2, delta="median", samples=30,
    )  # fmt: skip
    notes = instability_notes(u, examples=128, split="s")
    assert len(notes) == 1 and "noise" in notes[0]
