"""A path unit's points built from pieces of the sample: sequential samples, and completion.

:func:`unit_points` decides which α of a unit to evaluate and on which examples, given
the points an earlier sweep stored for it; the sweep (:mod:`modeconn.engine.sweep`) hands
it an ``evaluate_rows(alpha, lo, hi)`` that runs one forward pass of θ(α) over the
examples at sample positions [lo, hi) (the whole split when that is [0, n)).

**Sequential samples** (``paths.sequential``, :class:`BlockRule`; the rule is
:func:`modeconn.stats.sequential.should_stop`). The unit is evaluated in *rounds*: round
r covers the sample prefix [0, e_r), e_r = one more block than e_{r−1} (blocks in sample
order, the same for every α and every path, so losses are paired across α). Each round
first extends every α evaluated so far by the new block, then — with ``paths.tolerance``
— lets the adaptive grid (:func:`modeconn.stats.adaptive_grid.adaptive_gap`) ask for more
α on the prefix's mean curve (a new α is evaluated on the whole prefix), and finally asks
the rule whether the curve is known well enough. It never stops before ``min_blocks``
blocks, nor while fewer than one block is seen; at the sample's end it stops anyway. All
stored points of the unit, endpoints included, are then on the same examples [0, e):
interior points hold the losses of every block they saw; α = 0 and 1 are the endpoints'
member points restricted to [0, e) (loss and per-example losses; their task metrics stay
those of the whole sample — the store keeps no per-example predictions of members).

**Completion.** A point stored on a prefix (a sequential sweep's) that a later sweep needs
on more examples is *extended*: only the missing examples are evaluated, its per-example
losses concatenated and its mean combined in float64. Accuracy combines exactly (a mean
over examples); a metric that does not (F1, MCC) cannot be combined without the stored
prefix's predictions, so such a point is re-evaluated on the whole prefix instead. A point
stored without per-example losses is re-evaluated whole as well.

BatchNorm models re-estimate their statistics at each new point (``eval.batchnorm:
reestimate``); a unit keeps each α's statistics after its first block and restores them
for later blocks (:meth:`~modeconn.engine.evaluate.Evaluator.restore_batchnorm`), so a
block costs its own examples only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from modeconn.data.base import Split, sample_block
from modeconn.engine.evaluate import EvalResult
from modeconn.errors import DataError
from modeconn.measures.barriers import convexity_gap
from modeconn.stats.adaptive_grid import adaptive_gap
from modeconn.stats.sequential import should_stop
from modeconn.store import MemberPoint, PathPoint, Store, UnitKey

RowsEvaluator = Callable[[float, int, int], EvalResult]
MERGEABLE = frozenset({"accuracy"})  # metrics that are means over examples


@dataclass(frozen=True)
class BlockRule:
    """``paths.sequential`` as the engine reads it (see :mod:`modeconn.config.paths`)."""

    tolerance: float
    block: int
    min_blocks: int = 2
    confidence: float = 0.95
    resamples: int = 200
    seed: int = 0
    affinity: float | None = None  # also stop once the basin affinity is known to this
    delta: float | None = None  # ... with this δ
    affinity_split: str | None = None  # ... on units of this split (basins.split)
    max_blocks: int | None = None  # stop here whatever the rule says (the δ pilot)

    def stops(self, losses: np.ndarray, alphas: Sequence[float], split: str) -> bool:
        """:func:`~modeconn.stats.sequential.should_stop` with this rule's options (the
        affinity only on ``affinity_split``)."""
        on = self.affinity is not None and split == self.affinity_split
        return should_stop(
            losses,
            alphas,
            block=self.block,
            min_blocks=self.min_blocks,
            tolerance=self.tolerance,
            n_boot=self.resamples,
            level=self.confidence,
            seed=self.seed,
            affinity=self.affinity if on else None,
            delta=self.delta if on else None,
        )


class BlockCache:
    """Sub-splits of the examples [lo, hi) of each split, built once per sweep.

    Every path uses the same blocks, so the engine moves each to its device once.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[int, int, int], tuple[Split, Split]] = {}

    def rows(self, split: Split, lo: int, hi: int) -> Split:
        if lo == 0 and hi == split.n:
            return split
        hit = self._items.get((id(split), lo, hi))
        if hit is None or hit[0] is not split:
            hit = (split, sample_block(split, lo, hi))  # the source kept alive beside it
            self._items[(id(split), lo, hi)] = hit
        return hit[1]


@dataclass
class _Piece:
    lo: int
    hi: int
    loss: float
    metrics: dict[str, float]
    losses: np.ndarray | None  # (hi − lo,) float32, sample order
    predictions: np.ndarray | None  # (hi − lo,) class indices, sample order


