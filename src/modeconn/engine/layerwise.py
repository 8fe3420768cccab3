"""Layer-wise linear paths: one block interpolated, every other block kept at one member.

Adilova et al. (ICLR 2024, "Layer-wise linear mode connectivity"; code:
link-er/layer-wise-lmc) and Singh et al. (2024, "Landscaping Linear Mode Connectivity")
ask *where* in the network a barrier lives. For members A, B and a block ℓ (a group of
parameter tensors),

    θ_ℓ^A(s) = A with block ℓ replaced by (1 − s)·A_ℓ + s·B_ℓ     ("rest at A"),
    θ_ℓ^B(s) = B with block ℓ replaced by (1 − s)·B_ℓ + s·A_ℓ     ("rest at B"),

and the cumulative paths interpolate the first k blocks together (shallow-first), the
last k (deep-first), or the first k of a seeded random order of the blocks (random), the
rest at A, for k = 1 … K (k = K is the full linear path).

**Blocks** come from the model's own state names: each name's module path (the name
without its last part, ``weight`` / ``bias`` / ``running_mean`` …) cut to its first
``depth`` parts — ``blocks.0.conv.weight`` → ``blocks.0`` at depth 2, ``classifier.bias``
→ ``classifier``, ``bert.encoder.layer.3.output.dense.weight`` → ``bert.encoder.layer.3``
at depth 4. Blocks are ordered by first appearance in the state dict (input → output for
the models here). Float buffers (BatchNorm statistics) belong to their layer's block; with
``eval.batchnorm: reestimate`` the engine re-estimates them at every point anyway.

Every point is written into the engine's resident weights
(:meth:`~modeconn.engine.evaluate.Evaluator.set_blend`) and evaluated there: no model copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from modeconn.data.base import Split
from modeconn.engine.evaluate import Evaluator
from modeconn.errors import ConfigError

__all__ = ["LayerwiseCurves", "block_of", "blocks", "layerwise_curves", "random_orders"]


def block_of(name: str, depth: int) -> str:
    """The block of state entry `name` at `depth`.

    >>> block_of("blocks.0.conv.weight", 2), block_of("classifier.bias", 2)
    ('blocks.0', 'classifier')
    """
    module = name.split(".")[:-1] or [name]
    return ".".join(module[:depth])


def blocks(keys: Sequence[str], depth: int) -> dict[str, list[int]]:
    """``{block: [indices into keys]}``, blocks in order of first appearance.

    >>> blocks(["a.0.w", "a.0.b", "a.1.w", "head.w"], 2)
    {'a.0': [0, 1], 'a.1': [2], 'head': [3]}
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"analyses.layerwise.depth must be an integer ≥ 1; got {depth!r}")
    out: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(block_of(k, depth), []).append(i)
    return out


def select_blocks(
    found: dict[str, list[int]], names: Sequence[str] | None, *, depth: int | None = None
) -> dict[str, list[int]]:
    """The blocks named (all if None), in the model's order; an unknown name is an error
    listing the model's blocks (at `depth`, when given)."""
    if names is None:
        return found
    unknown = [n for n in names if n not in found]
    if unknown:
        at = "this depth" if depth is None else f"depth {depth}"
        raise ConfigError(
            f"analyses.layerwise.blocks names {unknown}, not blocks of this model at {at}; "
            f"its blocks are: {', '.join(found)} (or change analyses.layerwise.depth)"
        )
    return {k: v for k, v in found.items() if k in set(names)}


