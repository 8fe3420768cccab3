"""Tests for modeconn.measures.barriers: hand-computed cases, references, registry properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tolerances import ATOL, RTOL

from modeconn.errors import ConfigError, DataError
from modeconn.measures import barriers
from modeconn.measures.barriers import (
    METRICS,
    auc,
    barrier_height,
    convexity_gap,
    curve_distance,
    distance_matrix,
    euclidean_distance,
    euclidean_distance_parts,
)

# --------------------------------------------------------------------------- reference


def brute_force_convexity_gap(losses, alphas=None) -> float:
    """O(n³) definition: the largest barrier height over every sub-segment [i, j].

    For each pair i < j, the chord joins (αᵢ, Lᵢ) and (αⱼ, Lⱼ); the barrier of that
    sub-segment is the largest L_k − chord(α_k) over i < k < j, clipped at 0.
    """
    y = np.asarray(losses, dtype=np.float64)
    n = y.size
    x = np.linspace(0.0, 1.0, n) if alphas is None else np.asarray(alphas, dtype=np.float64)
    best = 0.0
    for i in range(n):
        for j in range(i + 2, n):
            for k in range(i + 1, j):
                chord = y[i] + (y[j] - y[i]) * (x[k] - x[i]) / (x[j] - x[i])
                best = max(best, float(y[k] - chord))
    return best


def _close(a: float, b: float, scale: float = 1.0) -> bool:
    return bool(np.isclose(a, b, rtol=RTOL, atol=ATOL * max(1.0, scale)))


def _random_curve(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A random curve of one of several shapes, on a uniform or non-uniform grid."""
    kind = rng.integers(4)
    if kind == 0:  # white noise
        y = rng.normal(size=n)
    elif kind == 1:  # random walk: long-range bumps
        y = np.cumsum(rng.normal(size=n))
    elif kind == 2:  # small integers: many ties and exactly collinear triples
        y = rng.integers(-2, 3, size=n).astype(np.float64)
    else:  # a smooth bowl with noise, like a real loss curve
        t = np.linspace(0, 1, n)
        y = 4 * (t - 0.5) ** 2 + 0.3 * rng.normal(size=n)
    if rng.random() < 0.5:
        return y, None
    x = np.cumsum(rng.uniform(0.01, 1.0, size=n))
    return y, x


def _reverse(y: np.ndarray, x: np.ndarray | None):
    """The same path walked from the other end: losses reversed, α reflected."""
    if x is None:
        return y[::-1].copy(), None
    return y[::-1].copy(), (x[0] + x[-1] - x[::-1])


# --------------------------------------------------------------------------- hand-computed


def test_barrier_height_hand_computed():
    # [1, 3, 1]: chord between endpoints is 1 everywhere; 3 − 1 = 2.
    assert barrier_height([1.0, 3.0, 1.0]) == pytest.approx(2.0, abs=ATOL)
    # Convex bowl [0, −1, 0]: L − chord = [0, −1, 0]; max is 0 → 0 (clipped).
    assert barrier_height([0.0, -1.0, 0.0]) == 0.0
    # A tilted line [0, 1, 2] lies on its own chord → 0.
    assert barrier_height([0.0, 1.0, 2.0]) == pytest.approx(0.0, abs=ATOL)
    # Two points only: nothing between the endpoints → 0.
    assert barrier_height([5.0, 1.0]) == 0.0
    # Uneven endpoints [0, 3, 2]: chord at α = .5 is (0 + 2)/2 = 1; 3 − 1 = 2.
    assert barrier_height([0.0, 3.0, 2.0]) == pytest.approx(2.0, abs=ATOL)


def test_two_bumps_barrier_equals_gap():
    # [0, 2, 0, 2, 0]: end-to-end chord is 0, so BH = 2. The lower hull is also the line
    # 0 (through the three zeros), so every sub-segment barrier is at most 2: CG = 2.
    y = [0.0, 2.0, 0.0, 2.0, 0.0]
    assert barrier_height(y) == pytest.approx(2.0, abs=ATOL)
    assert convexity_gap(y) == pytest.approx(2.0, abs=ATOL)