@dataclass
class _Partial:
    """One α evaluated on the sample prefix [0, hi), as pieces [0, h1), [h1, h2), …"""

    alpha: float
    pieces: list[_Piece] = field(default_factory=list)
    stored: PathPoint | None = None  # the stored point, while nothing was added to it

    @property
    def hi(self) -> int:
        return self.pieces[-1].hi if self.pieces else 0

    def extendable(self) -> bool:
        return all(
            p.losses is not None and (p.predictions is not None or set(p.metrics) <= MERGEABLE)
            for p in self.pieces
        )

    def losses(self) -> np.ndarray | None:
        if any(p.losses is None for p in self.pieces):
            return None
        return np.concatenate([p.losses for p in self.pieces])

    def mean(self) -> float:
        if len(self.pieces) == 1:
            return self.pieces[0].loss
        total = sum(p.loss * (p.hi - p.lo) for p in self.pieces)  # float64 sums
        return float(total / self.hi)

    def metrics(self, split: Split, cache: BlockCache) -> dict[str, float]:
        if len(self.pieces) == 1:
            return dict(self.pieces[0].metrics)
        if all(p.predictions is not None for p in self.pieces):
            prefix = cache.rows(split, 0, self.hi)  # the union of the pieces, scored whole
            preds = np.concatenate([p.predictions for p in self.pieces])
            return prefix.score(preds[prefix.order])
        names = set.intersection(*(set(p.metrics) for p in self.pieces))
        return {  # accuracy only (extendable): the example-weighted mean is exact
            m: sum(p.metrics[m] * (p.hi - p.lo) for p in self.pieces) / self.hi for m in names
        }


def _from_stored(p: PathPoint) -> _Partial:
    piece = _Piece(0, p.n_examples, p.loss, dict(p.metrics), p.example_losses, None)
    return _Partial(p.alpha, [piece], stored=p)


def _end_losses(end: MemberPoint, hi: int, what: str) -> np.ndarray:
    if end.example_losses is None:
        raise DataError(
            f"member '{end.member_id}' was stored without per-example losses on split "
            f"'{end.split}'; {what} needs them; rerun into a new store"
        )
    return np.asarray(end.example_losses[:hi], dtype=np.float64)


def path_point(
    key: UnitKey,
    alpha: float,
    loss: float,
    metrics: Mapping[str, float],
    examples: np.ndarray | None,
    n: int,
) -> PathPoint:
    """A row of unit `key` at `alpha`: the unit's keys with this point's values."""
    return PathPoint(
        member_a=key.member_a,
        member_b=key.member_b,
        hash_a=key.hash_a,
        hash_b=key.hash_b,
        path=key.path,
        grid=key.grid,
        alpha=alpha,
        split=key.split,
        sample_seed=key.sample_seed,
        sample_size=key.sample_size,
        loss=loss,
        metrics=dict(metrics),
        example_losses=examples,
        n_examples=n,
    )


def _end_row(key: UnitKey, alpha: float, end: MemberPoint, hi: int) -> PathPoint:
    """Endpoint row of a unit: the member point, restricted to the examples [0, hi)."""
    if hi == end.n_examples:
        loss, losses, n = end.loss, end.example_losses, end.n_examples
    else:
        losses = _end_losses(end, hi, "a path on a prefix of the sample")
        loss, n = float(losses.mean()), hi
    return path_point(key, alpha, loss, end.metrics, losses, n)


def round_ends(n: int, block: int, start: int) -> list[int]:
    """Prefix ends of the rounds: ``start`` (at least one block), then a block more each.

    >>> round_ends(100, 30, 0)
    [30, 60, 90, 100]
    >>> round_ends(100, 30, 45)  # a stored prefix of 45 examples sets the first round
    [45, 75, 100]
    """
    ends = [min(n, max(block, start))]
    while ends[-1] < n:
        ends.append(min(n, ends[-1] + block))
    return ends


