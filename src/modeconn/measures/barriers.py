"""Barrier metrics: how far a loss curve along a linear path rises above a straight line.

Two fine-tuned models θA and θB are joined by the linear path θα = α·θA + (1 − α)·θB
(Juneja et al. 2023, "Linear Connectivity Reveals Generalization Strategies", and
:mod:`modeconn.engine.paths`: α = 0 is B, α = 1 is A). The loss evaluated at a grid of α
values is a *loss curve* ``losses[0], ..., losses[n-1]``, ordered by α ascending, so
``losses[0]`` is one endpoint (B) and ``losses[-1]`` the other (A). Which
endpoint is called A does not matter: every metric below is symmetric under reversing the
curve. This module turns one curve into one number, and many curves into a distance matrix
over a population, which :mod:`modeconn.stats.basins` clusters.

Metrics
-------
**Barrier height** (Entezari et al. 2022, "The Role of Permutation Invariance in Linear Mode
Connectivity"): how far the curve rises above the chord joining its two endpoints,

    BH = max(0, maxᵢ [Lᵢ − chordᵢ]),   chordᵢ = L₀ + (L₋₁ − L₀)·(αᵢ − α₀)/(α₋₁ − α₀).

**Convexity gap** (Juneja et al. 2023, §3.1): the largest barrier height over every
sub-segment [i, j] of the grid, i.e. over every pair of grid points,

    CG = max_{i<k<j} max(0, L_k − chord_{ij}(α_k)).

A curve can be bumpy without a high end-to-end barrier (e.g. a dip in the middle between
two bumps); CG sees the bumps, BH does not. CG equals the largest vertical gap between the
curve and its *lower convex hull* H: for any pair i < j, H is convex and lies below Lᵢ and
Lⱼ, so chord_{ij} ≥ H between them and L_k − chord_{ij}(α_k) ≤ L_k − H(α_k); conversely, H
at α_k lies on a hull edge whose two ends are grid points i ≤ k ≤ j on the curve, and that
edge *is* chord_{ij}. So instead of the O(n³) search over pairs we build H with Andrew's
monotone chain (O(n), the grid is already sorted by α), interpolate it at every α_k and
take the largest gap. The paper's code hard-codes 10 grid points; this works for any n ≥ 2
and any strictly increasing α grid.

**AUC** (Juneja et al. 2023, §3.1): subtract the curve's minimum, then take the trapezoid
area, with the α step measured in parameter distance: x = (α − α₀)·‖θA − θB‖, so on the
usual grid α ∈ [0, 1] x runs over [0, ‖θA − θB‖]. With the default ``distance=1.0`` the
area is in α units. AUC is linear in ``distance``, so a matrix of α-unit AUCs times a
matrix of parameter distances (elementwise) gives the paper's parameter-distance AUC.

**Euclidean distance** between two parameter vectors, accumulated in float64. The paper's
code sums over every state-dict entry, buffers included; :func:`euclidean_distance_parts`
sums over whatever entries the caller passes, so the caller decides (and documents) which.

The registry :data:`METRICS` declares each metric's properties (symmetric, non-negative,
zero on every convex curve), and the test suite checks the declarations, in the style of
scikit-learn's ``metrics/cluster/tests/test_common.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modeconn.errors import ConfigError, DataError

__all__ = [
    "METRICS",
    "BarrierMetric",
    "auc",
    "barrier_height",
    "convexity_gap",
    "curve_distance",
    "distance_matrix",
    "euclidean_distance",
    "euclidean_distance_parts",
]

FloatArray = NDArray[np.float64]

# Elements per float64 chunk when accumulating squared differences: bounds the temporary
# memory to a few MiB however large the parameter vector is.
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- validation


def _as_curve(losses: ArrayLike, alphas: ArrayLike | None) -> tuple[FloatArray, FloatArray]:
    """Validate a loss curve and its α grid; return both as 1-D float64 arrays."""
    try:
        y = np.asarray(losses, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"losses must be a 1-D array of real numbers; could not convert it ({exc})"
        ) from exc
    if y.ndim != 1:
        raise DataError(
            f"losses must be a 1-D array (one loss per α grid point); got shape {y.shape}. "
            "Pass one curve at a time."
        )
    if y.size < 2:
        raise DataError(f"losses must hold at least 2 points (the two endpoints); got {y.size}")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"losses must be finite; got {y[i]} at index {i}. "
            "Check the evaluation at that grid point (a diverged model gives inf or nan)."
        )

    if alphas is None:
        return y, np.linspace(0.0, 1.0, y.size)
    try:
        x = np.asarray(alphas, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"alphas must be a 1-D array of real numbers; could not convert it ({exc})"
        ) from exc
    if x.ndim != 1 or x.size != y.size:
        raise ConfigError(
            f"alphas must be a 1-D array of the same length as losses ({y.size}); "
            f"got shape {x.shape}. Pass the α grid the curve was evaluated on."
        )
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        i = int(bad[0])
        raise ConfigError(f"alphas must be finite; got {x[i]} at index {i}")
    steps = np.diff(x)
    if np.any(steps <= 0):
        i = int(np.flatnonzero(steps <= 0)[0])
        raise ConfigError(
            "alphas must be strictly increasing (order the curve by α ascending); "
            f"got alphas[{i}] = {x[i]} followed by alphas[{i + 1}] = {x[i + 1]}"
        )
    return y, x


# --------------------------------------------------------------------------- metrics


def barrier_height(losses: ArrayLike, alphas: ArrayLike | None = None) -> float:
    """Entezari et al.'s barrier: how far the curve rises above its end-to-end chord.

    ``BH = max(0, maxᵢ [Lᵢ − chordᵢ])`` with the chord joining ``losses[0]`` and
    ``losses[-1]`` over the α grid (default ``linspace(0, 1, n)``).

    >>> barrier_height([1.0, 3.0, 1.0])   # chord is 1 everywhere; 3 − 1 = 2
    2.0
    >>> barrier_height([0.0, 2.0, 0.0, 2.0, 0.0])
    2.0
    >>> barrier_height([0.0, 1.0, 4.0], alphas=[0.0, 0.5, 1.0])  # convex: no barrier
    0.0
    """
    y, x = _as_curve(losses, alphas)
    t = (x - x[0]) / (x[-1] - x[0])  # (n,) position along the chord, 0 … 1
    chord = y[0] + (y[-1] - y[0]) * t
    return float(max(0.0, np.max(y - chord)))


def _lower_hull(x: FloatArray, y: FloatArray) -> list[int]:
    """Indices of the lower convex hull's vertices (Andrew's monotone chain; x sorted)."""
    hull: list[int] = []
    for k in range(x.size):
        # Pop the last vertex while it does not make a strict left (counter-clockwise) turn:
        # such a vertex lies on or above the segment from hull[-2] to point k.
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            cross = (x[a] - x[o]) * (y[k] - y[o]) - (y[a] - y[o]) * (x[k] - x[o])
            if cross > 0:
                break
            hull.pop()
        hull.append(k)
    return hull


def convexity_gap(losses: ArrayLike, alphas: ArrayLike | None = None) -> float:
    """Largest barrier height over every sub-segment of the grid (Juneja et al. 2023).

    Equal to the largest gap between the curve and its lower convex hull, which is how it
    is computed: Andrew's monotone chain builds the hull in O(n) (the grid is sorted), the
    hull is interpolated at every grid point and the largest gap is returned. Works for any
    grid size n ≥ 2 and any strictly increasing α grid; symmetric under reversing the curve.

    >>> convexity_gap([0.0, 2.0, 0.0, 2.0, 0.0])   # hull is 0; peaks rise 2 above it
    2.0
    >>> convexity_gap([0.0, 3.0, 1.0, 1.0, 0.0])   # hull is 0 too; the peak is 3
    3.0
    >>> convexity_gap([4.0, 1.0, 0.0, 1.0, 4.0])   # a convex bowl has no gap
    0.0
    """
    y, x = _as_curve(losses, alphas)
    hull = _lower_hull(x, y)
    below = np.interp(x, x[hull], y[hull])  # (n,) the hull, piecewise linear through vertices
    return float(max(0.0, np.max(y - below)))


def auc(losses: ArrayLike, alphas: ArrayLike | None = None, *, distance: float = 1.0) -> float:
    """Area under the curve above its minimum, with x in parameter distance.

    The curve's minimum is subtracted, then the trapezoid rule is applied on
    ``x = (α − α₀)·distance``; ``distance`` is ‖θA − θB‖ (default 1.0: area in α units).
    On the default grid α ∈ [0, 1], x runs over [0, distance].

    >>> auc([1.0, 3.0, 1.0])   # [0, 2, 0] with step 0.5: 0.5·(0+2)/2 + 0.5·(2+0)/2
    1.0
    >>> auc([1.0, 3.0, 1.0], distance=4.0)
    4.0
    """
    y, x = _as_curve(losses, alphas)
    d = float(distance)
    if not np.isfinite(d) or d < 0:
        raise ConfigError(
            f"distance must be a finite number ≥ 0 (the parameter distance ‖θA − θB‖); "
            f"got {distance}"
        )
    h = y - y.min()
    steps = np.diff(x) * d  # (n-1,) step lengths in parameter distance
    return float(np.sum(steps * (h[1:] + h[:-1]) / 2.0))


# --------------------------------------------------------------------------- distances


def _squared_diff_sum(a: NDArray[np.generic], b: NDArray[np.generic]) -> float:
    """Σ (a − b)² over flat arrays, in float64, chunk by chunk (bounded temporary memory)."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    total = 0.0
    for start in range(0, fa.size, _CHUNK):
        d = fa[start : start + _CHUNK].astype(np.float64) - fb[start : start + _CHUNK].astype(
            np.float64
        )
        total += float(d @ d)
    return total


