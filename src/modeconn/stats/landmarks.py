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
- Landmarks are chosen at random with a seed (the default), by k-means++ seeding
  (Arthur & Vassilvitskii 2007) — each next landmark drawn with probability ∝ its squared
  distance to the nearest landmark so far, which spreads landmarks over basins — or by
  farthest-point ("MaxMin") selection (Gonzalez 1985; the landmark choice de Silva &
  Tenenbaum 2004 recommend for landmark MDS) — each next landmark the member farthest from
  every landmark so far, the first drawn with the seed. Both sequential rules read only
  the rows of the landmarks chosen before (:func:`sequential_landmarks`), so a sweep runs
  them on the paths it has measured.
- ``completion="triangle"`` completes the *distance* instead of the affinity: an
  unmeasured D_ij gets the midpoint of the bounds that the triangle inequality through
  each landmark l would give, max_l |D_il − D_jl| ≤ D_ij ≤ min_l (D_il + D_jl)
  (:func:`complete_distance`; the convexity gap is not a metric, so these are estimates,
  not bounds), and the all-pairs spectral step runs on that matrix.

:func:`replay_landmarks` simulates a landmark study exactly on a complete all-pairs
matrix (a landmark sweep measures its paths as all pairs do), which is how
``benchmarks/landmarks_replay.py`` compares every choice, completion and m in seconds;
what it found is in docs/method.md ("What landmarks reach").

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
    "CHOICES",
    "COMPLETIONS",
    "choose_landmarks",
    "complete_affinity",
    "complete_distance",
    "farthest_landmarks",
    "kmeanspp_landmarks",
    "landmark_basins",
    "landmark_fraction",
    "landmark_pairs",
    "measured_mask",
    "replay_landmarks",
    "sequential_landmarks",
]