def test_convexity_gap_exceeds_barrier_height():
    # [10, 0, 2, 0, 10] at α = 0, .25, .5, .75, 1: the end-to-end chord is 10, far above
    # every interior point, so BH = max(0, max(L − 10)) = 0. The sub-segment [1, 3] has
    # chord 0 between L₁ = 0 and L₃ = 0, and L₂ = 2 rises 2 above it: CG = 2 > BH.
    y = [10.0, 0.0, 2.0, 0.0, 10.0]
    assert barrier_height(y) == 0.0
    assert convexity_gap(y) == pytest.approx(2.0, abs=ATOL)


def test_convexity_gap_hand_computed():
    # Convex bowl [4, 1, 0, 1, 4]: the curve is its own lower hull → 0.
    assert convexity_gap([4.0, 1.0, 0.0, 1.0, 4.0]) == pytest.approx(0.0, abs=ATOL)
    # [0, 3, 1, 1, 0]: hull is the line 0 between the endpoints; gaps [0, 3, 1, 1, 0] → 3.
    assert convexity_gap([0.0, 3.0, 1.0, 1.0, 0.0]) == pytest.approx(3.0, abs=ATOL)
    # [0, 1, 0, 3, 6] at α = 0, .25, .5, .75, 1: hull vertices (0,0), (.5,0), (1,6)
    # (point (.75,3) lies exactly on the segment (.5,0)–(1,6): 0 + 6·.5 = 3, collinear).
    # Gaps: at α = .25, 1 − 0 = 1; at α = .75, 3 − 3 = 0 → CG = 1.
    # BH: chord 6α gives [0, 1.5, 3, 4.5, 6]; L − chord = [0, −.5, −3, −1.5, 0] → 0.
    y = [0.0, 1.0, 0.0, 3.0, 6.0]
    assert convexity_gap(y) == pytest.approx(1.0, abs=ATOL)
    assert barrier_height(y) == 0.0
    # Two points: no sub-segment with an interior point → 0.
    assert convexity_gap([3.0, -1.0]) == 0.0


def test_non_uniform_alphas():
    # losses [0, 1, 3] at α = [0, .25, 1]: chord at .25 is 0 + 3·.25 = .75; 1 − .75 = .25.
    y, x = [0.0, 1.0, 3.0], [0.0, 0.25, 1.0]
    assert barrier_height(y, x) == pytest.approx(0.25, abs=ATOL)
    assert convexity_gap(y, x) == pytest.approx(0.25, abs=ATOL)
    # On the uniform grid the chord at .5 is 1.5 > 1, so the same losses have no barrier.
    assert barrier_height(y) == 0.0
    assert convexity_gap(y) == 0.0
    # Only relative positions matter, not offset or scale: α = 2 + 2·[0, .25, 1].
    assert barrier_height(y, [2.0, 2.5, 4.0]) == pytest.approx(0.25, abs=ATOL)


def test_auc_hand_computed():
    # [1, 3, 1] − min → [0, 2, 0]; step .5: .5·(0+2)/2 + .5·(2+0)/2 = .5 + .5 = 1.
    assert auc([1.0, 3.0, 1.0]) == pytest.approx(1.0, abs=ATOL)
    # The step is scaled by the parameter distance: 4 · 1 = 4.
    assert auc([1.0, 3.0, 1.0], distance=4.0) == pytest.approx(4.0, abs=ATOL)
    # Non-uniform: [3, 1, 2] at α = [0, .2, 1] − min → [2, 0, 1];
    # .2·(2+0)/2 + .8·(0+1)/2 = .2 + .4 = .6 (the uniform grid would give .5 + .25 = .75).
    assert auc([3.0, 1.0, 2.0], [0.0, 0.2, 1.0]) == pytest.approx(0.6, abs=ATOL)
    assert auc([3.0, 1.0, 2.0]) == pytest.approx(0.75, abs=ATOL)
    # x = (α − α₀)·distance: α = [−1, 1], distance 2 → x = [0, 4]; [0, 1]: 4·(0+1)/2 = 2.
    assert auc([0.0, 1.0], [-1.0, 1.0], distance=2.0) == pytest.approx(2.0, abs=ATOL)
    # A constant curve has no area; distance 0 (identical endpoints) neither.
    assert auc([2.0, 2.0, 2.0]) == 0.0
    assert auc([1.0, 3.0, 1.0], distance=0.0) == 0.0


