"""Basins: spectral clustering of a population on its barrier-distance matrix.

Juneja et al. 2023 ("Linear Connectivity Reveals Generalization Strategies", §4) take the
N×N matrix D of convexity gaps between fine-tuned models (see :mod:`modeconn.measures.barriers`),
turn it into a similarity

    S = exp(−D² / (2δ²)),   δ = 1,

and cluster it with scikit-learn's ``SpectralClustering(n_clusters=2,
affinity="precomputed")``. Models in one cluster are linearly connected to each other but
separated by barriers from the other cluster: a *basin*. To place every model on one axis
they embed S with ``spectral_embedding(S, n_components=k, drop_first=False)``, take the
centroid c₁ of the larger cluster C₁ and c₂ of the other, and score each model w by

    score(w) = ‖w − c₁‖ − ‖w − c₂‖,

negative near the larger basin, positive near the smaller one. The score's Pearson r with
out-of-distribution accuracy (e.g. on HANS) measures how well the basin predicts the
generalization strategy (§4.2, Fig. 5); Table 1 reports per-basin means and deviations,
which :func:`basin_table` gives.

Choices that differ from the paper's code, each one option away:

- ``n_basins=None`` (the default of :func:`find_basins`) picks k with the eigengap
  heuristic (:func:`choose_n_basins`); the paper fixes ``n_basins=2``.
- Centroids are the mean embedding of each basin's members; the paper's code takes k-means
  centres on the embedding, which coincide when k-means agrees with the labels.
- Basins are relabelled so that basin 0 is the largest (ties: lowest member index), then
  basin 1, and so on; the score is always relative to basins 0 and 1.

This module is pure numpy/scipy/scikit-learn: no torch, no plotting, no I/O.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering
from sklearn.manifold import spectral_embedding
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from modeconn.errors import ConfigError, DataError, ModeconnError, require_keys

__all__ = [
    "BasinFit",
    "Correlation",
    "affinity",
    "basin_recovery",
    "basin_table",
    "choose_n_basins",
    "correlate",
    "find_basins",
]

FloatArray = NDArray[np.float64]

# Relative tolerance for "symmetric" and "zero diagonal", scaled by max(1, max |D|): a
# matrix assembled from float computations passes, a transposed-by-mistake one does not.
_MATRIX_RTOL = 1e-8


# --------------------------------------------------------------------------- validation


def _square_matrix(m: ArrayLike, what: str) -> FloatArray:
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be a square array of real numbers ({exc})") from exc
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise DataError(f"{what} must be a square 2-D array (N×N); got shape {a.shape}")
    bad = np.argwhere(~np.isfinite(a))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise DataError(f"{what} must be finite; got {a[i, j]} at [{i}, {j}]")
    if np.any(a < 0):
        i, j = (int(v) for v in np.argwhere(a < 0)[0])
        raise DataError(f"{what} must be non-negative; got {a[i, j]} at [{i}, {j}]")
    tol = _MATRIX_RTOL * max(1.0, float(np.max(a, initial=0.0)))
    asym = np.abs(a - a.T)
    if asym.size and float(asym.max()) > tol:
        i, j = (int(v) for v in np.unravel_index(int(np.argmax(asym)), asym.shape))
        raise DataError(
            f"{what} must be symmetric; got {a[i, j]} at [{i}, {j}] but {a[j, i]} at "
            f"[{j}, {i}]. Symmetrise it, e.g. (D + D.T) / 2, if the difference is noise."
        )
    return (a + a.T) / 2.0  # exactly symmetric from here on


def _distance(distance: ArrayLike) -> FloatArray:
    d = _square_matrix(distance, "a distance matrix")
    diag = np.abs(np.diag(d))
    tol = _MATRIX_RTOL * max(1.0, float(np.max(d, initial=0.0)))
    if diag.size and float(diag.max()) > tol:
        i = int(np.argmax(diag))
        raise DataError(f"a distance matrix must have a zero diagonal; got {d[i, i]} at [{i}, {i}]")
    np.fill_diagonal(d, 0.0)
    return d


def _affinity_matrix(s: ArrayLike) -> FloatArray:
    a = _square_matrix(s, "an affinity matrix")
    degree = a.sum(axis=1) - np.diag(a)  # the normalised Laplacian ignores self-loops
    if a.shape[0] >= 2 and np.any(degree <= 0):
        i = int(np.flatnonzero(degree <= 0)[0])
        raise DataError(
            f"an affinity matrix must connect every member to another; row {i} has no "
            "off-diagonal weight. Increase delta, or drop that member."
        )
    return a


def _n_members(n: int) -> None:
    if n < 3:
        raise DataError(
            f"finding basins needs at least 3 members; got {n}. Two basins and a "
            "comparison between them need a larger population."
        )


# --------------------------------------------------------------------------- affinity, k


def median_delta(distance: ArrayLike) -> float:
    """The median off-diagonal distance: a similarity scale that follows the data.

    The paper fixes δ = 1, which suits convexity gaps of order 1. When every gap is far
    below 1 (small models, short training), exp(−D²/2) is ≈ 1 for every pair and the
    clustering sees no structure; the median heuristic puts δ where the distances are.
    Falls back to 1.0 when every off-diagonal distance is 0.

    >>> median_delta(np.array([[0.0, 0.2, 0.4], [0.2, 0.0, 0.6], [0.4, 0.6, 0.0]]))
    0.4
    """
    d = _distance(distance)
    off = d[~np.eye(d.shape[0], dtype=bool)]
    med = float(np.median(off)) if off.size else 0.0
    return med if med > 0 else 1.0


def affinity(distance: ArrayLike, *, delta: float = 1.0) -> FloatArray:
    """Gaussian similarity S = exp(−D² / (2δ²)) of a barrier-distance matrix D.

    D must be square, symmetric (to a relative tolerance of 1e-8), zero on the diagonal,
    non-negative and finite. δ = 1 is the paper's choice; it sets the barrier scale at
    which two members stop looking alike.

    >>> affinity(np.array([[0.0, 2.0], [2.0, 0.0]])).round(4)  # exp(−4/2) = 0.1353
    array([[1.    , 0.1353],
           [0.1353, 1.    ]])
    """
    delta = float(delta)
    if not math.isfinite(delta) or delta <= 0:
        raise ConfigError(f"delta must be a finite number > 0 (the similarity scale); got {delta}")
    d = _distance(distance)
    return np.exp(-(d**2) / (2.0 * delta**2))


def _laplacian_eigenvalues(s: FloatArray) -> FloatArray:
    """Ascending eigenvalues of the normalised Laplacian I − D^{-1/2} S D^{-1/2}.

    Uses scipy's ``laplacian(normed=True)``, which ignores the diagonal of S, exactly as
    scikit-learn's spectral embedding and clustering do.
    """
    lap = np.asarray(laplacian(s, normed=True), dtype=np.float64)
    return np.clip(np.linalg.eigvalsh((lap + lap.T) / 2.0), 0.0, None)


def choose_n_basins(affinity: ArrayLike, *, max_k: int | None = None) -> int:
    """Number of basins by the eigengap heuristic (von Luxburg 2007, §8.3).

    With the normalised Laplacian's eigenvalues λ₁ ≤ λ₂ ≤ … ≤ λ_N (λ₁ = 0), k blocks of
    well-connected members give k eigenvalues near 0 and then a jump, so we return

        k = argmax_{2 ≤ k ≤ max_k} (λ_{k+1} − λ_k),

    the smallest k on ties. ``max_k`` defaults to N − 1 and must lie in [2, N − 1].
    The result is never 1: this function assumes at least two basins. Whether there is
    any structure at all shows in the size of the gap (``BasinFit.eigenvalues``).

    >>> blocks = np.kron(np.eye(2), np.ones((3, 3))) + 0.01  # two blocks of 3
    >>> choose_n_basins(blocks)
    2
    """
    s = _affinity_matrix(affinity)
    n = s.shape[0]
    _n_members(n)
    if max_k is None:
        max_k = n - 1
    if (
        isinstance(max_k, bool)
        or not isinstance(max_k, int | np.integer)
        or not (2 <= max_k <= n - 1)
    ):
        raise ConfigError(
            f"max_k must be an integer in [2, {n - 1}] for {n} members; got {max_k!r}"
        )
    lam = _laplacian_eigenvalues(s)
    gaps = np.diff(lam)  # gaps[k-1] = λ_{k+1} − λ_k (1-based λ)
    candidates = gaps[1:max_k]  # k = 2 … max_k
    return int(np.argmax(candidates)) + 2


# --------------------------------------------------------------------------- basins


def _readonly(a: ArrayLike, dtype: type) -> NDArray[Any]:
    out: NDArray[Any] = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class BasinFit:
    """Result of :func:`find_basins`.

    Attributes:
        labels: (N,) int, basin of each member; basin 0 is the largest, then 1, ….
        embedding: (N, k) spectral embedding of the affinity (``drop_first=False``).
        centroids: (k, k) mean embedding of each basin's members, row b for basin b.
        scores: (N,) ‖w − c₀‖ − ‖w − c₁‖; negative nearer basin 0 (the largest).
        n_basins: k.
        eigenvalues: (N,) ascending eigenvalues of the normalised Laplacian.
        delta: similarity scale used.
        seed: random seed given to scikit-learn.
        n_basins_from: ``"eigengap"`` if k was chosen by :func:`choose_n_basins`,
            ``"argument"`` if the caller fixed it.
    """

    labels: NDArray[np.int64]
    embedding: FloatArray
    centroids: FloatArray
    scores: FloatArray
    n_basins: int
    eigenvalues: FloatArray
    delta: float
    seed: int
    n_basins_from: str = "argument"

    def __post_init__(self) -> None:
        # Frozen means frozen: copy the arrays and make them read-only.
        object.__setattr__(self, "labels", _readonly(self.labels, np.int64))
        for name in ("embedding", "centroids", "scores", "eigenvalues"):
            object.__setattr__(self, name, _readonly(getattr(self, name), np.float64))

    @property
    def sizes(self) -> NDArray[np.int64]:
        """(k,) number of members in each basin."""
        return np.bincount(self.labels, minlength=self.n_basins).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists and Python scalars)."""
        return {
            "labels": [int(v) for v in self.labels],
            "embedding": self.embedding.tolist(),
            "centroids": self.centroids.tolist(),
            "scores": self.scores.tolist(),
            "n_basins": int(self.n_basins),
            "eigenvalues": self.eigenvalues.tolist(),
            "delta": float(self.delta),
            "seed": int(self.seed),
            "n_basins_from": self.n_basins_from,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BasinFit:
        """Inverse of :meth:`to_dict`."""
        required = ("labels", "embedding", "centroids", "scores", "n_basins", "eigenvalues")
        require_keys(d, (*required, "delta", "seed"), "BasinFit")
        return cls(
            labels=np.asarray(d["labels"], dtype=np.int64),
            embedding=np.asarray(d["embedding"], dtype=np.float64),
            centroids=np.asarray(d["centroids"], dtype=np.float64),
            scores=np.asarray(d["scores"], dtype=np.float64),
            n_basins=int(d["n_basins"]),
            eigenvalues=np.asarray(d["eigenvalues"], dtype=np.float64),
            delta=float(d["delta"]),
            seed=int(d["seed"]),
            n_basins_from=str(d.get("n_basins_from", "argument")),
        )


def _relabel_by_size(labels: NDArray[np.int64]) -> NDArray[np.int64]:
    """Relabel so basin 0 is the largest; ties broken by the lowest member index."""
    present = np.unique(labels)
    order = sorted(
        present.tolist(),
        key=lambda b: (-int(np.sum(labels == b)), int(np.flatnonzero(labels == b)[0])),
    )
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping[int(b)] for b in labels], dtype=np.int64)