Choice = Literal["random", "kmeans++", "farthest"]
Completion = Literal["nystrom", "triangle"]
CHOICES: tuple[str, ...] = ("random", "kmeans++", "farthest")
# choices that read the measured rows of the landmarks before them (a staged sweep)
SEQUENTIAL: tuple[str, ...] = ("kmeans++", "farthest")
COMPLETIONS: tuple[str, ...] = ("nystrom", "triangle")

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
    method: Choice = "random",
    distance: ArrayLike | None = None,
) -> tuple[int, ...]:
    """Indices of m landmark members out of n, ascending.

    ``method="random"`` draws m distinct members uniformly with ``seed``.
    ``method="kmeans++"`` and ``"farthest"`` need ``distance``, an n × n matrix (known
    beforehand, or in a replay the all-pairs matrix): :func:`kmeanspp_landmarks` and
    :func:`farthest_landmarks` on its rows.

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
    if method not in SEQUENTIAL:
        raise ConfigError(f"method must be one of {', '.join(CHOICES)}; got {method!r}")
    if distance is None:
        raise ConfigError(f"method={method!r} needs `distance`, an n × n matrix known beforehand")
    d = np.asarray(distance, dtype=np.float64)
    if d.shape != (n, n) or not np.all(np.isfinite(d)):
        raise DataError(f"distance must be a finite {n} × {n} matrix; got shape {d.shape}")
    return sequential_landmarks(n, m, seed=int(seed), row=lambda i: d[i], method=method)


def sequential_landmarks(
    n: int, m: int, *, seed: int, row: Callable[[int], ArrayLike], method: Choice
) -> tuple[int, ...]:
    """:func:`kmeanspp_landmarks` or :func:`farthest_landmarks`, by ``method``.

    >>> d = np.kron(1 - np.eye(2), np.ones((3, 3)))
    >>> sequential_landmarks(6, 2, seed=0, row=lambda i: d[i], method="farthest")  # 5, then 0
    (0, 5)
    """
    if method == "kmeans++":
        return kmeanspp_landmarks(n, m, seed=seed, row=row)
    if method == "farthest":
        return farthest_landmarks(n, m, seed=seed, row=row)
    raise ConfigError(f"a sequential landmark choice is 'kmeans++' or 'farthest'; got {method!r}")


def _read_row(row: Callable[[int], ArrayLike], i: int, n: int) -> FloatArray:
    r = np.asarray(row(i), dtype=np.float64)
    if r.shape != (n,) or not np.all(np.isfinite(r)):
        raise DataError(f"the distances of landmark {i} must be {n} finite numbers")
    return r


def farthest_landmarks(
    n: int, m: int, *, seed: int, row: Callable[[int], ArrayLike]
) -> tuple[int, ...]:
    """Farthest-point ("MaxMin") landmarks, reading one row of distances per landmark.

    The first landmark is drawn uniformly with ``seed``; each next one is the member whose
    distance to its nearest landmark so far is largest (Gonzalez 1985, the 2-approximation
    of the k-centre problem; de Silva & Tenenbaum 2004 recommend it for landmark MDS),
    ties to the lowest index. Deterministic after the first draw, it covers the population
    like k-means++ but also picks its outliers, which k-means++ only does with
    probability ∝ their squared distance. Like :func:`kmeanspp_landmarks` it reads
    ``row(i)`` when landmark i is chosen, and not for the last landmark.

    >>> d = np.kron(1 - np.eye(2), np.ones((3, 3)))
    >>> sorted({i // 3 for i in farthest_landmarks(6, 2, seed=0, row=lambda i: d[i])})
    [0, 1]
    """
    n = _count("n (members)", n, 2, 10**9)
    m = _count("landmarks", m, 1, n)
    rng = np.random.default_rng(int(seed))
    chosen = [int(rng.integers(n))]
    nearest = _read_row(row, chosen[0], n)  # (n,) distance to the nearest landmark
    while len(chosen) < m:
        gap = nearest.copy()
        gap[chosen] = -np.inf
        nxt = int(np.argmax(gap))
        chosen.append(nxt)
        if len(chosen) < m:
            nearest = np.minimum(nearest, _read_row(row, nxt, n))
    return tuple(sorted(chosen))


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
    nearest = _read_row(row, chosen[0], n) ** 2  # (n,) squared distance to the nearest landmark
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
            nearest = np.minimum(nearest, _read_row(row, nxt, n) ** 2)
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


def complete_distance(distance: ArrayLike, landmarks: Sequence[int]) -> FloatArray:
    """The distance completed through the landmarks by the triangle inequality (N × N).

    Only the landmark columns (and rows) of ``distance`` are read; the rest may be NaN.
    Measured entries are kept; an unmeasured D_ij becomes the midpoint of
    max_l |D_il − D_jl| and min_l (D_il + D_jl) over the landmarks l — the interval a
    metric would confine it to (the convexity gap is no metric: an estimate, not a bound).
    Two members with the same distances to every landmark get |D_il − D_jl| = 0 and an
    estimate of min_l D_il; the lower end is what separates basins (a member near landmark
    l and one far from it), the upper end what keeps two far members of one basin apart.

    >>> d = np.array([[0.0, 0.1, 2.0], [0.1, 0.0, np.nan], [2.0, np.nan, 0.0]])
    >>> complete_distance(d, [0])[1, 2]  # between |0.1 − 2.0| = 1.9 and 0.1 + 2.0 = 2.1
    np.float64(2.0)
    """
    cols, idx = _landmark_block(distance, landmarks)  # (N, m)
    n = cols.shape[0]
    lower = np.zeros((n, n))
    upper = np.full((n, n), np.inf)
    for col in cols.T:  # one landmark at a time: (N, N) memory, not (N, N, m)
        lower = np.maximum(lower, np.abs(col[:, None] - col[None, :]))
        upper = np.minimum(upper, col[:, None] + col[None, :])
    d = (lower + upper) / 2.0
    d[:, idx] = cols  # measured entries exactly
    d[idx, :] = cols.T
    np.fill_diagonal(d, 0.0)
    return d


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
    completion: Completion = "nystrom",
) -> BasinFit:
    """Basins from the landmark columns of a distance matrix (NaN elsewhere is fine).

    ``completion="nystrom"`` completes the affinity (:func:`complete_affinity`) and turns
    it back into the distance D̂ = δ·√(−2 ln Ŝ) that gives exactly Ŝ; ``"triangle"``
    completes the distance itself (:func:`complete_distance`). Either D̂ goes to
    :func:`~modeconn.stats.basins.find_basins` with the same options as all-pairs basins,
    so labels, embedding, centroids and scores mean the same; ``delta="median"`` is the
    median of the *measured* distances for both. With every member a landmark this is
    ``find_basins(distance, …)``.

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
    if completion == "triangle":
        d_hat = complete_distance(distance, landmarks)
    elif completion == "nystrom":
        s = complete_affinity(distance, landmarks, delta=float(delta), rcond=rcond)
        d_hat = float(delta) * np.sqrt(-2.0 * np.log(np.clip(s, _MIN_SIMILARITY, 1.0)))
        np.fill_diagonal(d_hat, 0.0)
    else:
        raise ConfigError(f"completion must be one of {', '.join(COMPLETIONS)}; got {completion!r}")
    return find_basins(d_hat, n_basins=n_basins, delta=float(delta), seed=seed, centroids=centroids)


def replay_landmarks(
    distance: ArrayLike,
    m: int | None,
    *,
    choice: Choice = "random",
    landmark_seed: int = 0,
    completion: Completion = "nystrom",
    n_basins: int | None = 2,
    delta: float | Literal["median"] = 1.0,
    seed: int = 0,
    centroids: Literal["mean", "kmeans"] = "mean",
) -> tuple[tuple[int, ...] | None, BasinFit]:
    """What a ``basins.landmarks: m`` study would find, replayed on an all-pairs matrix.

    A landmark sweep measures each path it measures exactly as an all-pairs sweep does
    (same weights, sample and α grid give the same curve), so masking a complete matrix
    to the landmark pairs simulates it exactly: the same landmarks (drawn from the
    same rows), the same measured values, the same basins. ``distance`` must be in the
    order the sweep draws from — the member ids sorted (:func:`modeconn.results.landmark_ids`)
    — and complete off the diagonal. Returns (landmark indices, the fit); (None, the
    all-pairs fit) when m is None or m ≥ N − 1, where the sweep measures every pair.

    >>> d = np.kron(1 - np.eye(2), np.ones((4, 4))) + 0.1 * (1 - np.eye(8))
    >>> marks, fit = replay_landmarks(d, 3, choice="farthest", delta="median")
    >>> len(marks), fit.labels.tolist()
    (3, [0, 0, 0, 0, 1, 1, 1, 1])
    """
    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or not np.all(np.isfinite(d)):
        raise DataError(f"a replay needs the complete N×N distance matrix; got shape {d.shape}")
    n = d.shape[0]
    options = {"n_basins": n_basins, "delta": delta, "seed": seed, "centroids": centroids}
    if m is None or m >= n - 1:
        return None, find_basins(d, **options)  # type: ignore[arg-type]
    if choice == "random":
        marks = choose_landmarks(n, m, seed=landmark_seed)
    else:
        marks = sequential_landmarks(n, m, seed=landmark_seed, row=lambda i: d[i], method=choice)
    seen = np.where(measured_mask(n, marks), d, np.nan)
    return marks, landmark_basins(seen, marks, completion=completion, **options)  # type: ignore[arg-type]
