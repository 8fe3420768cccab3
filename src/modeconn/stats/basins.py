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

Choices that differ from the paper's code, each one option away (``basins.preset: paper``
in a study restores all of them at once; docs/method.md has the table):

- ``n_basins=None`` picks k with the eigengap heuristic (:func:`choose_n_basins`); the
  paper fixes ``n_basins=2`` (so does a study's default).
- ``delta="median"`` (a study's default) puts δ at the median off-diagonal distance
  (:func:`median_delta`); the paper fixes δ = 1.
- ``centroids="mean"`` (the default) takes each basin's mean embedding; the paper's code
  (``get_sc_centroid_dists`` in aNOnWhyMooS/connectivity) takes k-means centres on the
  embedding, ``k_means(se, k, random_state=42)`` — ``centroids="kmeans"``. The two
  coincide when k-means agrees with the spectral-clustering labels.
- ``seed`` defaults to 0; the paper's code fixes ``random_state=42`` for the clustering,
  the embedding and k-means.
- Basins are relabelled so that basin 0 is the largest (ties: lowest member index), then
  basin 1, and so on; the score is always relative to basins 0 and 1. (The paper's code
  orders the centres as k-means returns them, so its score's sign is arbitrary.)
- Scores equal within a relative 1e-9 are made exact ties
  (:func:`modeconn.stats.ties.merge_ties`): members that sit on their centroid share a
  score up to the last bits, and ranks must not follow that noise.

This module is pure numpy/scipy/scikit-learn: no torch, no plotting, no I/O.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering, k_means
from sklearn.manifold import spectral_embedding
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from modeconn.errors import ConfigError, DataError, ModeconnError, require_keys
from modeconn.stats._validate import label_vector

# Correlations and regressions live in modeconn.stats.inference, Table 1 in
# modeconn.stats.table_one; imported here so that
# `from modeconn.stats.basins import correlate, cluster_statistics` keeps working.
from modeconn.stats.inference import (
    Correlation,
    Regression,
    correlate,
    membership_regression,
    r_squared,
)
from modeconn.stats.table_one import cluster_statistics
from modeconn.stats.ties import count_ties, merge_ties

__all__ = [
    "BasinFit",
    "Correlation",
    "Regression",
    "affinity",
    "basin_recovery",
    "basin_table",
    "choose_n_basins",
    "cluster_statistics",
    "correlate",
    "find_basins",
    "membership_regression",
    "r_squared",
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
        centroids_from: ``"mean"`` (each basin's mean embedding) or ``"kmeans"`` (the
            paper's code: k-means centres on the embedding, matched to the basins).
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
    centroids_from: str = "mean"

    def __post_init__(self) -> None:
        # Frozen means frozen: copy the arrays and make them read-only.
        object.__setattr__(self, "labels", _readonly(self.labels, np.int64))
        for name in ("embedding", "centroids", "scores", "eigenvalues"):
            object.__setattr__(self, name, _readonly(getattr(self, name), np.float64))

    @property
    def sizes(self) -> NDArray[np.int64]:
        """(k,) number of members in each basin."""
        return np.bincount(self.labels, minlength=self.n_basins).astype(np.int64)

    @property
    def ties(self) -> int:
        """How many members share their basin score with another member (exact ties)."""
        return count_ties(self.scores)

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
            "centroids_from": self.centroids_from,
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
            centroids_from=str(d.get("centroids_from", "mean")),
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


def _kmeans_centroids(
    embedding: FloatArray, labels: NDArray[np.int64], k: int, seed: int
) -> FloatArray:
    """The paper's centroids: k-means centres on the embedding, row b matched to basin b.

    ``k_means(embedding, k, random_state=seed, n_init=10)`` as in the paper's code (whose
    scikit-learn ran 10 restarts by default); centre j goes to the basin its k-means
    cluster overlaps most (a one-to-one assignment), so row 0 is basin 0's centre.
    """
    centres, km, _ = k_means(embedding, k, random_state=int(seed), n_init=10)
    overlap = np.zeros((k, k))
    np.add.at(overlap, (labels, np.asarray(km, dtype=np.int64)), 1.0)
    rows, cols = linear_sum_assignment(-overlap)  # basin rows[i] ↔ k-means centre cols[i]
    out = np.empty_like(np.asarray(centres, dtype=np.float64))
    out[rows] = np.asarray(centres, dtype=np.float64)[cols]
    return out


def find_basins(
    distance: ArrayLike,
    *,
    n_basins: int | None = None,
    delta: float | Literal["median"] = 1.0,
    seed: int = 0,
    centroids: Literal["mean", "kmeans"] = "mean",
) -> BasinFit:
    """Cluster a population into basins from its barrier-distance matrix.

    Steps: S = :func:`affinity` (D, δ); k = ``n_basins`` or :func:`choose_n_basins` (S)
    (pass ``n_basins=2`` for the paper's setting); labels from
    ``SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed)``;
    embedding from ``spectral_embedding(S, n_components=k, drop_first=False,
    random_state=seed)``; centroids as the mean embedding of each basin's members, or with
    ``centroids="kmeans"`` the paper code's k-means centres on the embedding
    (:func:`_kmeans_centroids`); basins relabelled largest first; score =
    ‖w − c₀‖ − ‖w − c₁‖, with scores equal within a relative 1e-9 merged into exact ties.
    ``delta="median"`` uses :func:`median_delta` of the matrix.

    Paper 1's recipe is ``find_basins(D, n_basins=2, delta=1.0, seed=42,
    centroids="kmeans")``.

    Needs at least 3 members; ``n_basins`` must lie in [2, N − 1].

    >>> d = np.full((5, 5), 3.0); d[:3, :3] = 0.1; d[3:, 3:] = 0.1
    >>> np.fill_diagonal(d, 0.0)
    >>> fit = find_basins(d, n_basins=2)
    >>> fit.labels.tolist(), bool(np.all(fit.scores[:3] < 0) and np.all(fit.scores[3:] > 0))
    ([0, 0, 0, 1, 1], True)
    """
    if centroids not in ("mean", "kmeans"):
        raise ConfigError(f"centroids must be 'mean' or 'kmeans'; got {centroids!r}")
    if isinstance(delta, str):
        if delta != "median":
            raise ConfigError(f"delta must be a number > 0 or 'median'; got {delta!r}")
        delta = median_delta(distance)
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
    if centroids == "kmeans" and found == k:
        with threadpool_limits(limits=1):
            centres = _kmeans_centroids(embedding, labels, k, int(seed))  # (k, k)
    else:
        centres = np.stack([embedding[labels == b].mean(axis=0) for b in range(found)])
    scores = np.linalg.norm(embedding - centres[0], axis=1) - np.linalg.norm(
        embedding - centres[1], axis=1
    )  # (N,)
    return BasinFit(
        labels=labels,
        embedding=embedding,
        centroids=centres,
        scores=merge_ties(scores),
        n_basins=found,
        eigenvalues=_laplacian_eigenvalues(s),
        delta=float(delta),
        seed=int(seed),
        n_basins_from=source,
        centroids_from=centroids if found == k else "mean",
    )


# --------------------------------------------------------------------------- summaries


def basin_recovery(labels: ArrayLike, groups: ArrayLike) -> float:
    """Adjusted Rand index between basin labels and known groups (e.g. training arms).

    1.0 for the same partition (whatever the label names), about 0 for chance agreement.

    >>> basin_recovery([0, 0, 1, 1], ["a", "a", "b", "b"])
    1.0
    """
    lab, grp = label_vector(labels, "labels"), label_vector(groups, "groups")
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
    lab = label_vector(labels, "labels")
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
