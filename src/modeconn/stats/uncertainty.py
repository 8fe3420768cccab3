"""How much of a basin analysis is the evaluation sample? Bootstrap over the examples.

Juneja et al. (2023) evaluate every path on one random sample of 512 examples shared by
all pairs, and report no uncertainty from that choice (their Appendix F.2 only notes that
256 examples kept the clusters but lowered |r|). The store keeps every point's
per-example losses, so the sample can be resampled after the fact at no model cost:

* **bootstrap** — draw the n examples with replacement B times (one draw shared by every
  pair and α, as the sample itself is shared); each draw gives every curve's mean loss,
  hence a distance matrix, basins and scores. From the B draws: a percentile interval for
  every distance entry, how often each member stays in its basin (labels matched to the
  full-sample basins by the best one-to-one assignment), the adjusted Rand index of each
  draw against the full-sample basins, and the interval of the score ↔ OOD correlation.
* **sub-samples** — draw m < n examples without replacement (``repeats`` times per m) and
  re-cluster: the agreement with the full-sample basins as the sample shrinks (256 vs 512
  in the paper's terms).

Pure functions: arrays in, arrays and frames out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from modeconn.errors import ConfigError, DataError, ModeconnError
from modeconn.measures.barriers import curve_distance
from modeconn.stats.basins import find_basins

FloatArray = NDArray[np.float64]
Delta = float | Literal["median"]
Centroids = Literal["mean", "kmeans"]


def resample_weights(n: int, *, samples: int, seed: int = 0) -> FloatArray:
    """(B, n) weights of a bootstrap over n examples: draw counts divided by n.

    A weighted mean with row b equals the mean over bootstrap draw b.

    >>> w = resample_weights(4, samples=3, seed=0)
    >>> w.shape, bool(np.allclose(w.sum(axis=1), 1.0))
    ((3, 4), True)
    """
    if n < 2:
        raise DataError(f"a bootstrap over the sample needs at least 2 examples; got {n}")
    if samples < 1:
        raise ConfigError(f"analyses.uncertainty.samples must be ≥ 1; got {samples}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))  # (B, n) drawn example positions
    counts = np.zeros((samples, n))
    np.add.at(counts, (np.arange(samples)[:, None], idx), 1.0)
    return counts / n


def subsample_weights(n: int, size: int, *, repeats: int, seed: int = 0) -> FloatArray:
    """(R, n) weights of `repeats` sub-samples of `size` examples drawn without replacement."""
    if not 2 <= size <= n:
        raise ConfigError(
            f"analyses.uncertainty.sizes: a sub-sample size must lie in [2, {n}] (the stored "
            f"sample has {n} examples); got {size}"
        )
    rng = np.random.default_rng(seed)
    w = np.zeros((repeats, n))
    for r in range(repeats):
        w[r, rng.choice(n, size=size, replace=False)] = 1.0 / size
    return w


def distance_samples(
    examples: FloatArray,
    weights: FloatArray,
    pairs: Sequence[tuple[int, int]],
    n_members: int,
    *,
    alphas: Sequence[float],
    metric: str,
) -> FloatArray:
    """(B, N, N) distance matrices, one per weighting of the examples.

    ``examples`` is (P, A, n): per pair (in the order of ``pairs``), per α, the loss of
    every example of the shared sample. Each row of ``weights`` (B, n) turns it into mean
    curves (B, P, A), and ``metric`` turns each curve into a distance.

    A path that saw only some of the examples (``paths.sequential`` stopped it after its
    first m) has NaN for the others: its curve is the weighted mean over the examples it
    saw, the draw's weights restricted to them and renormalised — the same draw, read on
    that path's examples (a draw that picks none of them, probability ≈ e^−m, falls back
    to their plain mean).

    >>> ex = np.array([[[1.0, 3.0, np.nan]]] * 2)  # two pairs, one α, the 3rd unseen
    >>> w = np.array([[0.5, 0.0, 0.5]])  # draw: example 0 and example 2
    >>> curves = _mean_curves(ex, w)  # example 2 unseen: all weight on example 0
    >>> curves[0, :, 0].tolist()
    [1.0, 1.0]
    """
    ex = np.asarray(examples, dtype=np.float64)
    if ex.ndim != 3 or ex.shape[0] != len(pairs) or ex.shape[1] != len(alphas):
        raise DataError(
            f"examples must be (pairs, alphas, examples) = ({len(pairs)}, {len(alphas)}, n); "
            f"got {ex.shape}"
        )
    curves = _mean_curves(ex, weights)  # (B, P, A) mean loss per draw
    a = np.asarray(alphas, dtype=np.float64)
    out = np.zeros((weights.shape[0], n_members, n_members))
    for b in range(weights.shape[0]):
        for p, (i, j) in enumerate(pairs):
            out[b, i, j] = out[b, j, i] = curve_distance(curves[b, p], a, metric)
    return out


def _mean_curves(ex: FloatArray, weights: FloatArray) -> FloatArray:
    """(B, P, A) weighted mean curves; NaN examples of a path (unseen) are left out."""
    seen = np.isfinite(ex[:, 0, :])  # (P, n) examples each path saw
    if seen.all():
        return np.einsum("pan,bn->bpa", ex, weights)
    total = np.einsum("pan,bn->bpa", np.where(seen[:, None, :], ex, 0.0), weights)
    mass = np.einsum("pn,bn->bp", seen.astype(np.float64), weights)  # (B, P)
    plain = np.nanmean(ex, axis=2)  # (P, A) the fallback of a draw that missed a path
    out = np.where(mass[..., None] > 0, total / np.maximum(mass, 1e-300)[..., None], plain)
    return np.asarray(out, dtype=np.float64)


def align_labels(labels: ArrayLike, reference: ArrayLike) -> NDArray[np.int64]:
    """`labels` renamed to agree best with `reference` (one-to-one, Hungarian assignment).

    >>> align_labels([1, 1, 0, 0], [0, 0, 1, 1]).tolist()
    [0, 0, 1, 1]
    """
    lab, ref = np.asarray(labels, dtype=np.int64), np.asarray(reference, dtype=np.int64)
    k = int(max(lab.max(), ref.max())) + 1
    overlap = np.zeros((k, k))
    np.add.at(overlap, (lab, ref), 1.0)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    return np.array([mapping[int(v)] for v in lab], dtype=np.int64)


def _fit(d: FloatArray, *, n_basins: int, delta: Delta, seed: int, centroids: Centroids) -> Any:
    return find_basins(d, n_basins=n_basins, delta=delta, seed=seed, centroids=centroids)


@dataclass(frozen=True)
class SampleUncertainty:
    """What the bootstrap over the evaluation sample says about one basin analysis.

    Attributes:
        members: member ids, in matrix order.
        distance_lo, distance_hi: (N, N) percentile interval of every distance entry.
        keep: (N,) share of draws in which each member stays in its full-sample basin.
        ari: (B,) adjusted Rand index of each usable draw's basins vs. the full sample's.
        correlation: (B,) Pearson r of the draw's basin score with ``ood`` (NaN if none).
        samples: draws made; failed: draws whose clustering found a single basin.
        confidence, seed: of the intervals and the draws.
    """

    members: tuple[str, ...]
    distance_lo: FloatArray
    distance_hi: FloatArray
    keep: FloatArray
    ari: FloatArray
    correlation: FloatArray
    samples: int
    failed: int
    confidence: float
    seed: int

    def keep_frame(self, labels: Sequence[int]) -> pd.DataFrame:
        """Per member: its basin and how often the draws kept it there."""
        return pd.DataFrame(
            {"basin": np.asarray(labels, dtype=np.int64), "kept": self.keep},
            index=pd.Index(self.members, name="id"),
        )

    def interval(self, values: FloatArray) -> tuple[float, float]:
        v = values[np.isfinite(values)]
        if not v.size:
            return (math.nan, math.nan)
        q = (1 - self.confidence) / 2
        return float(np.quantile(v, q)), float(np.quantile(v, 1 - q))

    def summary(self) -> dict[str, Any]:
        lo, hi = self.interval(self.ari)
        rlo, rhi = self.interval(self.correlation)
        usable = self.samples - self.failed
        return {
            "draws": self.samples,
            "usable draws": usable,
            "ARI vs. full sample: mean": float(np.mean(self.ari)) if usable else math.nan,
            "ARI interval": (lo, hi),
            "draws with identical basins": float(np.mean(np.isclose(self.ari, 1.0)))
            if usable
            else 0.0,
            "least-kept member": float(self.keep.min()) if self.keep.size else math.nan,
            "score ↔ OOD r interval": (rlo, rhi),
        }


def sample_uncertainty(
    examples: FloatArray,
    pairs: Sequence[tuple[int, int]],
    members: Sequence[str],
    reference_labels: ArrayLike,
    *,
    alphas: Sequence[float],
    metric: str,
    n_basins: int,
    delta: Delta,
    ood: ArrayLike | None = None,
    samples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    cluster_seed: int = 0,
    centroids: Centroids = "mean",
) -> SampleUncertainty:
    """Bootstrap the evaluation sample: distance intervals, basin keeping, ARI, r.

    ``examples`` is (P, A, n) per-example losses (see :func:`distance_samples`);
    ``reference_labels`` the full-sample basins; ``ood`` an optional per-member metric
    whose correlation with each draw's basin score is recorded. ``seed`` draws the
    resamples; ``cluster_seed`` is the clustering's seed (give the one the reference
    basins were found with, so a draw differs from them only by its data).
    """
    n_members = len(members)
    ref = np.asarray(reference_labels, dtype=np.int64)
    w = resample_weights(np.asarray(examples).shape[2], samples=samples, seed=seed)
    dist = distance_samples(examples, w, pairs, n_members, alphas=alphas, metric=metric)
    kept = np.zeros(n_members)
    aris, rs = [], []
    failed = 0
    y = None if ood is None else np.asarray(ood, dtype=np.float64)
    for b in range(samples):
        try:
            fit = _fit(
                dist[b], n_basins=n_basins, delta=delta, seed=cluster_seed, centroids=centroids
            )
        except ModeconnError:
            failed += 1
            continue
        lab = align_labels(fit.labels, ref)
        kept += lab == ref
        aris.append(adjusted_rand_score(ref, lab))
        if y is not None and np.ptp(fit.scores) > 0 and np.ptp(y) > 0:
            # the score's sign follows the basin order, which a draw may swap: orient it
            # like the full sample (members of basin 0 on the negative side)
            s = fit.scores if np.mean(fit.scores[lab == 0]) <= 0 else -fit.scores
            rs.append(float(np.corrcoef(s, y)[0, 1]))
    usable = samples - failed
    q = (1 - confidence) / 2
    return SampleUncertainty(
        members=tuple(members),
        distance_lo=np.quantile(dist, q, axis=0),
        distance_hi=np.quantile(dist, 1 - q, axis=0),
        keep=kept / max(usable, 1),
        ari=np.asarray(aris, dtype=np.float64),
        correlation=np.asarray(rs, dtype=np.float64) if rs else np.full(0, np.nan),
        samples=samples,
        failed=failed,
        confidence=confidence,
        seed=seed,
    )


def size_stability(
    examples: FloatArray,
    pairs: Sequence[tuple[int, int]],
    n_members: int,
    reference_labels: ArrayLike,
    *,
    sizes: Sequence[int],
    alphas: Sequence[float],
    metric: str,
    n_basins: int,
    delta: Delta,
    repeats: int = 50,
    seed: int = 0,
    cluster_seed: int = 0,
    centroids: Centroids = "mean",
) -> pd.DataFrame:
    """Per sub-sample size: agreement of the re-clustered basins with the full sample's.

    Columns: ``size``, ``repeats``, ``ari_mean``, ``ari_std``, ``identical`` (share of
    sub-samples giving the very same basins), ``failed`` (single-basin clusterings).
    """
    ref = np.asarray(reference_labels, dtype=np.int64)
    n = np.asarray(examples).shape[2]
    rows = []
    for size in sizes:
        w = subsample_weights(n, int(size), repeats=repeats, seed=seed + int(size))
        dist = distance_samples(examples, w, pairs, n_members, alphas=alphas, metric=metric)
        aris, failed = [], 0
        for r in range(repeats):
            try:
                fit = _fit(
                    dist[r], n_basins=n_basins, delta=delta, seed=cluster_seed, centroids=centroids
                )
            except ModeconnError:
                failed += 1
                continue
            aris.append(adjusted_rand_score(ref, fit.labels))
        a = np.asarray(aris, dtype=np.float64)
        rows.append(
            {
                "size": int(size),
                "repeats": repeats,
                "ari_mean": float(a.mean()) if a.size else math.nan,
                "ari_std": float(a.std(ddof=1)) if a.size > 1 else math.nan,
                "identical": float(np.mean(np.isclose(a, 1.0))) if a.size else math.nan,
                "failed": failed,
            }
        )
    return pd.DataFrame(rows)


def group_recovery(
    examples: FloatArray,
    pairs: Sequence[tuple[int, int]],
    groups: ArrayLike,
    *,
    alphas: Sequence[float],
    metric: str,
    n_basins: int,
    delta: Delta,
    samples: int = 200,
    seed: int = 0,
    cluster_seed: int = 0,
    centroids: Centroids = "mean",
) -> FloatArray:
    """Do the basins recover known groups? The ARI of each bootstrap draw's basins against
    `groups` (one label per member, e.g. the mechanism each member was trained to use).

    The draws are those of :func:`sample_uncertainty` (the shared sample resampled with
    replacement, one draw for every pair and α; ``examples`` is (P, A, n)); a draw whose
    clustering finds a single basin counts as ARI 0 (it recovers nothing). Returns the
    (B,) ARIs; their spread is the uncertainty the evaluation sample puts on the
    recovery that :func:`modeconn.stats.basins.basin_recovery` gives on the full sample.
    """
    grp = np.asarray(groups)
    w = resample_weights(np.asarray(examples).shape[2], samples=samples, seed=seed)
    dist = distance_samples(examples, w, pairs, len(grp), alphas=alphas, metric=metric)
    out = np.zeros(samples)
    for b in range(samples):
        try:
            fit = _fit(
                dist[b], n_basins=n_basins, delta=delta, seed=cluster_seed, centroids=centroids
            )
        except ModeconnError:
            continue
        out[b] = adjusted_rand_score(grp, fit.labels)
    return out
