"""Plan and run a sweep of linear paths: every pair × split, skipping what the store has.

A *unit of work* is one pair of members on one split: the interior points of its α
grid. Endpoints are not part of a unit: each member is evaluated once per split (a
*member point*), and a unit's α = 0 and α = 1 rows are copied from those, so N members
cost exactly N endpoint evaluations per split whatever the number of pairs.

Units are ordered so consecutive units share endpoint A, and member weights are kept in
a cache of flat parameter lists under a byte budget (2 GiB by default): a population that
fits is read from disk once per member; a larger one re-reads endpoint B per unit. Each
unit's rows and its completion marker are written in one transaction: a sweep killed at
any instant resumes with no unit half-written.

Pairs are oriented by member id (A before B). A unit whose mirror — the same pair the
other way, B → A — is in the store counts as done (:func:`is_swept`): the linear path
from A to B at α is the path from B to A at 1 − α on the same symmetric grid, and every
reader (:class:`modeconn.results.Curves`) accepts either orientation, so two members
whose names were swapped, or renamed across each other in id order, cost nothing.

:func:`run_sweep` evaluates in this process. :mod:`modeconn.engine.backends` runs the same plan
on a pool of worker processes or on Ray, and its one writer builds rows with the same
:func:`unit_rows`, so every backend leaves the same store.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from modeconn.data.base import Split
from modeconn.engine.blockwise import BlockCache, BlockRule, path_point, unit_points
from modeconn.engine.evaluate import EvalResult, Evaluator
from modeconn.engine.paths import alpha_grid, grid_id
from modeconn.errors import PopulationError
from modeconn.store import MemberPoint, PathPoint, Store, UnitKey

PointLoader = Callable[[str], list[torch.Tensor]]


@dataclass(frozen=True)
class MemberRef:
    id: str
    hash: str


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep must still do, given what the store already holds."""

    members: tuple[MemberRef, ...]
    alphas: tuple[float, ...]
    grid: str
    member_todo: tuple[tuple[int, str], ...]  # (member index, split name)
    unit_todo: tuple[tuple[int, int, str], ...]  # (index A, index B, split name)
    n_units: int  # all path units of the study, done or not
    n_member_points: int  # all member points of the study
    tolerance: float | None = None  # paths.tolerance: adaptive α grids (stats.adaptive_grid)
    sequential: BlockRule | None = None  # paths.sequential: blocks of the sample

    @property
    def n_evaluations(self) -> int:
        interior = len(self.alphas) - 2
        return len(self.member_todo) + interior * len(self.unit_todo)


@dataclass
class SweepStats:
    member_evaluations: int = 0
    path_evaluations: int = 0  # forward passes on path interiors (a block is one)
    path_examples: int = 0  # examples they forwarded
    units_written: int = 0
    loads: int = 0
    seconds: float = 0.0
    per_split: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: SweepStats) -> SweepStats:
        """Two stages of one sweep together (counts and seconds summed)."""
        per_split = dict(self.per_split)
        for k, v in other.per_split.items():
            per_split[k] = per_split.get(k, 0) + v
        return SweepStats(
            self.member_evaluations + other.member_evaluations,
            self.path_evaluations + other.path_evaluations,
            self.path_examples + other.path_examples,
            self.units_written + other.units_written,
            self.loads + other.loads,
            self.seconds + other.seconds,
            per_split,
        )


def unit_key(plan: SweepPlan, a: int, b: int, split: Split, *, path: str = "linear") -> UnitKey:
    ma, mb = plan.members[a], plan.members[b]
    return UnitKey(
        hash_a=ma.hash,
        hash_b=mb.hash,
        path=path,
        grid=plan.grid,
        split=split.key,
        sample_seed=split.spec.sample_seed,
        sample_size=split.n,
        member_a=ma.id,
        member_b=mb.id,
    )


def is_swept(key: UnitKey, done: Container[UnitKey]) -> bool:
    """Whether ``key`` — or the same pair swept the other way (B → A) — is in ``done``.

    A linear path's θ(α) from A to B is θ(1 − α) from B to A, and a linear grid is
    symmetric (1 − α is on it), so the mirror unit holds the same points read backwards.
    """
    mirror = replace(
        key, member_a=key.member_b, member_b=key.member_a, hash_a=key.hash_b, hash_b=key.hash_a
    )
    return key in done or (key.path == "linear" and mirror in done)