def euclidean_distance(a: ArrayLike, b: ArrayLike) -> float:
    """‖a − b‖₂ between two parameter vectors of one shape, accumulated in float64.

    >>> euclidean_distance(np.array([0.0, 3.0]), np.array([4.0, 0.0]))
    5.0
    """
    return euclidean_distance_parts([a], [b])


def euclidean_distance_parts(
    a_parts: Sequence[ArrayLike],
    b_parts: Sequence[ArrayLike],
    *,
    names: Sequence[str] | None = None,
) -> float:
    """‖a − b‖₂ where a and b are given as matching lists of arrays (state-dict entries).

    Sums squared differences part by part, in float64 and in chunks, without concatenating
    the parts. Parts are matched by position; ``names`` (optional, e.g. state-dict keys)
    only label error messages. Which entries to include (weights only, or buffers too as
    the paper's code does) is the caller's choice.

    >>> euclidean_distance_parts([np.zeros(2), np.zeros((1, 1))],
    ...                          [np.array([1.0, 2.0]), np.array([[2.0]])])  # √(1+4+4)
    3.0
    """
    if len(a_parts) != len(b_parts):
        raise DataError(
            f"both models must give the same number of parameter arrays; got {len(a_parts)} "
            f"and {len(b_parts)}. Select the same state-dict entries from both."
        )
    if names is not None and len(names) != len(a_parts):
        raise ConfigError(
            f"names must label every part; got {len(names)} names for {len(a_parts)} parts"
        )
    total = 0.0
    for i, (pa, pb) in enumerate(zip(a_parts, b_parts, strict=True)):
        label = f"part {i}" if names is None else f"part {i} ({names[i]!r})"
        a, b = np.asarray(pa), np.asarray(pb)
        if a.shape != b.shape:
            raise DataError(
                f"{label} has shape {a.shape} in the first model and {b.shape} in the "
                "second; both models must share one architecture"
            )
        if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            raise DataError(f"{label} must hold real numbers; got dtypes {a.dtype} and {b.dtype}")
        sq = _squared_diff_sum(a, b)
        if not np.isfinite(sq):
            raise DataError(
                f"{label} gives a non-finite squared distance ({sq}); one of the models "
                "holds inf or nan there"
            )
        total += sq
    return float(np.sqrt(total))


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class BarrierMetric:
    """A named curve metric and the properties it declares (checked by the test suite).

    Attributes:
        name: registry key.
        fn: ``fn(losses, alphas) -> float``; ``alphas`` may be ``None`` (uniform grid).
        symmetric: invariant to reversing the curve (swapping the two endpoints).
        non_negative: never below zero.
        zero_on_convex: zero on every convex curve (a line, a parabola opening up, ...).
        description: one line for reports and ``--help``.
    """

    name: str
    fn: Callable[[ArrayLike, ArrayLike | None], float]
    symmetric: bool
    non_negative: bool
    zero_on_convex: bool
    description: str

    def __call__(self, losses: ArrayLike, alphas: ArrayLike | None = None) -> float:
        return self.fn(losses, alphas)