def random_orders(names: Sequence[str], draws: int, seed: int) -> list[list[str]]:
    """`draws` seeded random orders of the blocks `names` (draw r from
    ``numpy.random.default_rng([seed, r])``, so adding draws keeps the earlier ones).

    >>> random_orders(["a", "b", "c"], 2, 0) == random_orders(["a", "b", "c"], 2, 0)
    True
    >>> sorted(random_orders(["a", "b", "c"], 1, 5)[0])
    ['a', 'b', 'c']
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 0:
        raise ConfigError(f"analyses.layerwise.random_orders must be an integer ≥ 0; got {draws!r}")
    out = []
    for r in range(draws):
        perm = np.random.default_rng([int(seed), r]).permutation(len(names))
        out.append([names[i] for i in perm])
    return out


@dataclass(frozen=True)
class LayerwiseCurves:
    """Losses along every layer-wise path of one pair on one split.

    ``rest_a[ℓ]`` / ``rest_b[ℓ]``: f(s) for block ℓ interpolated, the rest at A / at B;
    ``shallow[k-1]`` / ``deep[k-1]``: f(s) with the first / last k blocks interpolated (the
    rest at A); ``random[r][k-1]``: the first k blocks of ``orders[r]`` (a seeded random
    order) interpolated, the rest at A; ``loss_a``, ``loss_b``: the full members' losses.
    """

    blocks: list[str]
    s: list[float]
    rest_a: dict[str, list[float]]
    rest_b: dict[str, list[float]]
    shallow: list[list[float]]
    deep: list[list[float]]
    loss_a: float
    loss_b: float
    orders: list[list[str]] = field(default_factory=list)
    random: list[list[list[float]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerwiseCurves:
        fields = ("blocks", "s", "rest_a", "rest_b", "shallow", "deep", "loss_a", "loss_b")
        more = {k: data[k] for k in ("orders", "random") if k in data}
        return cls(**{k: data[k] for k in fields}, **more)


def layerwise_curves(
    evaluator: Evaluator,
    a: Sequence[torch.Tensor],
    b: Sequence[torch.Tensor],
    split: Split,
    *,
    groups: dict[str, list[int]],
    points: int = 5,
    cumulative: bool = True,
    orders: Sequence[Sequence[str]] = (),
) -> LayerwiseCurves:
    """Evaluate every layer-wise path of (A, B) on `split` at `points` values of s in [0, 1].

    Per block, both variants (2·K·(points − 1) evaluations: s = 0 is the base member,
    evaluated once; s = 1 is a hybrid, so each path's chord is its own); with `cumulative`,
    shallow-first and deep-first (2·K·(points − 1) more), over the given blocks only (the
    rest stay at A, so k = K is the full path only when every block is given); and for
    each order of `orders` (:func:`random_orders`), its first k blocks for k = 1 … K — a
    set of blocks already evaluated (a single block, the full set) is not evaluated again.
    Counted as ``kind="layerwise"`` in the evaluator's counts.
    """
    if points < 2:
        raise ConfigError(f"analyses.layerwise.points must be ≥ 2; got {points}")
    grid = [float(x) for x in np.linspace(0.0, 1.0, points)]
    ev = evaluator

    ev.set_point(a)
    loss_a = ev.evaluate(split, kind="layerwise").loss
    ev.set_point(b)
    loss_b = ev.evaluate(split, kind="layerwise").loss
    start = {id(a): loss_a, id(b): loss_b}  # s = 0 of every path is its base member

    def curve(
        base: Sequence[torch.Tensor], other: Sequence[torch.Tensor], idx: list[int]
    ) -> list[float]:
        out = [start[id(base)]]
        for s in grid[1:]:
            ev.set_blend(base, other, s, idx)
            out.append(ev.evaluate(split, kind="layerwise").loss)
        return out

    names = list(groups)
    rest_a = {n: curve(a, b, groups[n]) for n in names}
    rest_b = {n: curve(b, a, groups[n]) for n in names}
    shallow: list[list[float]] = []
    deep: list[list[float]] = []
    if cumulative:
        for k in range(1, len(names) + 1):
            shallow.append(curve(a, b, [i for n in names[:k] for i in groups[n]]))
            deep.append(curve(a, b, [i for n in names[len(names) - k :] for i in groups[n]]))
    # random orders: a set of blocks seen before (rest at A) is read, not evaluated again
    seen = {frozenset([n]): rest_a[n] for n in names}
    if cumulative:
        for k in range(1, len(names) + 1):
            seen[frozenset(names[:k])] = shallow[k - 1]
            seen[frozenset(names[len(names) - k :])] = deep[k - 1]
    random: list[list[list[float]]] = []
    for order in orders:
        if sorted(order) != sorted(names):
            raise ConfigError(f"a random order must list the blocks {names} once each; got {order}")
        draw = []
        for k in range(1, len(order) + 1):
            chosen = frozenset(order[:k])
            if chosen not in seen:
                seen[chosen] = curve(a, b, [i for n in names if n in chosen for i in groups[n]])
            draw.append(seen[chosen])
        random.append(draw)
    return LayerwiseCurves(
        names,
        grid,
        rest_a,
        rest_b,
        shallow,
        deep,
        loss_a,
        loss_b,
        [list(o) for o in orders],
        random,
    )