def plan_sweep(
    members: Sequence[MemberRef],
    splits: Mapping[str, Split],
    *,
    path_splits: Sequence[str],
    member_splits: Sequence[str],
    points: int,
    store: Store,
    pairs: Collection[tuple[int, int]] | None = None,
    tolerance: float | None = None,
    sequential: BlockRule | None = None,
) -> SweepPlan:
    """Every member point and path unit of the study that the store does not hold yet.

    ``pairs`` (member indices i < j) restricts the paths to those pairs — the landmark
    pairs of :mod:`modeconn.stats.landmarks`; ``None`` sweeps every pair.

    ``tolerance`` (``paths.tolerance``) makes every unit adaptive: a done unit counts as
    done whatever subset of the lattice it holds. Without it a done unit holding fewer
    points than the grid (written by an adaptive sweep) is still to do, and
    :func:`run_sweep` evaluates only its missing α.

    ``sequential`` (``paths.sequential``) likewise takes a done unit as done whatever
    number of examples its points hold; without it a done unit whose points hold fewer
    examples than the sample (a sequential sweep stopped it) is still to do, and
    :func:`run_sweep` evaluates only the missing examples
    (:mod:`modeconn.engine.blockwise`).
    """
    alphas = alpha_grid(points)
    grid = grid_id("linear", points)
    plan = SweepPlan(tuple(members), alphas, grid, (), (), 0, 0)
    all_member_splits = list(dict.fromkeys([*path_splits, *member_splits]))
    member_todo = [
        (i, s)
        for i, m in enumerate(members)
        for s in all_member_splits
        if store.member_point(m.hash, splits[s].key, splits[s].spec.sample_seed, splits[s].n)
        is None
    ]
    done = store.done_units()
    wanted = None if pairs is None else set(pairs)
    units = [
        (i, j, s)
        for i in range(len(members))
        for j in range(i + 1, len(members))
        if wanted is None or (i, j) in wanted
        for s in path_splits
    ]
    # a pair whose id order changed (a rename, a swap) was swept the other way: done
    # units an adaptive (sequential) sweep left partial are not done for a full grid (sample)
    done = done - _partial_units(
        store, grid, points, done, alphas=tolerance is None, examples=sequential is None
    )
    unit_todo = [u for u in units if not is_swept(unit_key(plan, u[0], u[1], splits[u[2]]), done)]
    return SweepPlan(
        tuple(members),
        alphas,
        grid,
        tuple(member_todo),
        tuple(unit_todo),
        n_units=len(units),
        n_member_points=len(members) * len(all_member_splits),
        tolerance=tolerance,
        sequential=sequential,
    )


def _partial_units(
    store: Store,
    grid: str,
    points: int,
    done: set[UnitKey],
    *,
    alphas: bool = True,
    examples: bool = True,
) -> set[UnitKey]:
    """The done units of `grid` that hold fewer than `points` α (an adaptive sweep's,
    when ``alphas``) or a point on fewer examples than the sample (a sequential sweep's,
    when ``examples``)."""
    if not (alphas or examples) or not any(u.grid == grid for u in done):
        return set()
    rows = store.path_points(rows="all", grid=grid)
    cols = [
        "member_a",
        "member_b",
        "hash_a",
        "hash_b",
        "path",
        "split",
        "sample_seed",
        "sample_size",
    ]
    groups = rows.groupby(cols)
    short: set[tuple[Any, ...]] = set()
    if alphas:
        short |= {tuple(k) for k, v in groups.size().items() if v < points}  # type: ignore[arg-type]
    if examples:
        fewest = groups["n_examples"].min()
        # a point on fewer examples than the sample (the key's last field)
        short |= {tuple(k) for k, v in fewest.items() if v < k[-1]}  # type: ignore[arg-type,index]
    return {
        u
        for u in done
        if u.grid == grid
        and (
            u.member_a,
            u.member_b,
            u.hash_a,
            u.hash_b,
            u.path,
            u.split,
            u.sample_seed,
            u.sample_size,
        )
        in short
    }


