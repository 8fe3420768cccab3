"""Inference on a population: does a per-member quantity predict another?

Juneja et al. 2023 judge the basins by how well they predict out-of-distribution
behaviour: the Pearson r of the basin score with OOD accuracy (§4.2, Fig. 5), and how much
of an OOD metric's spread membership, the score or ε-sharpness explain (R², Table 1's
companion). This module gives both with percentile-bootstrap intervals over members:

- :func:`correlate` — Pearson r and Spearman ρ, p-values (scipy) and bootstrap intervals;
- :func:`r_squared` — R² of a one-predictor least-squares fit, with a bootstrap;
- :func:`membership_regression` — R² of a metric on basin membership (a 0/1 indicator).

Values equal within a relative 1e-9 are exact ties before any statistic or resample
(:func:`modeconn.stats.ties.merge_ties`, ``ties_rtol``): a basin score is a difference of
two distances, and members that sit on their centroid share it up to the last bits, so
without the merge their ranks (Spearman ρ) and every bootstrap that resamples them would
follow rounding noise.

Every resampling draws members with ``numpy.random.default_rng(seed)``; a resample where a
quantity is constant (its correlation or R² undefined) is skipped and counted out of
``n_boot_used``. A quantity constant over the whole population has no correlation at all:
:func:`correlate` raises, or with ``constant="undefined"`` returns NaN values that say so
(:attr:`Correlation.defined`), which a study reports as a note instead of stopping.

Pure numpy/scipy: no torch, no plotting, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from modeconn.errors import ConfigError, DataError
from modeconn.stats._validate import label_vector, member_vector, two_clusters
from modeconn.stats.ties import DEFAULT_RTOL, merge_ties

__all__ = ["Correlation", "Regression", "correlate", "membership_regression", "r_squared"]

FloatArray = NDArray[np.float64]


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _none_to_nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation with percentile bootstrap intervals.

    ``*_ci`` are (low, high) at ``confidence``; NaN if no bootstrap resample was usable.
    ``n_boot_used`` counts the resamples kept (those with constant x or y are skipped).
    Every value is NaN when x or y was constant (see :func:`correlate`'s ``constant``).
    """

    n: int
    pearson_r: float
    pearson_p: float
    pearson_ci: tuple[float, float]
    spearman_rho: float
    spearman_p: float
    spearman_ci: tuple[float, float]
    confidence: float
    n_boot: int
    n_boot_used: int
    seed: int

    @property
    def defined(self) -> bool:
        """False when x or y was constant, so that no correlation exists."""
        return not math.isnan(self.pearson_r)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict; NaN becomes ``None``."""
        return {
            "n": self.n,
            "pearson_r": self.pearson_r,
            "pearson_p": self.pearson_p,
            "pearson_ci": [_nan_to_none(v) for v in self.pearson_ci],
            "spearman_rho": self.spearman_rho,
            "spearman_p": self.spearman_p,
            "spearman_ci": [_nan_to_none(v) for v in self.spearman_ci],
            "confidence": self.confidence,
            "n_boot": self.n_boot,
            "n_boot_used": self.n_boot_used,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Correlation:
        """Inverse of :meth:`to_dict`."""
        try:
            pci, sci = d["pearson_ci"], d["spearman_ci"]
            return cls(
                n=int(d["n"]),
                pearson_r=float(d["pearson_r"]),
                pearson_p=float(d["pearson_p"]),
                pearson_ci=(_none_to_nan(pci[0]), _none_to_nan(pci[1])),
                spearman_rho=float(d["spearman_rho"]),
                spearman_p=float(d["spearman_p"]),
                spearman_ci=(_none_to_nan(sci[0]), _none_to_nan(sci[1])),
                confidence=float(d["confidence"]),
                n_boot=int(d["n_boot"]),
                n_boot_used=int(d["n_boot_used"]),
                seed=int(d["seed"]),
            )
        except KeyError as exc:
            raise DataError(
                f"a Correlation record is missing key {exc}; it must come from "
                "Correlation.to_dict()"
            ) from None


def _rowwise_pearson(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pearson r of each row of a with the same row of b; (B, n) → (B,)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    r = np.sum(a * b, axis=1) / np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    return np.clip(r, -1.0, 1.0)


def _merged(x: ArrayLike, y: ArrayLike, ties_rtol: float | None) -> tuple[FloatArray, FloatArray]:
    """x and y as member vectors of one length, with ties within ``ties_rtol`` merged."""
    xv, yv = member_vector(x, "x"), member_vector(y, "y")
    if xv.size != yv.size:
        raise DataError(f"x and y must have the same length; got {xv.size} and {yv.size}")
    if ties_rtol is None:
        return xv, yv
    if isinstance(ties_rtol, bool) or not (0.0 <= float(ties_rtol) < 1e-3):
        raise ConfigError(f"ties_rtol must be a number in [0, 1e-3) or None; got {ties_rtol!r}")
    return merge_ties(xv, rtol=float(ties_rtol)), merge_ties(yv, rtol=float(ties_rtol))


def correlate(
    x: ArrayLike,
    y: ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    constant: Literal["raise", "undefined"] = "raise",
    ties_rtol: float | None = DEFAULT_RTOL,
) -> Correlation:
    """Pearson r and Spearman ρ of x and y, with p-values and bootstrap intervals.

    Point estimates and p-values come from ``scipy.stats.pearsonr`` and ``spearmanr``.
    Intervals are percentile bootstrap: members are resampled with replacement ``n_boot``
    times with ``numpy.random.default_rng(seed)``; resamples where x or y is constant
    (correlation undefined) are skipped and counted out of ``n_boot_used``.

    If x or y is constant over all points, no correlation exists: ``DataError`` by
    default, or with ``constant="undefined"`` a :class:`Correlation` whose values are
    NaN and whose ``defined`` is False (say, an OOD split every member gets equally right).

    Before anything else, values of x (and of y) within ``ties_rtol`` × max(1, max|x|) of
    each other become one exact tie (:func:`~modeconn.stats.ties.merge_ties`), so that a
    jitter of a few ulps changes neither ρ nor any interval; ``ties_rtol=None`` keeps the
    values bit for bit.

    >>> c = correlate([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], n_boot=200)
    >>> round(c.pearson_r, 3), round(c.spearman_rho, 3)
    (0.8, 0.8)
    >>> correlate([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], constant="undefined").defined
    False
    """
    if constant not in ("raise", "undefined"):
        raise ConfigError(f"constant must be 'raise' or 'undefined'; got {constant!r}")
    xv, yv = _merged(x, y, ties_rtol)
    n = xv.size
    if n < 3:
        raise DataError(f"a correlation needs at least 3 points; got {n}")
    flat = [name for name, v in (("x", xv), ("y", yv)) if np.all(v == v[0])]
    if flat and constant == "raise":
        v = xv if flat[0] == "x" else yv
        raise DataError(f"{flat[0]} is constant ({v[0]}); a correlation is undefined")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ConfigError(f"n_boot must be an integer ≥ 1; got {n_boot!r}")
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed must be an integer; got {seed!r}")
    if flat:
        nan = math.nan
        return Correlation(
            n=int(n),
            pearson_r=nan,
            pearson_p=nan,
            pearson_ci=(nan, nan),
            spearman_rho=nan,
            spearman_p=nan,
            spearman_ci=(nan, nan),
            confidence=confidence,
            n_boot=int(n_boot),
            n_boot_used=0,
            seed=int(seed),
        )

    pr = stats.pearsonr(xv, yv)
    sr = stats.spearmanr(xv, yv)

    rng = np.random.default_rng(int(seed))
    idx = rng.integers(0, n, size=(int(n_boot), n))  # (B, n) resampled member indices
    xb, yb = xv[idx], yv[idx]  # (B, n)
    ok = (np.ptp(xb, axis=1) > 0) & (np.ptp(yb, axis=1) > 0)
    xb, yb = xb[ok], yb[ok]
    q = [(1.0 - confidence) / 2.0, 1.0 - (1.0 - confidence) / 2.0]
    if xb.shape[0]:
        r_boot = _rowwise_pearson(xb, yb)
        rho_boot = _rowwise_pearson(
            stats.rankdata(xb, axis=1), stats.rankdata(yb, axis=1)
        )  # Spearman = Pearson on average ranks
        p_lo, p_hi = (float(v) for v in np.quantile(r_boot, q))
        s_lo, s_hi = (float(v) for v in np.quantile(rho_boot, q))
    else:
        p_lo = p_hi = s_lo = s_hi = math.nan
    return Correlation(
        n=int(n),
        pearson_r=float(pr.statistic),
        pearson_p=float(pr.pvalue),
        pearson_ci=(p_lo, p_hi),
        spearman_rho=float(sr.statistic),
        spearman_p=float(sr.pvalue),
        spearman_ci=(s_lo, s_hi),
        confidence=confidence,
        n_boot=int(n_boot),
        n_boot_used=int(xb.shape[0]),
        seed=int(seed),
    )


@dataclass(frozen=True)
class Regression:
    """A one-predictor least-squares fit y ≈ intercept + slope·x, read through its R².

    ``r_squared_ci`` is a percentile bootstrap interval at ``confidence`` (NaN if no
    resample was usable); ``n_boot_used`` counts the resamples kept (those with constant x
    or y, where R² is undefined, are skipped). ``p_value`` is the two-sided t-test of
    slope = 0 (n − 2 degrees of freedom), as ``scipy.stats.linregress`` reports it.
    """

    predictor: str
    n: int
    r_squared: float
    slope: float
    intercept: float
    p_value: float
    r_squared_ci: tuple[float, float]
    confidence: float
    n_boot: int
    n_boot_used: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict; NaN becomes ``None``."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["r_squared_ci"] = [_nan_to_none(v) for v in self.r_squared_ci]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Regression:
        """Inverse of :meth:`to_dict`."""
        try:
            ci = d["r_squared_ci"]
            return cls(
                predictor=str(d["predictor"]),
                n=int(d["n"]),
                r_squared=float(d["r_squared"]),
                slope=float(d["slope"]),
                intercept=float(d["intercept"]),
                p_value=float(d["p_value"]),
                r_squared_ci=(_none_to_nan(ci[0]), _none_to_nan(ci[1])),
                confidence=float(d["confidence"]),
                n_boot=int(d["n_boot"]),
                n_boot_used=int(d["n_boot_used"]),
                seed=int(d["seed"]),
            )
        except KeyError as exc:
            raise DataError(
                f"a Regression record is missing key {exc}; it must come from Regression.to_dict()"
            ) from None


def _bootstrap_options(n_boot: int, confidence: float, seed: int) -> float:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ConfigError(f"n_boot must be an integer ≥ 1; got {n_boot!r}")
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed must be an integer; got {seed!r}")
    return confidence


def r_squared(
    x: ArrayLike,
    y: ArrayLike,
    *,
    predictor: str = "x",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    ties_rtol: float | None = DEFAULT_RTOL,
) -> Regression:
    """R² of the ordinary least-squares regression of y on one predictor x, with a bootstrap.

    The fit is y ≈ b₀ + b₁·x by ordinary least squares, and
    R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)², the share of y's variance that x explains (for one
    predictor, Pearson r²). Use it for any single per-member predictor of a metric: basin
    membership (:func:`membership_regression`), the basin score, ε-sharpness, ….

    The interval is percentile bootstrap: members are resampled with replacement ``n_boot``
    times, as ``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))``, and R²
    is refitted on each resample; resamples with constant x or y are skipped. Ties within
    ``ties_rtol`` are merged first, as in :func:`correlate`.

    >>> fit = r_squared([0.0, 0.0, 1.0, 1.0], [1.0, 3.0, 4.0, 6.0], n_boot=100)
    >>> round(fit.r_squared, 4), fit.slope, fit.intercept  # R² = 9/13, see membership_regression
    (0.6923, 3.0, 2.0)
    """
    xv, yv = _merged(x, y, ties_rtol)
    n = xv.size
    if n < 3:
        raise DataError(f"a regression with an R² needs at least 3 points; got {n}")
    for name, v in (("x", xv), ("y", yv)):
        if np.all(v == v[0]):
            raise DataError(f"{name} is constant ({v[0]}); R² is undefined")
    confidence = _bootstrap_options(n_boot, confidence, seed)

    # Least squares on centred data: b₁ = Sxy / Sxx, b₀ = ȳ − b₁·x̄.
    xc, yc = xv - xv.mean(), yv - yv.mean()  # (n,)
    slope = float(xc @ yc) / float(xc @ xc)
    intercept = float(yv.mean()) - slope * float(xv.mean())
    resid = yc - slope * xc
    ss_res, ss_tot = float(resid @ resid), float(yc @ yc)
    r2 = min(max(1.0 - ss_res / ss_tot, 0.0), 1.0)
    if r2 < 1.0:
        t = math.sqrt(r2 * (n - 2) / (1.0 - r2))
        p = float(2.0 * stats.t.sf(t, n - 2))
    else:
        p = 0.0  # a perfect fit

    rng = np.random.default_rng(int(seed))
    idx = rng.integers(0, n, size=(int(n_boot), n))  # (B, n) resampled member indices
    xb, yb = xv[idx], yv[idx]  # (B, n)
    ok = (np.ptp(xb, axis=1) > 0) & (np.ptp(yb, axis=1) > 0)
    if ok.any():
        r2_boot = _rowwise_pearson(xb[ok], yb[ok]) ** 2  # one predictor: R² = r²
        q = [(1.0 - confidence) / 2.0, 1.0 - (1.0 - confidence) / 2.0]
        lo, hi = (float(v) for v in np.quantile(r2_boot, q))
    else:
        lo = hi = math.nan
    return Regression(
        predictor=str(predictor),
        n=int(n),
        r_squared=r2,
        slope=slope,
        intercept=intercept,
        p_value=p,
        r_squared_ci=(lo, hi),
        confidence=confidence,
        n_boot=int(n_boot),
        n_boot_used=int(ok.sum()),
        seed=int(seed),
    )


def membership_regression(
    values: ArrayLike,
    labels: ArrayLike,
    *,
    clusters: tuple[Any, Any] = (0, 1),
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Regression:
    """R² of a metric regressed on basin membership (one 0/1 indicator), with a bootstrap.

    How much of a metric's spread across the population the basins explain: the
    regression f ≈ b₀ + b₁·1[w ∈ C1] over the members of C1 = ``clusters[0]`` (default
    basin 0, the largest) and C2 = ``clusters[1]`` (default basin 1); members of other
    basins are left out. Then b₁ = μC1 − μC2, b₀ = μC2, and R² is the between-cluster
    share of the variance, Σ_c n_c (μ_c − μ)² / Σ_w (f(w) − μ)². See :func:`r_squared`
    for the bootstrap (plain resampling of members; a resample that holds one cluster
    only is skipped).

    >>> # C1 = {4, 6}, C2 = {1, 3}: means 5 and 2, grand mean 3.5;
    >>> # between = 4·1.5² = 9, total = 2.5² + 0.5² + 0.5² + 2.5² = 13, so R² = 9/13
    >>> fit = membership_regression([1.0, 3.0, 4.0, 6.0], [1, 1, 0, 0], n_boot=100)
    >>> round(fit.r_squared, 4), fit.slope, fit.intercept
    (0.6923, 3.0, 2.0)
    """
    lab = label_vector(labels, "labels")
    f = member_vector(values, "values")
    if f.size != lab.size:
        raise DataError(
            f"values and labels must have one entry per member; got {f.size} and {lab.size}"
        )
    in_c1, in_c2 = two_clusters(lab, clusters)
    keep = in_c1 | in_c2
    if np.ptp(f[keep]) == 0:
        raise DataError(
            f"values are constant ({f[keep][0]}) over basins {clusters[0]!r} and "
            f"{clusters[1]!r}; R² is undefined"
        )
    return r_squared(
        in_c1[keep].astype(np.float64),
        f[keep],
        predictor=f"membership of basin {clusters[0]!r} (C1) vs {clusters[1]!r} (C2)",
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
    )
