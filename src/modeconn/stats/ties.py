"""Ties that float noise must not break: values equal within a tolerance become equal.

With k = 2 every member that sits on its basin's centroid in the spectral embedding gets
the same basin score ‖w − c₁‖ − ‖w − c₂‖ up to the last bit or two (Juneja et al. 2023,
§3: the score is a difference of two distances). Ranks of such scores, and every bootstrap
that resamples them, would then follow rounding: a jitter of a few ulps reorders them and
moves Spearman ρ. :func:`merge_ties` replaces every group of values that lie within
``tolerance`` of their neighbours by the group's mean, so ranks see exact ties and take
average ranks (as :func:`scipy.stats.rankdata` does), and the result no longer depends on
the noise.

The tolerance is relative: ``rtol × max(1, max|x|)``, with ``rtol`` = 1e-9 by default —
seven orders of magnitude above float64 noise on values of order one, and far below any
difference that carries meaning in a basin score.

>>> m = merge_ties([0.5, 0.5 + 1e-15, 0.2, 0.5 - 2e-16])
>>> bool(m[0] == m[1] == m[3]), m.round(12).tolist()
(True, [0.5, 0.5, 0.2, 0.5])
>>> count_ties([0.5, 0.5 + 1e-15, 0.2, 0.5 - 2e-16])
3
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["DEFAULT_RTOL", "count_ties", "merge_ties", "tie_tolerance"]

DEFAULT_RTOL = 1e-9


def tie_tolerance(x: NDArray[np.float64], rtol: float = DEFAULT_RTOL) -> float:
    """The absolute distance below which two of ``x``'s values count as equal."""
    finite = x[np.isfinite(x)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    return rtol * max(1.0, scale)


def merge_ties(x: ArrayLike, *, rtol: float = DEFAULT_RTOL) -> NDArray[np.float64]:
    """``x`` with each run of values closer than the tolerance replaced by its mean.

    Groups are chains in sorted order (single linkage): a, b, c with b − a and c − b both
    within the tolerance form one group. NaN and infinite values are left as they are.
    """
    v = np.asarray(x, dtype=np.float64).copy()
    if v.ndim != 1:
        raise ValueError(f"merge_ties takes a 1-D array; got shape {v.shape}")
    finite = np.flatnonzero(np.isfinite(v))
    if finite.size < 2:
        return v
    tol = tie_tolerance(v, rtol)
    order = finite[np.argsort(v[finite], kind="stable")]
    s = v[order]
    starts = np.flatnonzero(np.concatenate(([True], np.diff(s) > tol)))
    ends = np.append(starts[1:], s.size)
    for a, b in zip(starts, ends, strict=True):
        if b - a > 1:
            v[order[a:b]] = s[a:b].mean()
    return v


def count_ties(x: ArrayLike, *, rtol: float = DEFAULT_RTOL) -> int:
    """How many values share their (merged) value with at least one other value."""
    v = merge_ties(x, rtol=rtol)
    v = v[np.isfinite(v)]
    _, counts = np.unique(v, return_counts=True)
    return int(counts[counts > 1].sum())
