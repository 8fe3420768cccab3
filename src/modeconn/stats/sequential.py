"""Sequential samples: stop evaluating a path once its convexity gap is known well enough.

Paper 1 evaluates every path on one fixed sample of 512 examples shared by every pair
(Juneja et al. 2023, §3). The convexity gap of a pair far from any other basin's scale
is settled after a fraction of that sample; only pairs near the decision need all of it.
Sequential sampling evaluates a path on *blocks* of the fixed sample, in the sample's
order (block b is examples [bB, (b+1)B)), and after each block resamples the examples
seen so far with replacement (Efron & Tibshirani 1993, ch. 13; the same resampling over
examples as :mod:`modeconn.stats.uncertainty`). Evaluation stops when the gap is known
to ``tolerance`` — but never before ``min_blocks`` blocks, so a lucky first block cannot
end a path — or when the sample is exhausted.

**Which interval.** The percentile interval of the convexity gap itself collapses to
[0, 0] whenever every resample's curve is convex — after 40 examples a pair can look
flat and be a barrier of 0.1 on the whole sample (measured on ``demo-population-100``:
a gap off by 0.12 with a "zero-width" interval). So the rule bounds the gap through the
curve instead: for each α the percentile interval of the mean loss minus the endpoints'
chord (paired over the same resampled examples, never clipped), and the path stops when
every α's interval is narrower than ``tolerance``. A curve known to ±w/2 at every α
has a lower convex hull known to ±w/2 too, so its gap is known to ±w.

Every block's per-example losses are kept, so the bootstrap over the sample still works
on the examples seen; the mean curve of a stopped path is over its first k·B examples,
the same examples at every α (endpoints included), so its gap is an unbiased-in-design
estimate of the full-sample gap with the stated interval.

**Stopping on what the basins read.** The basins see a pair only through its affinity
S = exp(−CG² / 2δ²) (:func:`modeconn.stats.basins.affinity`). A pair far outside δ has
S ≈ 0 over a wide range of gaps, and a near-identical pair S ≈ 1: their gap need not be
known to ``tolerance`` for the basins to be settled. With ``affinity`` ε (and the kernel's
δ), a path also stops once its affinity is known to ε: with the gap known to ±w as above,
S(max(0, CG − w)) − S(CG + w) < ε. The affinity matrix is then known to ε entrywise
(to ε·N in Frobenius norm), and the spectral embedding moves by at most that over the
eigengap (Davis & Kahan 1970; von Luxburg 2007, §7): a label flips only for a member that
sits within that distance of a basin boundary. ``benchmarks/landmarks.py`` measures the
basins' agreement with all pairs rather than assume it.

The study option ``paths.sequential`` (:mod:`modeconn.config.paths`) runs this rule in
the sweep: :mod:`modeconn.engine.blockwise` evaluates each path block by block and stores
the examples it saw; :func:`sequential_gap` is the same loop over any block evaluator
(``benchmarks/landmarks.py --replay`` replays it on a complete sweep's stored losses).

Pure numpy: no torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modeconn.errors import ConfigError, DataError
from modeconn.measures.barriers import convexity_gap

__all__ = [
    "SequentialResult",
    "affinity_width",
    "bootstrap_gap_interval",
    "curve_interval_width",
    "sequential_gap",
    "should_stop",
]


@dataclass(frozen=True)
class SequentialResult:
    """What :func:`sequential_gap` found: the gap on the examples seen, and the cost."""

    gap: float
    interval: tuple[float, float]
    blocks: int  # blocks evaluated
    examples: int  # examples per α evaluated (blocks × block, or the sample's rest)
    stopped_early: bool  # True when the interval, not the sample's end, stopped it


def _curve_losses(losses: ArrayLike) -> NDArray[np.float64]:
    a = np.asarray(losses, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise DataError(
            f"per-example losses must be (n_alphas ≥ 2, n_examples ≥ 1); got shape {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise DataError("per-example losses must be finite")
    return a


def bootstrap_gap_interval(
    losses: ArrayLike,
    alphas: Sequence[float],
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the convexity gap over the examples (columns).

    ``losses`` is (n_alphas, n_examples): the per-example losses of one path at each α.

    >>> flat = np.ones((3, 50))  # every example has the same flat curve: no spread
    >>> bootstrap_gap_interval(flat, [0.0, 0.5, 1.0])
    (0.0, 0.0)
    """
    a = _curve_losses(losses)
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    draws = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n) example indices
    gaps = np.array([convexity_gap(a[:, d].mean(axis=1), alphas) for d in draws])
    lo, hi = np.quantile(gaps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def should_stop(
    losses: ArrayLike,
    alphas: Sequence[float],
    *,
    block: int,
    min_blocks: int,
    tolerance: float,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    affinity: float | None = None,
    delta: float | None = None,
) -> bool:
    """Whether a path evaluated on the examples of ``losses`` may stop.

    False while fewer than ``min_blocks`` whole blocks are seen, whatever the losses;
    then True when, at every α, the bootstrap interval of the mean loss above the
    endpoints' chord is narrower than ``tolerance`` — or, with ``affinity`` ε and the
    kernel's ``delta``, when the pair's affinity is known to ε (:func:`affinity_width`).

    >>> rng = np.random.default_rng(0)
    >>> noisy = rng.normal(1.0, 0.01, size=(3, 64))
    >>> should_stop(noisy[:, :32], [0, .5, 1], block=32, min_blocks=2, tolerance=1.0)
    False
    >>> should_stop(noisy, [0, .5, 1], block=32, min_blocks=2, tolerance=1.0)
    True
    >>> far = rng.normal([[0.1], [3.0], [0.1]], 0.5, size=(3, 64))  # a gap of ~2.9 ± 0.2
    >>> should_stop(far, [0, .5, 1], block=32, min_blocks=2, tolerance=0.05)
    False
    >>> should_stop(far, [0, .5, 1], block=32, min_blocks=2, tolerance=0.05,
    ...             affinity=0.01, delta=0.5)  # S ≈ exp(−17) whatever the gap's last digit
    True
    """
    _check(block, min_blocks, tolerance)
    _check_affinity(affinity, delta)
    a = _curve_losses(losses)
    if a.shape[1] // block < min_blocks:
        return False
    width = curve_interval_width(a, alphas, n_boot=n_boot, level=level, seed=seed)
    if width < tolerance:
        return True
    if affinity is None or delta is None:
        return False
    gap = convexity_gap(a.mean(axis=1), alphas)
    return affinity_width(gap, width, delta=delta) < affinity


def affinity_width(gap: float, width: float, *, delta: float) -> float:
    """How far apart the affinities exp(−g² / 2δ²) at the two ends of the gap's range
    [max(0, gap − width), gap + width] are: the most the pair's basin affinity can move.

    >>> round(affinity_width(0.0, 0.1, delta=1.0), 4)  # 1 − exp(−0.01/2)
    0.005
    >>> round(affinity_width(1.0, 0.1, delta=1.0), 4)  # exp(−0.81/2) − exp(−1.21/2)
    0.1209
    >>> affinity_width(5.0, 0.5, delta=1.0) < 1e-4  # far outside δ: settled
    True
    """
    lo, hi = max(0.0, gap - width), gap + width
    return float(np.exp(-(lo**2) / (2 * delta**2)) - np.exp(-(hi**2) / (2 * delta**2)))


def curve_interval_width(
    losses: ArrayLike,
    alphas: Sequence[float],
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> float:
    """The widest, over α, percentile bootstrap interval of the mean loss minus the chord.

    >>> curve_interval_width(np.ones((3, 20)), [0.0, 0.5, 1.0])
    0.0
    """
    a = _curve_losses(losses)
    x = np.asarray(alphas, dtype=np.float64)
    t = (x - x[0]) / (x[-1] - x[0])  # (n_alphas,) position along the chord
    above = a - (a[0][None, :] * (1 - t)[:, None] + a[-1][None, :] * t[:, None])  # (n_α, n)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
    means = above[:, draws].mean(axis=2)  # (n_alphas, n_boot)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return float(np.max(hi - lo))


def _check_affinity(affinity: float | None, delta: float | None) -> None:
    if affinity is None:
        return
    if not (isinstance(affinity, int | float) and 0 < affinity < 1):
        raise ConfigError(f"paths.sequential.affinity must be in (0, 1); got {affinity!r}")
    if delta is not None and not (np.isfinite(delta) and delta > 0):
        raise ConfigError(f"the affinity's δ must be a number > 0; got {delta!r}")


def _check(block: int, min_blocks: int, tolerance: float) -> None:
    for name, v in (("block", block), ("min_blocks", min_blocks)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"paths.sequential.{name} must be an integer ≥ 1; got {v!r}")
    if not (isinstance(tolerance, int | float) and np.isfinite(tolerance) and tolerance > 0):
        raise ConfigError(f"paths.sequential.tolerance must be a number > 0; got {tolerance!r}")


def sequential_gap(
    evaluate_block: Callable[[int], ArrayLike],
    alphas: Sequence[float],
    n_examples: int,
    *,
    block: int,
    min_blocks: int,
    tolerance: float,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    affinity: float | None = None,
    delta: float | None = None,
) -> SequentialResult:
    """Evaluate blocks 0, 1, … of an ``n_examples`` sample until :func:`should_stop` (with
    ``affinity`` and ``delta`` passed on to it).

    ``evaluate_block(b)`` returns the (n_alphas, examples in block b) losses of block b
    (the last block may be short).

    >>> rng = np.random.default_rng(1)
    >>> sample = rng.normal([[1.0], [1.5], [1.0]], 0.05, size=(3, 512))
    >>> r = sequential_gap(lambda b: sample[:, 64 * b : 64 * (b + 1)], [0, .5, 1], 512,
    ...                    block=64, min_blocks=2, tolerance=0.05)
    >>> r.blocks, r.stopped_early, round(r.gap, 1)
    (2, True, 0.5)
    """
    _check(block, min_blocks, tolerance)
    n_blocks = -(-int(n_examples) // block)
    seen: list[NDArray[np.float64]] = []
    stopped = False
    for b in range(n_blocks):
        seen.append(_curve_losses(evaluate_block(b)))
        losses = np.concatenate(seen, axis=1)
        if b + 1 < n_blocks and should_stop(
            losses,
            alphas,
            block=block,
            min_blocks=min_blocks,
            tolerance=tolerance,
            n_boot=n_boot,
            level=level,
            seed=seed,
            affinity=affinity,
            delta=delta,
        ):
            stopped = True
            break
    losses = np.concatenate(seen, axis=1)
    interval = bootstrap_gap_interval(losses, alphas, n_boot=n_boot, level=level, seed=seed)
    return SequentialResult(
        gap=convexity_gap(losses.mean(axis=1), alphas),
        interval=interval,
        blocks=len(seen),
        examples=int(losses.shape[1]),
        stopped_early=stopped,
    )