def test_auc_in_the_papers_form_hand_computed():
    # Juneja et al. 2023: subtract the minimum, trapezoids with step ‖θA − θB‖/(n − 1).
    # 11 points (α = 0, .1, …, 1), ‖θA − θB‖ = 5 → step 0.5.
    losses = [0.4, 0.5, 0.7, 1.0, 1.2, 1.3, 1.1, 0.8, 0.6, 0.5, 0.3]
    # − min (0.3): [.1, .2, .4, .7, .9, 1.0, .8, .5, .3, .2, 0]
    # trapezoid sum = (.1 + 0)/2 + (.2 + .4 + .7 + .9 + 1.0 + .8 + .5 + .3 + .2) = .05 + 5.0
    # area = 0.5 · 5.05 = 2.525 (over α alone: 0.1 · 5.05 = 0.505)
    assert auc(losses, distance=5.0) == pytest.approx(2.525, abs=ATOL)
    assert auc(losses) == pytest.approx(0.505, abs=ATOL)


def test_auc_is_linear_in_distance():
    rng = np.random.default_rng(0)
    y = rng.normal(size=11)
    assert auc(y, distance=3.7) == pytest.approx(3.7 * auc(y), rel=RTOL)


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("n", [2, 3, 4, 5, 11, 50])
def test_convexity_gap_matches_brute_force(n):
    rng = np.random.default_rng(n)
    n_curves = 40 if n == 50 else 200
    for _ in range(n_curves):
        y, x = _random_curve(rng, n)
        ref = brute_force_convexity_gap(y, x)
        got = convexity_gap(y, x)
        assert _close(got, ref, float(np.abs(y).max())), (y, x, got, ref)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=2, max_value=25).flatmap(
        lambda n: st.tuples(
            st.lists(
                st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
                min_size=n,
                max_size=n,
            ),
            st.lists(st.floats(1e-3, 10.0), min_size=n, max_size=n),
        )
    )
)
def test_convexity_gap_brute_force_hypothesis(data):
    losses, steps = data
    y = np.array(losses)
    x = np.cumsum(steps)
    ref = brute_force_convexity_gap(y, x)
    assert _close(convexity_gap(y, x), ref, float(np.abs(y).max()))


def test_convexity_gap_bounds_barrier_height():
    # [0, n−1] is one of the sub-segments, so CG ≥ BH on every curve.
    rng = np.random.default_rng(1)
    for n in (2, 3, 11, 30):
        for _ in range(50):
            y, x = _random_curve(rng, n)
            assert convexity_gap(y, x) >= barrier_height(y, x) - ATOL


@pytest.mark.parametrize("fn", [barrier_height, convexity_gap])
def test_invariant_to_adding_a_line(fn):
    # Adding a + b·α shifts every chord by the same line: barriers do not change.
    rng = np.random.default_rng(2)
    for _ in range(50):
        y, x = _random_curve(rng, 11)
        grid = np.linspace(0, 1, 11) if x is None else x
        tilted = y + 3.0 - 2.5 * grid
        assert _close(fn(tilted, x), fn(y, x), 10.0)


# --------------------------------------------------------------------------- registry

_RNG = np.random.default_rng(12345)
# A bank of curves, non-convex and of both signs, on uniform and non-uniform grids.
CURVES = [_random_curve(_RNG, n) for n in (2, 3, 5, 11, 11, 11, 30) for _ in range(6)]
CURVES += [(np.array([10.0, 0.0, 2.0, 0.0, 10.0]), None), (np.array([0.0, 3.0, 1.0]), None)]
# Convex curves: lines, parabolas opening up, an exponential, V shapes with the kink on and
# off the grid, each sampled on a uniform and a non-uniform grid.
_GRIDS = [np.linspace(0.0, 1.0, 11), np.array([0.0, 0.05, 0.1, 0.3, 0.31, 0.5, 0.8, 1.0])]
CONVEX = [
    (f(g), g)
    for g in _GRIDS
    for f in (
        lambda t: 2.0 - 3.0 * t,
        lambda t: 0.5 + 0.0 * t,
        lambda t: 4.0 * (t - 0.3) ** 2 - 1.0,
        lambda t: 7.0 * t**2,
        lambda t: np.exp(3.0 * t),
        lambda t: np.abs(t - 0.5),
        lambda t: 2.0 * np.abs(t - 0.42) + t,
    )
]


