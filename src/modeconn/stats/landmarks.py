"""Landmark basins: the spectral clustering of :mod:`modeconn.stats.basins` from N·m paths.

All-pairs basins (Juneja et al. 2023, §4) need the N(N−1)/2 paths of a population: 4,950
at N = 100, 499,500 at N = 1,000. The affinity S = exp(−D²/2δ²) they cluster has a few
blocks (the basins) and so a low numerical rank, which is what the Nyström method exploits
(Williams & Seeger 2001, "Using the Nyström method to speed up kernel machines"; for
spectral clustering Fowlkes, Belongie, Chung & Malik 2004, "Spectral grouping using the
Nyström method", TPAMI 26(2)):

1. choose m ≪ N *landmark* members L (:func:`choose_landmarks`);
2. measure only the paths that touch a landmark — every member to every landmark — which
   is m(N − m) + m(m − 1)/2 pairs (:func:`landmark_pairs`);
3. with C = S[:, L] (N × m, all measured) and W = S[L, L] (m × m), complete the affinity

       Ŝ = C W⁺ Cᵀ,

   keep every measured entry at its measured value, clip to [0, 1] (Ŝ is a similarity),
   and hand Ŝ to the very spectral step of the all-pairs basins — scikit-learn's
   ``SpectralClustering`` and ``spectral_embedding`` (:func:`landmark_basins`).

The eigenvectors of Ŝ are the Nyström extension of W's eigenvectors to every member
(uᵢ(x) ∝ Σ_l S(x, l) u_l / λ, Fowlkes et al. eq. 3), and its degrees are Fowlkes et al.'s
approximate degrees Ŝ1, so the normalised Laplacian that scikit-learn builds from Ŝ is
theirs; we complete the N×N matrix rather than orthogonalise in one shot because N ≤ a few
thousand members makes an N×N matrix cheap, and it lets scikit-learn's own code do the
spectral step unchanged. When m = N every pair is measured, Ŝ = S and the basins are
exactly the all-pairs basins (``tests/test_landmarks.py``).

Departures and choices (docs/method.md, "Landmark basins"):

- W may be indefinite (the convexity gap is not a metric, so S need not be positive
  semi-definite) and is near-singular when landmarks share a basin. W⁺ is taken over
  W's eigenvalues above ``rcond``·λ_max only (default 1e-1): the negative and the
  unresolved directions, which carry the noise of the measured gaps, are dropped, so
  Ŝ = FFᵀ with Nyström features F = C U_r Λ_r^{-1/2} is positive semi-definite.
- ``delta="median"`` takes the median over the *measured* off-diagonal distances.
- Landmarks are chosen at random with a seed (the default) or by k-means++ seeding
  (Arthur & Vassilvitskii 2007) on any distance already known before the paths (e.g. the
  Euclidean distance between weights): each next landmark is drawn with probability ∝ its
  squared distance to the nearest landmark so far, which spreads landmarks over basins.

Pure numpy (plus the scikit-learn call inside :func:`~modeconn.stats.basins.find_basins`):
no torch, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modeconn.errors import ConfigError, DataError
from modeconn.stats.basins import BasinFit, find_basins

__all__ = [
    "choose_landmarks",
    "complete_affinity",
    "kmeanspp_landmarks",
    "landmark_basins",
    "landmark_fraction",
    "landmark_pairs",
    "measured_mask",
]

FloatArray = NDArray[np.float64]

# Smallest similarity a completed entry may take: −2δ² ln(ŝ) turns it back into a finite
# distance for find_basins (exp(−D̂²/2δ²) = ŝ), and 1e-300 is far below any measured S.
_MIN_SIMILARITY = 1e-300


def _count(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}")
    return int(value)


def choose_landmarks(
    n: int,
    m: int,
    *,
    seed: int = 0,
    method: Literal["random", "kmeans++"] = "random",
    distance: ArrayLike | None = None,
) -> tuple[int, ...]:
    """Indices of m landmark members out of n, ascending.

    ``method="random"`` draws m distinct members uniformly with ``seed``.
    ``method="kmeans++"`` needs ``distance``, an n × n matrix of a distance known before
    any path is measured; the first landmark is drawn uniformly, each next one with
    probability ∝ (distance to its nearest landmark)² (Arthur & Vassilvitskii 2007),
    falling back to uniform among the rest when every remaining distance is 0.

    >>> choose_landmarks(10, 3, seed=0)
    (5, 6, 9)
    >>> d = np.kron(1 - np.eye(2), np.ones((3, 3)))  # two groups of 3 at distance 1
    >>> sorted({i // 3 for i in choose_landmarks(6, 2, method="kmeans++", distance=d)})
    [0, 1]
    """
    n = _count("n (members)", n, 2, 10**9)
    m = _count("landmarks", m, 1, n)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed must be an integer; got {seed!r}")
    rng = np.random.default_rng(int(seed))
    if method == "random":
        return tuple(sorted(int(i) for i in rng.choice(n, size=m, replace=False)))
    if method != "kmeans++":
        raise ConfigError(f"method must be 'random' or 'kmeans++'; got {method!r}")
    if distance is None:
        raise ConfigError("method='kmeans++' needs `distance`, an n × n matrix known beforehand")
    d = np.asarray(distance, dtype=np.float64)
    if d.shape != (n, n) or not np.all(np.isfinite(d)):
        raise DataError(f"distance must be a finite {n} × {n} matrix; got shape {d.shape}")
    return kmeanspp_landmarks(n, m, seed=int(seed), row=lambda i: d[i])


def kmeanspp_landmarks(
    n: int, m: int, *, seed: int, row: Callable[[int], ArrayLike]
) -> tuple[int, ...]:
    """k-means++ landmarks that read one row of distances per landmark, when it is chosen.

    ``row(i)`` returns the (n,) distances from landmark i to every member — in a sweep,
    the paths of landmark i, measured on demand — so each draw uses only what is measured
    so far: "k-means++ on what is known". Same draws as ``choose_landmarks(method=
    "kmeans++")`` on a full matrix.

    >>> d = np.kron(1 - np.eye(2), np.ones((3, 3)))
    >>> asked = []
    >>> marks = kmeanspp_landmarks(6, 2, seed=0, row=lambda i: asked.append(i) or d[i])
    >>> len(asked), asked[0] in marks, sorted({i // 3 for i in marks})  # one row read
    (1, True, [0, 1])
    """
    rng = np.random.default_rng(int(seed))
    chosen = [int(rng.integers(n))]
    first = np.asarray(row(chosen[0]), dtype=np.float64)
    if first.shape != (n,) or not np.all(np.isfinite(first)):
        raise DataError(f"the distances of landmark {chosen[0]} must be {n} finite numbers")
    nearest = first**2  # (n,) squared distance to the nearest landmark
    while len(chosen) < m:
        weights = nearest.copy()
        weights[chosen] = 0.0
        total = float(weights.sum())
        if total <= 0:
            rest = np.setdiff1d(np.arange(n), chosen)
            nxt = int(rng.choice(rest))
        else:
            nxt = int(rng.choice(n, p=weights / total))
        chosen.append(nxt)
        if len(chosen) < m:  # the last landmark's row is not needed for the choice
            r = np.asarray(row(nxt), dtype=np.float64)
            if r.shape != (n,) or not np.all(np.isfinite(r)):
                raise DataError(f"the distances of landmark {nxt} must be {n} finite numbers")
            nearest = np.minimum(nearest, r**2)
    return tuple(sorted(chosen))


def landmark_pairs(n: int, landmarks: Sequence[int]) -> list[tuple[int, int]]:
    """Every pair (i, j), i < j, with i or j a landmark: the paths the method measures.

    >>> landmark_pairs(4, [1])
    [(0, 1), (1, 2), (1, 3)]
    """
    marks = set(int(i) for i in landmarks)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if i in marks or j in marks]


def landmark_fraction(n: int, m: int) -> float:
    """Measured pairs over all pairs: (m(n − m) + m(m − 1)/2) / (n(n − 1)/2).

    >>> round(landmark_fraction(100, 12), 4)  # 12·88 + 66 = 1,122 of 4,950
    0.2267
    """
    if n < 2:
        return 1.0
    m = min(m, n)
    return (m * (n - m) + m * (m - 1) / 2) / (n * (n - 1) / 2)


def measured_mask(n: int, landmarks: Sequence[int]) -> NDArray[np.bool_]:
    """(n, n) bool: True where the pair was measured (a landmark's row or column, diagonal).

    >>> measured_mask(3, [0]).astype(int).tolist()
    [[1, 1, 1], [1, 1, 0], [1, 0, 1]]
    """
    mask = np.eye(n, dtype=bool)
    idx = np.asarray(sorted(set(int(i) for i in landmarks)), dtype=np.int64)
    mask[idx, :] = True
    mask[:, idx] = True
    return mask


def _landmark_block(distance: ArrayLike, landmarks: Sequence[int]) -> tuple[FloatArray, NDArray]:
    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise DataError(f"distance must be a square N×N array; got shape {d.shape}")
    n = d.shape[0]
    idx = np.asarray(sorted(set(int(i) for i in landmarks)), dtype=np.int64)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise DataError(f"landmarks must be member indices in [0, {n - 1}]; got {list(landmarks)}")
    cols = d[:, idx]  # (N, m): every member to every landmark
    if not np.all(np.isfinite(cols)) or np.any(cols < 0):
        i, j = (int(v) for v in np.argwhere(~np.isfinite(cols) | (cols < 0))[0])
        raise DataError(
            f"the distance from member {i} to landmark {int(idx[j])} must be measured, finite "
            f"and non-negative; got {cols[i, j]}"
        )
    return cols, idx


def complete_affinity(
    distance: ArrayLike,
    landmarks: Sequence[int],
    *,
    delta: float,
    rcond: float = 1e-1,
) -> FloatArray:
    """The Nyström-completed affinity Ŝ (N × N) from the landmark columns of ``distance``.

    Only the columns (and rows) of ``distance`` at the landmarks are read; the rest may
    be NaN. Measured entries keep S = exp(−D²/2δ²); the others are (C W⁺ Cᵀ)ᵢⱼ clipped to
    [0, 1]; the diagonal is 1.

    >>> d = np.array([[0.0, 0.1, 2.0], [0.1, 0.0, np.nan], [2.0, np.nan, 0.0]])
    >>> s = complete_affinity(d, [0], delta=1.0)  # the (1, 2) entry is completed
    >>> bool(abs(s[1, 2] - s[0, 1] * s[0, 2]) < 1e-12)  # rank one: S₁₀ S₀₂ / S₀₀
    True
    """
    delta = float(delta)
    if not math.isfinite(delta) or delta <= 0:
        raise ConfigError(f"delta must be a finite number > 0; got {delta}")
    cols, idx = _landmark_block(distance, landmarks)
    c = np.exp(-(cols**2) / (2.0 * delta**2))  # (N, m)
    w = (c[idx] + c[idx].T) / 2.0  # (m, m), symmetric
    lam, u = np.linalg.eigh(w)  # ascending; W may be indefinite
    keep = lam > rcond * max(float(lam.max()), 0.0)  # the positive, well-resolved part
    root = u[:, keep] / np.sqrt(lam[keep])  # (m, r): W⁺ = root rootᵀ on that part
    f = c @ root  # (N, r) Nyström features
    s = f @ f.T  # (N, N)
    s = np.clip((s + s.T) / 2.0, 0.0, 1.0)
    s[:, idx] = c  # measured entries exactly
    s[idx, :] = c.T
    np.fill_diagonal(s, 1.0)
    return s


def _median_measured(distance: ArrayLike, landmarks: Sequence[int]) -> float:
    cols, idx = _landmark_block(distance, landmarks)
    n = cols.shape[0]
    mask = measured_mask(n, idx.tolist()) & ~np.eye(n, dtype=bool)
    full = np.full((n, n), np.nan)
    full[:, idx] = cols
    full[idx, :] = cols.T
    off = full[mask]
    med = float(np.median(off)) if off.size else 0.0
    return med if med > 0 else 1.0


def landmark_basins(
    distance: ArrayLike,
    landmarks: Sequence[int],
    *,
    n_basins: int | None = 2,
    delta: float | Literal["median"] = 1.0,
    seed: int = 0,
    centroids: Literal["mean", "kmeans"] = "mean",
    rcond: float = 1e-1,
) -> BasinFit:
    """Basins from the landmark columns of a distance matrix (NaN elsewhere is fine).

    Completes the affinity (:func:`complete_affinity`), turns it back into the distance
    D̂ = δ·√(−2 ln Ŝ) that gives exactly Ŝ, and runs :func:`~modeconn.stats.basins.find_basins`
    with the same options as all-pairs basins, so labels, embedding, centroids and scores
    mean the same. With every member a landmark this is ``find_basins(distance, …)``.

    >>> d = np.full((6, 6), np.nan); np.fill_diagonal(d, 0.0)
    >>> same = lambda i, j: (i < 3) == (j < 3)
    >>> for i in range(6):
    ...     for j in (0, 5):
    ...         if i != j: d[i, j] = d[j, i] = 0.1 if same(i, j) else 3.0
    >>> landmark_basins(d, [0, 5], n_basins=2).labels.tolist()
    [0, 0, 0, 1, 1, 1]
    """
    if isinstance(delta, str):
        if delta != "median":
            raise ConfigError(f"delta must be a number > 0 or 'median'; got {delta!r}")
        delta = _median_measured(distance, landmarks)
    s = complete_affinity(distance, landmarks, delta=float(delta), rcond=rcond)
    d_hat = float(delta) * np.sqrt(-2.0 * np.log(np.clip(s, _MIN_SIMILARITY, 1.0)))
    np.fill_diagonal(d_hat, 0.0)
    return find_basins(d_hat, n_basins=n_basins, delta=float(delta), seed=seed, centroids=centroids)