def _auc_alpha_units(losses: ArrayLike, alphas: ArrayLike | None = None) -> float:
    return auc(losses, alphas)


METRICS: dict[str, BarrierMetric] = {
    m.name: m
    for m in (
        BarrierMetric(
            name="barrier_height",
            fn=barrier_height,
            symmetric=True,
            non_negative=True,
            zero_on_convex=True,
            description="largest rise of the curve above its end-to-end chord (Entezari)",
        ),
        BarrierMetric(
            name="convexity_gap",
            fn=convexity_gap,
            symmetric=True,
            non_negative=True,
            zero_on_convex=True,
            description="largest barrier over every sub-segment = gap to lower convex hull",
        ),
        BarrierMetric(
            name="auc",
            fn=_auc_alpha_units,
            symmetric=True,
            non_negative=True,
            zero_on_convex=False,  # a tilted line or a bowl has positive area above its min
            description="trapezoid area above the curve's minimum, x in α units",
        ),
    )
}


def _get_metric(metric: str) -> BarrierMetric:
    try:
        return METRICS[metric]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown barrier metric {metric!r}; expected one of {sorted(METRICS)}"
        ) from None


def curve_distance(losses: ArrayLike, alphas: ArrayLike | None, metric: str) -> float:
    """Apply the registered metric ``metric`` to one curve.

    >>> curve_distance([1.0, 3.0, 1.0], None, "barrier_height")
    2.0
    """
    return _get_metric(metric)(losses, alphas)