def test_registry_is_consistent():
    assert set(METRICS) == {"barrier_height", "convexity_gap", "auc"}
    for name, m in METRICS.items():
        assert m.name == name
        assert m.description
        assert isinstance(m(np.array([1.0, 3.0, 1.0])), float)
        assert curve_distance([1.0, 3.0, 1.0], None, name) == m.fn([1.0, 3.0, 1.0], None)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_symmetric_property(name):
    m = METRICS[name]
    same = [_close(m(y, x), m(*_reverse(y, x)), float(np.abs(y).max())) for y, x in CURVES]
    if m.symmetric:
        assert all(same)
    else:  # declared not symmetric: a counterexample must exist
        assert not all(same)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_non_negative_property(name):
    m = METRICS[name]
    # Shift half the curves below zero: losses may be negative (e.g. a log-likelihood).
    values = [m(y - 5.0 * (i % 2), x) for i, (y, x) in enumerate(CURVES)]
    if m.non_negative:
        assert min(values) >= 0.0
    else:
        assert min(values) < 0.0


@pytest.mark.parametrize("name", sorted(METRICS))
def test_zero_on_convex_property(name):
    m = METRICS[name]
    zero = [_close(m(y, x), 0.0, float(np.abs(y).max())) for y, x in CONVEX]
    if m.zero_on_convex:
        assert all(zero)
    else:  # e.g. AUC: a tilted line has positive area above its minimum
        assert not all(zero)


def test_auc_counterexample_on_convex():
    # The line [2, 1, 0] − min = [2, 1, 0]: .5·(2+1)/2 + .5·(1+0)/2 = .75 + .25 = 1 ≠ 0.
    assert auc([2.0, 1.0, 0.0]) == pytest.approx(1.0, abs=ATOL)
    assert not METRICS["auc"].zero_on_convex


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown barrier metric 'cg'.*convexity_gap"):
        curve_distance([1.0, 2.0], None, "cg")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize(
    ("losses", "alphas", "error", "match"),
    [
        ([0.0, 1.0, 2.0, np.nan], None, DataError, r"finite; got nan at index 3"),
        ([0.0, np.inf], None, DataError, r"got inf at index 1"),
        ([[0.0, 1.0], [2.0, 3.0]], None, DataError, r"1-D.*\(2, 2\)"),
        ([1.0], None, DataError, r"at least 2 points.*; got 1"),
        ([], None, DataError, r"at least 2 points.*; got 0"),
        (["a", "b"], None, DataError, r"real numbers"),
        ([0.0, 1.0, 0.0], [0.0, 0.5, 0.5], ConfigError, r"strictly increasing"),
        ([0.0, 1.0, 0.0], [1.0, 0.5, 0.0], ConfigError, r"strictly increasing"),
        ([0.0, 1.0, 0.0], [0.0, 1.0], ConfigError, r"same length as losses \(3\)"),
        ([0.0, 1.0], [0.0, np.nan], ConfigError, r"alphas must be finite"),
    ],
)
def test_bad_curves_raise(name, losses, alphas, error, match):
    with pytest.raises(error, match=match):
        curve_distance(losses, alphas, name)


@pytest.mark.parametrize("distance", [-1.0, np.inf, np.nan])
def test_auc_bad_distance(distance):
    with pytest.raises(ConfigError, match="distance must be a finite number"):
        auc([0.0, 1.0], distance=distance)


# --------------------------------------------------------------------------- distances


def test_euclidean_distance_matches_numpy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=1000), rng.normal(size=1000)
    assert euclidean_distance(a, b) == pytest.approx(float(np.linalg.norm(a - b)), rel=RTOL)
    # 3 − 4 − 5 triangle.
    assert euclidean_distance(np.array([0.0, 3.0]), np.array([4.0, 0.0])) == 5.0
    assert euclidean_distance(a, a) == 0.0


def test_euclidean_distance_accumulates_in_float64():
    # 10⁶ float32 entries: the exact answer uses each value converted to float64.
    a = np.full(10**6, 1.0001, dtype=np.float32)
    b = np.zeros(10**6, dtype=np.float32)
    exact = np.sqrt(10**6 * float(np.float64(a[0])) ** 2)
    assert euclidean_distance(a, b) == pytest.approx(exact, rel=1e-12)