def find_basins(
    distance: ArrayLike,
    *,
    n_basins: int | None = None,
    delta: float = 1.0,
    seed: int = 0,
) -> BasinFit:
    """Cluster a population into basins from its barrier-distance matrix.

    Steps: S = :func:`affinity` (D, δ); k = ``n_basins`` or :func:`choose_n_basins` (S)
    (pass ``n_basins=2`` for the paper's setting); labels from
    ``SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed)``;
    embedding from ``spectral_embedding(S, n_components=k, drop_first=False,
    random_state=seed)``; centroids as the mean embedding of each basin's members (the
    paper's code takes k-means centres on the embedding, which coincide when k-means agrees
    with the labels); basins relabelled largest first; score = ‖w − c₀‖ − ‖w − c₁‖.

    Needs at least 3 members; ``n_basins`` must lie in [2, N − 1].

    >>> d = np.full((5, 5), 3.0); d[:3, :3] = 0.1; d[3:, 3:] = 0.1
    >>> np.fill_diagonal(d, 0.0)
    >>> fit = find_basins(d, n_basins=2)
    >>> fit.labels.tolist(), bool(np.all(fit.scores[:3] < 0) and np.all(fit.scores[3:] > 0))
    ([0, 0, 0, 1, 1], True)
    """
    s = affinity(distance, delta=delta)
    n = s.shape[0]
    _n_members(n)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed must be an integer; got {seed!r}")
    if n_basins is None:
        k, source = choose_n_basins(s), "eigengap"
    else:
        if (
            isinstance(n_basins, bool)
            or not isinstance(n_basins, int | np.integer)
            or not (2 <= n_basins <= n - 1)
        ):
            raise ConfigError(
                f"n_basins must be an integer in [2, {n - 1}] for {n} members, or None for "
                f"the eigengap heuristic; got {n_basins!r}"
            )
        k, source = int(n_basins), "argument"

    # k-means on an (N, k) embedding is tiny: a pool of BLAS/OpenMP threads costs ~30 ms
    # per restart in start-up and spinning (10× the work on a 6-member population), and a
    # bootstrap calls this hundreds of times, so it runs on one thread
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # A nearly disconnected graph (barriers ≫ δ) is exactly the case of clear basins;
        # scikit-learn's warning about it would only be noise here.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        raw = SpectralClustering(
            n_clusters=k, affinity="precomputed", random_state=int(seed)
        ).fit_predict(s)
        embedding = spectral_embedding(
            s, n_components=k, drop_first=False, random_state=int(seed)
        )  # (N, k)

    labels = _relabel_by_size(np.asarray(raw, dtype=np.int64))
    found = int(labels.max()) + 1
    if found < 2:
        raise ModeconnError(
            f"spectral clustering put all {n} members in one basin (asked for {k}); the "
            "distance matrix shows no structure at this delta. Try another delta."
        )
    centroids = np.stack([embedding[labels == b].mean(axis=0) for b in range(found)])  # (k, k)
    scores = np.linalg.norm(embedding - centroids[0], axis=1) - np.linalg.norm(
        embedding - centroids[1], axis=1
    )  # (N,)
    return BasinFit(
        labels=labels,
        embedding=embedding,
        centroids=centroids,
        scores=scores,
        n_basins=found,
        eigenvalues=_laplacian_eigenvalues(s),
        delta=float(delta),
        seed=int(seed),
        n_basins_from=source,
    )