def distance_matrix(
    curves: Mapping[tuple[int, int], ArrayLike],
    n: int,
    metric: str,
    alphas: ArrayLike | None = None,
) -> FloatArray:
    """Symmetric N×N matrix of ``metric`` over per-pair curves, zero on the diagonal.

    ``curves[(i, j)]`` (with 0 ≤ i < j < n) is the loss curve between members i and j on
    the shared grid ``alphas``. Every such pair must be present; keys outside that form
    are rejected, so a mis-keyed store cannot go unnoticed.

    >>> distance_matrix({(0, 1): [1.0, 3.0, 1.0]}, 2, "barrier_height")
    array([[0., 2.],
           [2., 0.]])
    """
    m = _get_metric(metric)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"n (the number of members) must be an integer ≥ 1; got {n!r}")
    n = int(n)
    for key in curves:
        if not isinstance(key, tuple) or len(key) != 2 or not 0 <= key[0] < key[1] < n:
            raise DataError(
                f"curve keys must be pairs (i, j) with 0 ≤ i < j < {n}; got {key!r}. "
                "Key each curve by its two member indices, smaller first."
            )
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            if (i, j) not in curves:
                raise DataError(
                    f"no loss curve for pair ({i}, {j}); every pair i < j of the {n} "
                    "members needs one. Interpolate the missing pair first."
                )
            try:
                value = m(curves[(i, j)], alphas)
            except (DataError, ConfigError) as exc:
                raise type(exc)(f"pair ({i}, {j}): {exc}") from exc
            out[i, j] = out[j, i] = value
    return out
