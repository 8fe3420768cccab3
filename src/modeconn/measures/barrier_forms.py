"""The midpoint barrier from curvature: an exact form and two local approximations.

With Δ = θB − θA and f(s) = L(θA + sΔ) (so f(0) = L(θA), f(1) = L(θB),
f'(s) = ∇L(θA + sΔ)ᵀΔ and f''(s) = ΔᵀH(θA + sΔ)Δ), the barrier at the midpoint is

    B = f(½) − ½(f(0) + f(1)).

Singh et al. (2024, "Landscaping Linear Mode Connectivity") relate it to curvature along
the path; docs/method.md derives the three forms computed here and their limits:

* :func:`exact_form` — B = −½ ∫₀¹ min(s, 1 − s) f''(s) ds, exact for any C² loss; computed
  by the composite trapezoid rule on a uniform grid containing s = ½ (where the kernel has
  its kink), error ≤ h²/24 · max|g''| with g(s) = min(s, 1 − s) f''(s)
  (:func:`exact_form_error`).
* :func:`midpoint_form` — −⅛ f''(½): exact when f is a cubic; a barrier means negative
  curvature along Δ at the midpoint (a ridge crossed).
* :func:`endpoint_form` — ¼(f'(0) − f'(1)) + (1/16)(f''(0) + f''(1)), i.e.
  ¼(∇L(θA) − ∇L(θB))ᵀΔ + (1/16)Δᵀ(H(θA) + H(θB))Δ: quantities at the two models alone;
  also exact for a cubic.

A check of the curvature itself: ∫₀¹ f''(s) ds = f'(1) − f'(0) for a C² loss
(:func:`slope_change`, :func:`slope_change_error`). Where the loss has kinks along the
path (ReLU, max-pool) f'' has a singular part that a Hessian-vector product does not
see (ReLU'' = 0), and the integral of the HVP values falls short of the change of slope
by that part — the *slope gap* (f'(1) − f'(0)) − ∫f''_HVP.

Pure numpy: floats and arrays in, Python floats out; :mod:`modeconn.measures.curvature`
computes the derivatives.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from modeconn.errors import DataError

__all__ = [
    "FORMS",
    "double_well",
    "endpoint_form",
    "exact_form",
    "exact_form_error",
    "kernel",
    "measured_barrier",
    "midpoint_form",
    "slope_change",
    "slope_change_error",
    "uniform_grid",
]

FORMS = ("exact", "midpoint", "endpoint")


def _finite(name: str, *values: float) -> None:
    for v in values:
        if not math.isfinite(float(v)):
            raise DataError(f"{name} needs finite values; got {v}")


def measured_barrier(f0: float, f_half: float, f1: float) -> float:
    """B = f(½) − ½(f(0) + f(1)).

    >>> measured_barrier(1.0, 2.0, 0.0)
    1.5
    """
    _finite("the measured barrier", f0, f_half, f1)
    return float(f_half) - 0.5 * (float(f0) + float(f1))


def midpoint_form(f2_half: float) -> float:
    """−⅛ f''(½).

    >>> midpoint_form(-8.0)
    1.0
    """
    _finite("the midpoint form", f2_half)
    return -float(f2_half) / 8.0


def endpoint_form(f1_0: float, f1_1: float, f2_0: float, f2_1: float) -> float:
    """¼(f'(0) − f'(1)) + (1/16)(f''(0) + f''(1)): from the two endpoints alone.

    On f(s) = a·s² + b·s + c (B = −a/4): ¼(b − (2a + b)) + (1/16)(2a + 2a) = −a/2 + a/4.

    >>> endpoint_form(1.0, 3.0, 2.0, 2.0)  # a = 1, b = 1
    -0.25
    """
    _finite("the endpoint form", f1_0, f1_1, f2_0, f2_1)
    return 0.25 * (float(f1_0) - float(f1_1)) + (float(f2_0) + float(f2_1)) / 16.0


def uniform_grid(points: int) -> np.ndarray:
    """`points` equally spaced s in [0, 1]; an odd count puts a point at s = ½.

    >>> uniform_grid(5).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if isinstance(points, bool) or not isinstance(points, int | np.integer) or points < 3:
        raise DataError(f"the quadrature grid needs an odd number ≥ 3 of points; got {points!r}")
    if points % 2 == 0:
        raise DataError(
            f"the quadrature grid needs an odd number of points (so that s = ½ is on it, "
            f"where min(s, 1 − s) has its kink); got {points}"
        )
    return np.linspace(0.0, 1.0, int(points))


def kernel(s: ArrayLike) -> np.ndarray:
    """min(s, 1 − s), the Green's function of −d²/ds² on [0, 1] with zero ends, times 1."""
    x = np.asarray(s, dtype=float)
    return np.minimum(x, 1.0 - x)