# --------------------------------------------------------------------------- correlation


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _none_to_nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation with percentile bootstrap intervals.

    ``*_ci`` are (low, high) at ``confidence``; NaN if no bootstrap resample was usable.
    ``n_boot_used`` counts the resamples kept (those with constant x or y are skipped).
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


def _vector(v: ArrayLike, name: str) -> FloatArray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a 1-D array of real numbers ({exc})") from exc
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array (one value per member); got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{name} must be finite; got {a[i]} at index {i}")
    return a


def correlate(
    x: ArrayLike,
    y: ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Correlation:
    """Pearson r and Spearman ρ of x and y, with p-values and bootstrap intervals.

    Point estimates and p-values come from ``scipy.stats.pearsonr`` and ``spearmanr``.
    Intervals are percentile bootstrap: members are resampled with replacement ``n_boot``
    times with ``numpy.random.default_rng(seed)``; resamples where x or y is constant
    (correlation undefined) are skipped and counted out of ``n_boot_used``.

    >>> c = correlate([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], n_boot=200)
    >>> round(c.pearson_r, 3), round(c.spearman_rho, 3)
    (0.8, 0.8)
    """
    xv, yv = _vector(x, "x"), _vector(y, "y")
    if xv.size != yv.size:
        raise DataError(f"x and y must have the same length; got {xv.size} and {yv.size}")
    n = xv.size
    if n < 3:
        raise DataError(f"a correlation needs at least 3 points; got {n}")
    for name, v in (("x", xv), ("y", yv)):
        if np.all(v == v[0]):
            raise DataError(f"{name} is constant ({v[0]}); a correlation is undefined")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ConfigError(f"n_boot must be an integer ≥ 1; got {n_boot!r}")
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1; got {confidence}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed must be an integer; got {seed!r}")

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


# --------------------------------------------------------------------------- summaries


def _label_vector(labels: ArrayLike, name: str) -> NDArray[Any]:
    a = np.asarray(labels)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array (one label per member); got shape {a.shape}")
    return a


def basin_recovery(labels: ArrayLike, groups: ArrayLike) -> float:
    """Adjusted Rand index between basin labels and known groups (e.g. training arms).

    1.0 for the same partition (whatever the label names), about 0 for chance agreement.

    >>> basin_recovery([0, 0, 1, 1], ["a", "a", "b", "b"])
    1.0
    """
    lab, grp = _label_vector(labels, "labels"), _label_vector(groups, "groups")
    if lab.size != grp.size:
        raise DataError(
            f"labels and groups must have one entry per member; got {lab.size} and {grp.size}"
        )
    if lab.size == 0:
        raise DataError("labels and groups are empty")
    return float(adjusted_rand_score(grp, lab))


def basin_table(labels: ArrayLike, values: Mapping[str, ArrayLike]) -> pd.DataFrame:
    """Per-basin size and mean / sample std (ddof=1) of each value column (Table 1).

    Columns are ``size`` then ``<name>_mean`` and ``<name>_std`` for each entry of
    ``values`` in order; the index is ``basin``. A single-member basin has NaN std.

    >>> basin_table([0, 0, 1], {"ood": [0.5, 0.7, 0.2]}).round(3)  # doctest: +NORMALIZE_WHITESPACE
           size  ood_mean  ood_std
    basin
    0         2       0.6    0.141
    1         1       0.2      NaN
    """
    lab = _label_vector(labels, "labels")
    if lab.size == 0:
        raise DataError("labels is empty; a basin table needs at least one member")
    frame = pd.DataFrame({"basin": lab})
    for name, v in values.items():
        col = np.asarray(v)
        if col.ndim != 1 or col.size != lab.size:
            raise DataError(
                f"values[{name!r}] must hold one number per member ({lab.size}); "
                f"got shape {col.shape}"
            )
        frame[name] = col.astype(np.float64)
    grouped = frame.groupby("basin", sort=True)
    table = pd.DataFrame({"size": grouped.size()})
    for name in values:
        table[f"{name}_mean"] = grouped[name].mean()
        table[f"{name}_std"] = grouped[name].std(ddof=1)
    table.index.name = "basin"
    return table


# --------------------------------------------------------------------------- Table 1, R²


def _two_clusters(
    lab: NDArray[Any], clusters: tuple[Any, Any]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Member masks of C1 and C2; each must have at least one member."""
    if len(clusters) != 2 or clusters[0] == clusters[1]:
        raise ConfigError(
            f"clusters must name two different basins (C1, C2), e.g. (0, 1); got {clusters!r}"
        )
    masks = (lab == clusters[0], lab == clusters[1])
    for name, basin, mask in zip(("C1", "C2"), clusters, masks, strict=True):
        if not mask.any():
            present = np.unique(lab).tolist()
            raise DataError(
                f"basin {basin!r} ({name}) has no members; the labels hold basins {present}. "
                "Pass the labels of find_basins(..., n_basins=2), or name two present basins "
                "with clusters=(c1, c2)."
            )
    return masks


def _std(v: FloatArray, ddof: int) -> float:
    return float(np.std(v, ddof=ddof)) if v.size > ddof else math.nan


def cluster_statistics(
    labels: ArrayLike,
    values: Mapping[str, ArrayLike],
    *,
    clusters: tuple[Any, Any] = (0, 1),
    ddof: int = 1,
) -> pd.DataFrame:
    """Table 1 of Juneja et al. 2023: how far apart two basins lie on each metric.

    For each metric f (e.g. ID accuracy, HANS-LO accuracy), with C1 the larger cluster and
    C2 the other:

    - ``mu_c1``, ``sigma_c1``, ``mu_c2``, ``sigma_c2``: mean and standard deviation of f
      over each cluster's members;
    - ``max_c2``: max_{w ∈ C2} f(w);
    - ``mean_gap`` = (μC1 − μC2) / σC1: the clusters' difference in means, in C1's
      standard deviations;
    - ``max_gap`` = (μC1 − max_{w ∈ C2} f(w)) / σC1: how many of C1's standard deviations
      separate C1's mean from the *best* member of C2. A positive ``max_gap`` means every
      member of C2 lies below C1's mean.

    C1 is ``clusters[0]`` (default basin 0, which :func:`find_basins` makes the largest)
    and C2 is ``clusters[1]`` (default basin 1); members of any other basin are left out.
    Sizes are given as ``n_c1`` and ``n_c2``.

    σ: ``ddof=1`` (sample standard deviation) by default. METHOD.md does not fix it; the
    paper's script (``plot/cluster_wise_means_std_max.py`` in aNOnWhyMooS/connectivity)
    prints ``np.std``, i.e. ``ddof=0``: pass ``ddof=0`` to reproduce its numbers. A cluster
    with no more than ``ddof`` members has σ = NaN; where σC1 is 0 or NaN the two gaps are
    NaN.

    Args:
        labels: (N,) basin label of each member.
        values: metric name → (N,) finite value of each member, in the order of ``labels``.
        clusters: the basin labels of C1 and C2.
        ddof: delta degrees of freedom of σ.

    Returns:
        One row per metric (index ``metric``, in the order of ``values``); columns
        ``n_c1, mu_c1, sigma_c1, n_c2, mu_c2, sigma_c2, max_c2, mean_gap, max_gap``.

    >>> t = cluster_statistics([1, 0, 0, 1, 0], {"ood": [0.2, 0.6, 0.7, 0.4, 0.8]})
    >>> t.loc["ood", ["mu_c1", "sigma_c1", "mu_c2", "max_c2", "mean_gap", "max_gap"]].round(3)
    mu_c1       0.7
    sigma_c1    0.1
    mu_c2       0.3
    max_c2      0.4
    mean_gap    4.0
    max_gap     3.0
    Name: ood, dtype: float64
    """
    lab = _label_vector(labels, "labels")
    if isinstance(ddof, bool) or not isinstance(ddof, int | np.integer) or ddof < 0:
        raise ConfigError(
            f"ddof must be an integer ≥ 0 (1: sample σ, 0: the paper's); got {ddof!r}"
        )
    in_c1, in_c2 = _two_clusters(lab, clusters)
    columns = [
        "n_c1", "mu_c1", "sigma_c1", "n_c2", "mu_c2", "sigma_c2", "max_c2", "mean_gap", "max_gap"
    ]  # fmt: skip
    rows: dict[str, dict[str, float]] = {}
    for name, v in values.items():
        f = _vector(v, f"values[{name!r}]")
        if f.size != lab.size:
            raise DataError(
                f"values[{name!r}] must hold one number per member ({lab.size}, as labels); "
                f"got {f.size}"
            )
        c1, c2 = f[in_c1], f[in_c2]
        mu1, mu2, sd1, best2 = float(c1.mean()), float(c2.mean()), _std(c1, ddof), float(c2.max())
        usable = math.isfinite(sd1) and sd1 > 0
        rows[name] = {
            "n_c1": c1.size,
            "mu_c1": mu1,
            "sigma_c1": sd1,
            "n_c2": c2.size,
            "mu_c2": mu2,
            "sigma_c2": _std(c2, ddof),
            "max_c2": best2,
            "mean_gap": (mu1 - mu2) / sd1 if usable else math.nan,
            "max_gap": (mu1 - best2) / sd1 if usable else math.nan,
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table = table.astype({"n_c1": np.int64, "n_c2": np.int64})
    table.index.name = "metric"
    return table


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
) -> Regression:
    """R² of the ordinary least-squares regression of y on one predictor x, with a bootstrap.

    The fit is y ≈ b₀ + b₁·x by ordinary least squares, and
    R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)², the share of y's variance that x explains (for one
    predictor, Pearson r²). Use it for any single per-member predictor of a metric: basin
    membership (:func:`membership_regression`), the basin score, ε-sharpness, ….

    The interval is percentile bootstrap: members are resampled with replacement ``n_boot``
    times, as ``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))``, and R²
    is refitted on each resample; resamples with constant x or y are skipped.

    >>> fit = r_squared([0.0, 0.0, 1.0, 1.0], [1.0, 3.0, 4.0, 6.0], n_boot=100)
    >>> round(fit.r_squared, 4), fit.slope, fit.intercept  # R² = 9/13, see membership_regression
    (0.6923, 3.0, 2.0)
    """
    xv, yv = _vector(x, "x"), _vector(y, "y")
    if xv.size != yv.size:
        raise DataError(f"x and y must have the same length; got {xv.size} and {yv.size}")
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
    lab = _label_vector(labels, "labels")
    f = _vector(values, "values")
    if f.size != lab.size:
        raise DataError(
            f"values and labels must have one entry per member; got {f.size} and {lab.size}"
        )
    in_c1, in_c2 = _two_clusters(lab, clusters)
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


__all__ += ["Regression", "cluster_statistics", "membership_regression", "r_squared"]