def test_euclidean_distance_chunking(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(7, 13)), rng.normal(size=(7, 13))
    whole = euclidean_distance(a, b)
    monkeypatch.setattr(barriers, "_CHUNK", 5)  # 91 entries in 19 chunks, the last partial
    assert euclidean_distance(a, b) == pytest.approx(whole, rel=RTOL)


def test_euclidean_distance_parts_equals_concatenation():
    rng = np.random.default_rng(5)
    shapes = [(3, 4), (4,), (2, 2, 2), (1,)]
    a = [rng.normal(size=s).astype(np.float32) for s in shapes]
    b = [rng.normal(size=s).astype(np.float32) for s in shapes]
    flat_a = np.concatenate([p.ravel() for p in a]).astype(np.float64)
    flat_b = np.concatenate([p.ravel() for p in b]).astype(np.float64)
    expected = float(np.linalg.norm(flat_a - flat_b))
    assert euclidean_distance_parts(a, b) == pytest.approx(expected, rel=RTOL)
    assert euclidean_distance_parts([], []) == 0.0


def test_euclidean_distance_errors():
    with pytest.raises(DataError, match=r"part 1 \('w'\) has shape \(3,\).*\(2,\)"):
        euclidean_distance_parts(
            [np.zeros(2), np.zeros(3)], [np.zeros(2), np.zeros(2)], names=["b", "w"]
        )
    with pytest.raises(DataError, match="same number of parameter arrays; got 2 and 1"):
        euclidean_distance_parts([np.zeros(2), np.zeros(2)], [np.zeros(2)])
    with pytest.raises(DataError, match="part 0 gives a non-finite"):
        euclidean_distance(np.array([np.nan, 1.0]), np.zeros(2))
    with pytest.raises(DataError, match="shape"):
        euclidean_distance(np.zeros(3), np.zeros(4))
    with pytest.raises(ConfigError, match="names must label every part"):
        euclidean_distance_parts([np.zeros(1)], [np.zeros(1)], names=["a", "b"])


# --------------------------------------------------------------------------- matrix


def test_distance_matrix_hand_computed():
    # Pair (0, 1): [1, 3, 1] → BH 2; pair (0, 2): [0, 0, 0] → 0; pair (1, 2): [0, 1, 0] → 1.
    curves = {(0, 1): [1.0, 3.0, 1.0], (0, 2): [0.0, 0.0, 0.0], (1, 2): [0.0, 1.0, 0.0]}
    d = distance_matrix(curves, 3, "barrier_height")
    expected = np.array([[0.0, 2.0, 0.0], [2.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(d, expected, atol=ATOL)
    assert d.dtype == np.float64
    np.testing.assert_array_equal(d, d.T)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_distance_matrix_random(metric):
    rng = np.random.default_rng(6)
    n, alphas = 5, np.array([0.0, 0.1, 0.4, 0.5, 0.9, 1.0])
    curves = {(i, j): rng.normal(size=6) for i in range(n) for j in range(i + 1, n)}
    d = distance_matrix(curves, n, metric, alphas)
    assert d.shape == (n, n)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    np.testing.assert_array_equal(d, d.T)
    for (i, j), y in curves.items():
        assert d[i, j] == curve_distance(y, alphas, metric)


def test_distance_matrix_errors():
    curves = {(0, 1): [1.0, 2.0], (1, 2): [1.0, 2.0]}
    with pytest.raises(DataError, match=r"no loss curve for pair \(0, 2\)"):
        distance_matrix(curves, 3, "convexity_gap")
    with pytest.raises(DataError, match=r"got \(1, 0\)"):
        distance_matrix({(1, 0): [1.0, 2.0]}, 2, "convexity_gap")
    with pytest.raises(DataError, match=r"got \(0, 3\)"):
        distance_matrix({(0, 1): [1.0, 2.0], (0, 3): [1.0, 2.0]}, 2, "convexity_gap")
    with pytest.raises(DataError, match=r"pair \(0, 1\): losses must be finite"):
        distance_matrix({(0, 1): [1.0, np.nan]}, 2, "convexity_gap")
    with pytest.raises(ConfigError, match="unknown barrier metric"):
        distance_matrix({(0, 1): [1.0, 2.0]}, 2, "nope")
    with pytest.raises(ConfigError, match="integer ≥ 1"):
        distance_matrix({}, 0, "auc")
    np.testing.assert_array_equal(distance_matrix({}, 1, "auc"), np.zeros((1, 1)))