def plan_cost(plan: SweepPlan, splits: Mapping[str, Split]) -> int:
    """The work `plan` lists, in its splits' cost unit (one pass per point)."""
    interior = len(plan.alphas) - 2
    total = sum(splits[s].cost for _, s in plan.member_todo)
    return total + sum(interior * splits[s].cost for _, _, s in plan.unit_todo)


def cost_unit(splits: Mapping[str, Split]) -> str:
    """The progress unit of `splits` ("tok", "img", …; "pass" when kinds differ)."""
    units = {s.cost_unit for s in splits.values()}
    return units.pop() if len(units) == 1 else "pass"


class _PointCache:
    """Members' flat parameter lists within a byte budget (at least 2 members), LRU."""

    def __init__(self, load: PointLoader, budget: int) -> None:
        self.load, self.budget = load, budget
        self.size = 2
        self.items: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self.loads = 0

    def get(self, member_id: str) -> list[torch.Tensor]:
        if member_id in self.items:
            self.items.move_to_end(member_id)
            return self.items[member_id]
        point = self.load(member_id)
        self.loads += 1
        if self.loads == 1:
            nbytes = sum(t.numel() * t.element_size() for t in point)
            self.size = max(2, self.budget // max(1, nbytes))
        self.items[member_id] = point
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return point


def check_finite(res: EvalResult, what: str, split: Split, alpha: float | None = None) -> None:
    """Raise PopulationError naming `what` (a member or a pair), the split and α when a
    point's mean loss is NaN or infinite, before any of its rows is written."""
    if math.isfinite(res.loss):
        return
    at = "" if alpha is None else f" at α = {alpha:g}"
    raise PopulationError(
        f"{what} gives a non-finite loss ({res.loss}) on split '{split.name}'{at}: its "
        "weights overflow the forward pass (diverged or huge weights, or a half-precision "
        "eval.dtype); nothing of it was written; retrain or remove the member, or evaluate "
        "in float32"
    )


def _member_point(
    ref: MemberRef, split: Split, res: EvalResult, keep_examples: bool
) -> MemberPoint:
    return MemberPoint(
        member_id=ref.id,
        member_hash=ref.hash,
        split=split.key,
        sample_seed=split.spec.sample_seed,
        sample_size=split.n,
        loss=res.loss,
        metrics=res.metrics,
        example_losses=res.example_losses if keep_examples else None,
        n_examples=res.n_examples,
    )


def unit_rows(
    key: UnitKey,
    alphas: Sequence[float],
    end_a: MemberPoint,
    end_b: MemberPoint,
    interior: Sequence[EvalResult],
    *,
    keep_examples: bool = True,
) -> list[PathPoint]:
    """A unit's rows: α = 0 and 1 copied from the members' points, the rest from `interior`.

    ``interior`` holds one result per α of ``alphas[1:-1]``, in order. θ(0) = θB and
    θ(1) = θA, so α = 0 copies endpoint B and α = 1 copies endpoint A.
    """
    inner = alphas[1:-1]
    assert len(interior) == len(inner), "one result per interior alpha"
    rows = [path_point(key, 0.0, end_b.loss, end_b.metrics, end_b.example_losses, end_b.n_examples)]
    for alpha, res in zip(inner, interior, strict=True):
        examples = res.example_losses if keep_examples else None
        rows.append(path_point(key, alpha, res.loss, res.metrics, examples, res.n_examples))
    rows.append(
        path_point(key, 1.0, end_a.loss, end_a.metrics, end_a.example_losses, end_a.n_examples)
    )
    return rows


def run_sweep(
    plan: SweepPlan,
    evaluator: Evaluator,
    load_point: PointLoader,
    splits: Mapping[str, Split],
    store: Store,
    *,
    keep_examples: bool = True,
    cache_bytes: int = 2 << 30,
    progress: bool = True,
) -> SweepStats:
    """Evaluate what `plan` lists and write it to `store`, one transaction per unit."""
    import time

    if plan.sequential is not None and not keep_examples:
        raise PopulationError(
            "paths.sequential stops a path on its per-example losses; the sweep must keep "
            "them (keep_examples=True)"
        )
    per_example = keep_examples or plan.sequential is not None
    blocks = BlockCache()
    stats = SweepStats()
    start = time.perf_counter()
    cache = _PointCache(load_point, cache_bytes)
    # the bar counts each split's cost (padded tokens, images), not points: splits differ
    # (HANS pairs are half as long as MNLI pairs), so the ETA holds
    total = plan_cost(plan, splits)
    bar = tqdm(
        total=total,
        desc="sweep",
        unit=cost_unit(splits),
        unit_scale=True,
        disable=not progress,
        smoothing=0.05,
    )

    # endpoints: each member once per split, evaluated when the member is first loaded
    # for a unit (so its weights are read once), written per member so a kill loses little
    pending: dict[int, list[str]] = {}
    for i, s in plan.member_todo:
        pending.setdefault(i, []).append(s)

    def endpoints(i: int) -> None:
        names = pending.pop(i, [])
        if not names:
            return
        ref = plan.members[i]
        point = cache.get(ref.id)
        rows = []
        for s in names:
            bar.set_postfix_str(f"{ref.id} on {s}")
            res = evaluator.evaluate_member(point, splits[s], per_example=keep_examples)
            check_finite(res, f"member '{ref.id}'", splits[s])
            rows.append(_member_point(ref, splits[s], res, keep_examples))
            stats.member_evaluations += 1
            stats.per_split[s] = stats.per_split.get(s, 0) + 1
            bar.update(splits[s].cost)
        store.write_member_points(rows)

    # paths: interior α of every pending unit; α = 0 and 1 come from the member points
    for a, b, s in plan.unit_todo:
        endpoints(a)
        endpoints(b)
        split = splits[s]
        key = unit_key(plan, a, b, split)
        end_a = store.member_point(key.hash_a, key.split, key.sample_seed, key.sample_size)
        end_b = store.member_point(key.hash_b, key.split, key.sample_seed, key.sample_size)
        assert end_a is not None and end_b is not None, "member points are written first"
        point_a, point_b = cache.get(key.member_a), cache.get(key.member_b)
        bar.set_postfix_str(f"{key.member_a}–{key.member_b} on {s}")
        # points an earlier (adaptive or sequential) sweep stored for this unit are
        # reused, and a point stored on a prefix of the sample is only extended
        stored = {p.alpha: p for p in store.unit_points(key)}
        bn: dict[float, list[torch.Tensor] | None] = {}  # BatchNorm statistics per α

        def evaluate_rows(
            alpha: float,
            lo: int,
            hi: int,
            key: UnitKey = key,
            split: Split = split,
            ends: tuple[list[torch.Tensor], list[torch.Tensor]] = (point_a, point_b),
            bn: dict[float, list[torch.Tensor] | None] = bn,
        ) -> EvalResult:
            part = blocks.rows(split, lo, hi)
            evaluator.set_lerp(*ends, alpha)
            evaluator.restore_batchnorm(bn.get(alpha))
            res = evaluator.evaluate(part, kind="path", per_example=per_example)
            if plan.sequential is not None and alpha not in bn:
                bn[alpha] = evaluator.batchnorm_state()
            check_finite(res, f"path {key.member_a}–{key.member_b}", split, alpha)
            stats.path_evaluations += 1
            stats.path_examples += res.n_examples
            bar.update(part.cost)
            return res

        found = unit_points(
            key,
            split,
            plan.alphas,
            end_a,
            end_b,
            stored,
            evaluate_rows,
            cache=blocks,
            tolerance=plan.tolerance,
            rule=plan.sequential,
            keep_examples=keep_examples,
        )
        rows = [found[a] for a in sorted(found)]
        store.write_unit(key, rows)
        stats.units_written += 1
    for i in list(pending):  # members whose units were all done before
        endpoints(i)
    bar.close()
    stats.loads = cache.loads
    stats.seconds = time.perf_counter() - start
    return stats