def _check_grid(s: ArrayLike, f2: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(s, dtype=float), np.asarray(f2, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise DataError(f"s and f'' must be 1-D of one length; got shapes {x.shape} and {y.shape}")
    if x.size < 3 or x.size % 2 == 0:
        raise DataError(f"the quadrature grid needs an odd number ≥ 3 of points; got {x.size}")
    if not np.allclose(x, np.linspace(0.0, 1.0, x.size), rtol=0, atol=1e-12):
        raise DataError("the quadrature grid must be uniform on [0, 1] (uniform_grid(points))")
    _finite("the exact form", *y.tolist())
    return x, y


def exact_form(s: ArrayLike, f2: ArrayLike) -> float:
    """−½ ∫₀¹ min(s, 1 − s) f''(s) ds by the composite trapezoid rule on the grid `s`.

    The integrand g = min(s, 1 − s)·f'' vanishes at both ends and is smooth on each half
    (the kink is at ½, a grid point), so the rule's error is O(h²) (:func:`exact_form_error`).
    On a quadratic f (constant f'' = 2a) the rule is exact: −½·2a·¼ = −a/4.

    >>> exact_form([0.0, 0.5, 1.0], [2.0, 2.0, 2.0])  # a = 1
    -0.25
    """
    x, y = _check_grid(s, f2)
    g = kernel(x) * y
    return -0.5 * float(np.trapezoid(g, x))


def exact_form_error(s: ArrayLike, f2: ArrayLike) -> float:
    """A bound on :func:`exact_form`'s quadrature error from the grid itself.

    On each half [0, ½] and [½, 1] (length ½) the trapezoid error is (½)·h²/12·|g''(ξ)|; the
    two halves and the factor ½ give |error| ≤ h²/24 · max|g''|. g'' is estimated by the
    grid's second differences (g(s−h) − 2g(s) + g(s+h))/h² within each half; with fewer
    than 3 points per half it is unknown and the bound is infinite.
    """
    x, y = _check_grid(s, f2)
    h = float(x[1] - x[0])
    g = kernel(x) * y
    mid = x.size // 2
    second = []
    for half in (g[: mid + 1], g[mid:]):
        if half.size < 3:
            return math.inf
        second.append(np.abs(np.diff(half, 2)) / (h * h))
    return h * h / 24.0 * float(max(v.max() for v in second))


def slope_change(s: ArrayLike, f2: ArrayLike) -> float:
    """∫₀¹ f''(s) ds by the composite trapezoid rule on the uniform grid `s`: for a C² loss
    it is f'(1) − f'(0) (up to :func:`slope_change_error`).

    >>> slope_change([0.0, 0.5, 1.0], [2.0, 2.0, 2.0])  # f = s²: f'(1) − f'(0) = 2
    2.0
    """
    x, y = _check_grid(s, f2)
    return float(np.trapezoid(y, x))


def slope_change_error(s: ArrayLike, f2: ArrayLike) -> float:
    """An estimate of :func:`slope_change`'s quadrature error from the grid itself.

    The trapezoid rule on [0, 1] with step h errs by h²/12 · (f'')''(ξ) for some ξ; the
    fourth derivative (f'')'' is estimated by the largest second difference of the f''
    values, (f''(s−h) − 2f''(s) + f''(s+h))/h², so the estimate is h²/12 · that maximum.
    A linear f'' (a cubic f) has none: the rule is exact.

    >>> slope_change_error([0.0, 0.5, 1.0], [0.0, 1.0, 0.0])  # second difference −8
    0.16666666666666666
    """
    _, y = _check_grid(s, f2)
    return float(np.abs(np.diff(y, 2)).max()) / 12.0  # h²/12 · max|Δ²f''|/h²


def double_well(points: int = 101) -> dict[str, object]:
    """The toy landscape L(x, y) = (x² − 1)² + y² along A = (−1, 0) → B = (1, 0).

    Two minima (L = 0) and a ridge at x = 0 (L = 1) between them. With x = 2s − 1, y = 0:

        f(s)   = 16 s²(s − 1)²,  f(0) = f(1) = 0,  f(½) = 1   → measured B = 1
        f'(s)  = 32 (s² − s)(2s − 1),  f'(0) = f'(1) = 0
        f''(s) = 32 (2s − 1)² + 64 (s² − s),  f''(0) = f''(1) = 32,  f''(½) = −16
        f''''  = 384 (constant)

    so the exact form gives −½∫ min(s, 1 − s) f'' ds = 1, the midpoint form −⅛·(−16) = 2
    (off by f''''/384 = 1) and the endpoint form (1/16)(32 + 32) = 4 (off by 3): the local
    forms see the curvature of the wells, not the height of the ridge between them.
    Returns the grid ``s``, ``f``, ``f2`` and the three forms plus the measured barrier.

    >>> toy = double_well()
    >>> toy["measured"], toy["midpoint"], toy["endpoint"], round(toy["exact"], 3)
    (1.0, 2.0, 4.0, 1.0)
    """
    s = uniform_grid(points)
    f = 16.0 * s**2 * (s - 1.0) ** 2
    f1 = 32.0 * (s**2 - s) * (2.0 * s - 1.0)
    f2 = 32.0 * (2.0 * s - 1.0) ** 2 + 64.0 * (s**2 - s)
    mid = points // 2
    return {
        "s": s,
        "f": f,
        "f2": f2,
        "measured": measured_barrier(f[0], f[mid], f[-1]),
        "exact": exact_form(s, f2),
        "exact_error": exact_form_error(s, f2),
        "midpoint": midpoint_form(f2[mid]),
        "endpoint": endpoint_form(f1[0], f1[-1], f2[0], f2[-1]),
    }
