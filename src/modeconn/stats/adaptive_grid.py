"""Adaptive α grids: the convexity gap of a path from a subset of its α lattice.

The convexity gap (Juneja et al. 2023; :func:`modeconn.measures.barriers.convexity_gap`)
is the largest height of the loss curve above its lower convex hull on the study's α
grid — the *lattice*, e.g. the 21 points α = 0, 0.05, …, 1. Most of a curve is flat or
gently convex and needs few points; only where it bends — a barrier's peak, the shoulders
where it leaves the hull — does the gap depend on the fine lattice. So we evaluate a
coarse subset first (by default the 9 lattice points three bisections reach: α = 0, 0.1,
0.25, 0.35, 0.5, 0.6, 0.75, 0.85, 1 on a 21-point lattice; with two bisections, α = 0, ¼,
½, ¾, 1, a bump of width σ ≈ 0.12 sitting on a steep bowl can hide between coarse points
— 8 of 3,000 random curves missed the tolerance, up to 20×; with three, none did) and
bisect only the intervals whose interpolation error may exceed the tolerance
(:func:`to_refine`).

**Why interpolation error bounds the gap's error.** Let E bound |f(α) − ℓ(α)| at every
lattice point not evaluated, ℓ being the chord between its evaluated neighbours. Moving
any set of curve values by at most E moves the lower convex hull by at most E at every α
(the hull is a pointwise infimum of convex combinations of the values), so the gap of the
full lattice is within 2E of the gap of the evaluated points interpolated, which is the
gap on the evaluated subset itself. We refine an interval (i, j) until its estimated E is
at most ``tolerance / 2`` — except where the curve does not depart from its hull: an
interval whose two ends are hull vertices, that bends upwards on both sides (its hidden
points lie below the chord) and that no bridging hull edge rests on (an edge over a
barrier) cannot raise the gap, so it is settled at once. Refinement is thus spent where
the curve leaves its lower convex hull.

**How E is estimated.** For a quadratic c·α², a triple of evaluated points h < i < j with
spacings w₁ = α_i − α_h, w₂ = α_j − α_i deviates from its chord at i by b = |c|·w₁·w₂, and
on the interval (i, j) the chord misses the curve by at most |c|·w₂²/4 = b·w₂/(4w₁). We
take the larger of the two neighbouring triples' estimates, times a safety factor of 2
(``safety``) for curves that are not quadratic. An interval needs both triples to be
settled, so the first and last intervals (one triple only) are always bisected down to
one lattice step: an inflection next to an end (a barrier's flank starting at α = 0)
fools a one-sided estimate. The assumption this rests on, stated plainly:
the curve has no feature narrower than the coarse spacing that both neighbouring triples
miss. Barrier curves of fine-tuned models (a bump of width ~0.3–1 in α) satisfy it; a
spike between two coarse points does not, and the full grid (``paths.tolerance`` unset)
remains the reference. ``tests/test_adaptive_grid.py`` checks the bound by property tests
over random curves (a convex bowl plus Gaussian bumps of width ≥ the lattice's coarse
spacing) whose full-lattice gap is known.

Every point evaluated is a lattice point, stored like any full-grid point, so a rerun
reuses it and a later full-grid study evaluates only the lattice points still missing.

Pure numpy: no torch, no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from modeconn.errors import ConfigError
from modeconn.measures.barriers import convexity_gap

__all__ = ["adaptive_gap", "coarse_indices", "to_refine"]


def _check(points: int, tolerance: float) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or points < 3:
        raise ConfigError(f"an α lattice needs an integer number of points ≥ 3; got {points!r}")
    if not (isinstance(tolerance, int | float) and np.isfinite(tolerance) and tolerance > 0):
        raise ConfigError(f"paths.tolerance must be a number > 0 (a loss); got {tolerance!r}")


def coarse_indices(points: int, levels: int = 3) -> tuple[int, ...]:
    """Lattice indices reached by ``levels`` bisections of [0, points − 1].

    >>> coarse_indices(21, levels=2)
    (0, 5, 10, 15, 20)
    >>> coarse_indices(21)
    (0, 2, 5, 7, 10, 12, 15, 17, 20)
    """
    found = {0, points - 1}
    intervals = [(0, points - 1)]
    for _ in range(levels):
        nxt = []
        for i, j in intervals:
            if j - i >= 2:
                mid = (i + j) // 2
                found.add(mid)
                nxt += [(i, mid), (mid, j)]
        intervals = nxt
    return tuple(sorted(found))


def to_refine(
    alphas: Sequence[float],
    known: Mapping[int, float],
    tolerance: float,
    *,
    safety: float = 2.0,
) -> list[int]:
    """Lattice indices to evaluate next: the midpoints of intervals not yet settled.

    ``alphas`` is the whole lattice; ``known`` maps evaluated lattice indices (0 and the
    last among them) to their losses. An interval (i, j) of consecutive evaluated indices
    with a lattice point inside is settled when its estimated interpolation error (module
    docstring) is at most ``tolerance / 2``. Returns [] when every interval is settled.

    >>> a = [k / 20 for k in range(21)]
    >>> flat = {k: 1.0 for k in (0, 5, 10, 15, 20)}
    >>> to_refine(a, flat, 0.01)  # flat inside; the end intervals are always bisected
    [2, 17]
    >>> bump = {**flat, 10: 2.0}
    >>> to_refine(a, bump, 0.01)  # and both intervals beside the bump
    [2, 7, 12, 17]
    """
    x = np.asarray(alphas, dtype=np.float64)
    idx = sorted(int(k) for k in known)
    if not idx or idx[0] != 0 or idx[-1] != len(x) - 1:
        raise ConfigError("an adaptive grid must know both ends of the lattice (α = 0 and 1)")
    y = np.array([known[k] for k in idx], dtype=np.float64)
    xs = x[idx]
    hull = _lower_hull_vertices(xs, y)  # positions into idx
    on_hull = np.zeros(len(idx), dtype=bool)
    on_hull[hull] = True
    # ends of hull edges that bridge over evaluated points above the hull (a barrier)
    bridge: set[int] = set()
    for u, v in itertools.pairwise(hull):
        if v - u > 1:
            bridge.update((u, v))
    out = []
    for p in range(len(idx) - 1):
        i, j = idx[p], idx[p + 1]
        if j - i < 2:
            continue  # no lattice point inside
        w = xs[p + 1] - xs[p]
        estimates, bends = [], []
        for q in (p, p + 1):  # the triples centred on this interval's two ends
            if 0 < q < len(idx) - 1:
                w1, w2 = xs[q] - xs[q - 1], xs[q + 1] - xs[q]
                chord = y[q - 1] + (y[q + 1] - y[q - 1]) * w1 / (w1 + w2)
                bends.append(y[q] - chord)  # ±|c|·w1·w2 for a quadratic; < 0 convex
                estimates.append(abs(bends[-1]) * w * w / (4.0 * w1 * w2))
        if len(estimates) == 2 and safety * max(estimates) <= tolerance / 2.0:
            continue  # the chord is within tolerance of every hidden point
        convex = len(bends) == 2 and max(bends) <= 0.0  # convex on both sides
        if convex and on_hull[p] and on_hull[p + 1] and not ({p, p + 1} & bridge):
            continue  # on the hull and bending up: hidden points lie below the chord,
            # lowering a hull that no barrier's edge rests on
        out.append((i + j) // 2)
    return out


def _lower_hull_vertices(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Positions of the lower convex hull's vertices (Andrew's monotone chain, x sorted)."""
    hull: list[int] = []
    for k in range(len(x)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (x[b] - x[a]) * (y[k] - y[a]) - (y[b] - y[a]) * (x[k] - x[a])
            if cross <= 0:  # b is on or above the segment a–k
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


def adaptive_gap(
    evaluate: Callable[[int], float],
    alphas: Sequence[float],
    tolerance: float,
    *,
    known: Mapping[int, float] | None = None,
    levels: int = 3,
    safety: float = 2.0,
) -> tuple[float, dict[int, float]]:
    """The convexity gap of a curve on lattice ``alphas`` to ``tolerance``, evaluating few points.

    ``evaluate(k)`` returns the loss at lattice index k; ``known`` holds indices already
    evaluated (the endpoints, stored points of an earlier run), which are never evaluated
    again. Returns the gap on the evaluated subset and every loss used, by index.

    >>> a = [k / 20 for k in range(21)]
    >>> f = lambda k: 0.5 * (a[k] - 0.5) ** 2 + 0.05 * np.exp(-((a[k] - 0.5) / 0.3) ** 2 / 2)
    >>> gap, used = adaptive_gap(f, a, 0.01)
    >>> abs(gap - convexity_gap([f(k) for k in range(21)], a)) <= 0.01, len(used)
    (True, 12)
    """
    n = len(alphas)
    _check(n, tolerance)
    values: dict[int, float] = dict(known or {})
    todo = [k for k in coarse_indices(n, levels) if k not in values]
    while todo:
        for k in todo:
            values[k] = float(evaluate(k))
        todo = [k for k in to_refine(alphas, values, tolerance, safety=safety) if k not in values]
    idx = sorted(values)
    x = np.asarray(alphas, dtype=np.float64)[idx]
    return convexity_gap([values[k] for k in idx], x), values