def unit_points(
    key: UnitKey,
    split: Split,
    alphas: Sequence[float],
    end_a: MemberPoint,
    end_b: MemberPoint,
    stored: Mapping[float, PathPoint],
    evaluate_rows: RowsEvaluator,
    *,
    cache: BlockCache,
    tolerance: float | None = None,
    rule: BlockRule | None = None,
    keep_examples: bool = True,
) -> dict[float, PathPoint]:
    """A unit's points by α on the examples this sweep settles on (module docstring).

    ``alphas`` is the grid (its ends 0 and 1); ``stored`` the unit's stored points by α;
    ``tolerance`` the adaptive grid's (``paths.tolerance``) and ``rule`` the sequential
    rule (``paths.sequential``); without both every interior α on the whole sample.
    """
    n = split.n
    parts = {a: _from_stored(p) for a, p in stored.items() if 0.0 < a < 1.0}
    for part in parts.values():
        if part.hi > n:
            raise DataError(
                f"a stored point of {key.member_a}–{key.member_b} at α = {part.alpha:g} holds "
                f"{part.hi} examples, more than the split's {n}; the store is inconsistent"
            )
    if rule is None:
        ends = [n]
    else:
        ends = round_ends(n, rule.block, max((p.hi for p in parts.values()), default=0))
        if rule.max_blocks is not None:  # the pilot: no further than max_blocks blocks
            ends = [e for e in ends if e <= rule.max_blocks * rule.block] or ends[:1]

    def extend(part: _Partial, hi: int) -> None:
        if part.hi >= hi:
            return
        if not part.extendable():
            part.pieces = []  # F1 / MCC without the prefix's predictions: evaluate whole
        res = evaluate_rows(part.alpha, part.hi, hi)
        losses = res.example_losses if (keep_examples or rule is not None) else None
        part.pieces.append(_Piece(part.hi, hi, res.loss, res.metrics, losses, res.predictions))
        part.stored = None

    def curve_loss(alpha: float, hi: int) -> float:
        if alpha == 0.0:
            return end_b.loss if hi == n else float(_end_losses(end_b, hi, "it").mean())
        if alpha == 1.0:
            return end_a.loss if hi == n else float(_end_losses(end_a, hi, "it").mean())
        return parts[alpha].mean()

    hi = ends[0]
    for hi in ends:
        for part in parts.values():
            extend(part, hi)
        if tolerance is None:
            for alpha in alphas[1:-1]:
                if alpha not in parts:
                    parts[alpha] = _Partial(alpha)
                    extend(parts[alpha], hi)
        else:

            def loss(k: int, hi: int = hi) -> float:
                parts[alphas[k]] = _Partial(alphas[k])
                extend(parts[alphas[k]], hi)
                return parts[alphas[k]].mean()

            known = {
                k: curve_loss(a, hi)
                for k, a in enumerate(alphas)
                if a in parts or k in (0, len(alphas) - 1)
            }
            adaptive_gap(loss, alphas, tolerance, known=known)
        if rule is None or hi >= n:
            break
        curve = [0.0, *sorted(parts), 1.0]
        matrix = np.stack(
            [
                _end_losses(end_b, hi, "paths.sequential"),
                *(parts[a].losses()[:hi] for a in curve[1:-1]),  # type: ignore[index]
                _end_losses(end_a, hi, "paths.sequential"),
            ]
        )
        if rule.stops(matrix, curve, split.name):
            break
    found = {0.0: _end_row(key, 0.0, end_b, hi), 1.0: _end_row(key, 1.0, end_a, hi)}
    for alpha, part in parts.items():
        if part.stored is not None and part.hi == hi:
            found[alpha] = part.stored  # reused as stored, never redone
            continue
        found[alpha] = path_point(
            key,
            alpha,
            part.mean(),
            part.metrics(split, cache),
            part.losses() if keep_examples else None,
            part.hi,
        )
    return found


# ----------------------------------------------------------- paths.sequential.affinity


def _stored_curve(store: Store, key: UnitKey) -> tuple[list[float], np.ndarray] | None:
    """A unit's stored α and (n_α, examples) losses, or None when a point lacks them."""
    points = store.unit_points(key)
    if len(points) < 2 or any(p.example_losses is None for p in points):
        return None
    hi = min(len(p.example_losses) for p in points)  # type: ignore[arg-type]
    losses = np.stack([np.asarray(p.example_losses, dtype=np.float64)[:hi] for p in points])
    return [p.alpha for p in points], losses


def pilot_delta(store: Store, keys: Sequence[UnitKey], examples: int) -> float:
    """δ of ``paths.sequential.affinity`` under ``basins.delta: median``: the median
    convexity gap of the units ``keys`` on their first ``examples`` examples (1.0 when
    every gap is 0, as :func:`modeconn.stats.basins.median_delta`).

    Computed from the stored losses, so a rerun finds the same δ whatever later rounds
    added to the units.
    """
    gaps = []
    for key in keys:
        found = _stored_curve(store, key)
        if found is not None and found[1].shape[1] >= examples:
            alphas, losses = found
            gaps.append(convexity_gap(losses[:, :examples].mean(axis=1), alphas))
    if not gaps:
        raise DataError(
            "paths.sequential.affinity: no path holds the pilot's first "
            f"{examples} examples to take δ from; set basins.delta to a number"
        )
    med = float(np.median(gaps))
    return med if med > 0 else 1.0


def unit_settled(store: Store, key: UnitKey, rule: BlockRule, split: str) -> bool:
    """Whether a stored unit of the split named ``split`` needs no more examples under
    ``rule``: it holds the whole sample, or its stored losses already satisfy the rule."""
    found = _stored_curve(store, key)
    if found is None:
        return False
    alphas, losses = found
    return losses.shape[1] >= key.sample_size or rule.stops(losses, alphas, split)
