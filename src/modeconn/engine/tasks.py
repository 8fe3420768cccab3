"""What a parallel sweep sends to its workers: specs, tasks and results (picklable).

:class:`WorkerSpec` describes a worker's evaluation context (built once per worker by
:mod:`modeconn.engine.pools`); :func:`make_tasks` cuts a
:class:`~modeconn.engine.sweep.SweepPlan` into :class:`Task` s that share endpoint A; a
worker answers each with a :class:`TaskResult`. See :mod:`modeconn.engine.backends`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from modeconn.engine.evaluate import EvalResult
from modeconn.engine.spec import EngineSpec, resolved
from modeconn.engine.sweep import SweepPlan
from modeconn.errors import ConfigError

WORKER_CACHE_BYTES = 1 << 30  # member points a worker keeps (at least 2 members)
MAX_UNITS_PER_TASK = 16  # a lost worker loses at most two tasks of this size
TASKS_PER_WORKER = 4  # cut the plan finer than one task per worker, to balance the load


@dataclass(frozen=True)
class MemberSource:
    """Where a worker reads a member, and the weight hash the plan was made with."""

    id: str
    path: str  # absolute; the same path on every worker (shared storage)
    hash: str


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build its evaluation context; small and picklable.

    ``engine`` is the runner's own :class:`~modeconn.engine.spec.EngineSpec` (model,
    split recipes, evaluation options, BatchNorm policy), with the worker's thread count;
    ``keys`` pairs each split's name with the key the plan used, so a worker whose data
    files read differently fails instead of writing rows under the wrong key.
    ``members`` follows the plan's member order: tasks name members by index.
    """

    engine: EngineSpec
    keys: tuple[tuple[str, str], ...]
    members: tuple[MemberSource, ...]
    alphas: tuple[float, ...]
    keep_examples: bool = True
    cache_bytes: int = WORKER_CACHE_BYTES

    @classmethod
    def build(
        cls,
        engine: EngineSpec,
        *,
        keys: Sequence[tuple[str, str]],
        members: Sequence[MemberSource],
        alphas: Sequence[float],
        threads: int,
        **options: Any,
    ) -> WorkerSpec:
        """`engine` with absolute data paths and `threads` torch threads per worker."""
        bn = engine.batchnorm
        if bn.recipe is not None:
            bn = dataclasses.replace(bn, recipe=resolved(bn.recipe))
        spec = dataclasses.replace(
            engine,
            splits=tuple(resolved(r) for r in engine.splits),
            batchnorm=bn,
            threads=threads,
        )
        return cls(spec, tuple(keys), tuple(members), tuple(alphas), **options)

    @property
    def splits(self) -> tuple[tuple[Any, str], ...]:
        """Each split's recipe with the key the plan used."""
        keys = dict(self.keys)
        return tuple((r, keys[r.name]) for r in self.engine.splits)

    @property
    def threads(self) -> int:
        return self.engine.threads or 1

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def dtype(self) -> str:
        return self.engine.dtype

    @property
    def compile(self) -> bool:
        return self.engine.compile


@dataclass(frozen=True)
class Task:
    """A worker's batch: member points to evaluate, then path units sharing endpoint A.

    ``anchor`` is the member index every unit shares as A (for a task of member points
    only, that member). Pairs are ``(index A, index B, split name)``.
    """

    id: int
    anchor: int
    member_points: tuple[tuple[int, str], ...]
    units: tuple[tuple[int, int, str], ...]


@dataclass(frozen=True)
class TaskResult:
    """What a worker sends back: member point results, interior α results per unit.

    ``failure`` is ``(error class name, message)`` when the worker raised a
    :class:`~modeconn.errors.ModeconnError`; the driver raises it again instead of
    retrying.
    """

    task_id: int
    member_points: tuple[tuple[int, str, EvalResult], ...]
    units: tuple[tuple[int, int, str, tuple[EvalResult, ...]], ...]
    loads: int
    seconds: float
    worker: str
    failure: tuple[str, str] | None = None


def make_tasks(plan: SweepPlan, *, workers: int, max_units: int = MAX_UNITS_PER_TASK) -> list[Task]:
    """Cut what ``plan`` lists into tasks whose units share endpoint A.

    Units are taken A-major; the splits of one pair always go to one task (B is loaded
    once for them), and a task holds up to ``size`` units, with ``size`` chosen so there
    are about ``TASKS_PER_WORKER`` tasks per worker (at most ``max_units``). Each member
    point goes with the first task that loads its member; members that no pending unit
    loads get tasks of their own at the end.

    >>> from modeconn.engine.sweep import MemberRef, SweepPlan
    >>> refs = tuple(MemberRef(f"m{i}", f"h{i}") for i in range(3))
    >>> units = ((0, 1, "s"), (0, 2, "s"), (1, 2, "s"))
    >>> plan = SweepPlan(refs, (0.0, 0.5, 1.0), "linear:3", ((2, "s"),), units, 3, 3)
    >>> [(t.anchor, t.member_points, t.units) for t in make_tasks(plan, workers=1)]
    [(0, (), ((0, 1, 's'),)), (0, ((2, 's'),), ((0, 2, 's'),)), (1, (), ((1, 2, 's'),))]
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1; got {workers}")
    units = sorted(plan.unit_todo, key=lambda u: u[0])  # stable: B and split keep plan order
    size = max(1, min(max_units, math.ceil(len(units) / (TASKS_PER_WORKER * workers))))
    pending: dict[int, list[str]] = {}
    for i, s in plan.member_todo:
        pending.setdefault(i, []).append(s)

    def take(members: Iterable[int]) -> tuple[tuple[int, str], ...]:
        return tuple((m, s) for m in dict.fromkeys(members) for s in pending.pop(m, []))

    tasks: list[Task] = []
    # pairs of one A in plan order: {A: {B: [units]}}
    pairs: OrderedDict[int, OrderedDict[int, list[tuple[int, int, str]]]] = OrderedDict()
    for a, b, s in units:
        pairs.setdefault(a, OrderedDict()).setdefault(b, []).append((a, b, s))
    for a, by_b in pairs.items():
        chunk: list[tuple[int, int, str]] = []
        for pair_units in by_b.values():
            if chunk and len(chunk) + len(pair_units) > size:
                tasks.append(_task(len(tasks), a, chunk, take))
                chunk = []
            chunk.extend(pair_units)
        if chunk:
            tasks.append(_task(len(tasks), a, chunk, take))
    for m in list(pending):
        tasks.append(Task(len(tasks), m, take([m]), ()))
    return tasks


def _task(
    task_id: int,
    a: int,
    chunk: Sequence[tuple[int, int, str]],
    take: Callable[[Iterable[int]], tuple[tuple[int, str], ...]],
) -> Task:
    return Task(task_id, a, take([a, *(b for _, b, _ in chunk)]), tuple(chunk))


class _TaskQueue:
    """Pending tasks by anchor, in plan order; a worker prefers its current anchor."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self._by_anchor: OrderedDict[int, deque[Task]] = OrderedDict()
        for t in tasks:
            self._by_anchor.setdefault(t.anchor, deque()).append(t)

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_anchor.values())

    def __bool__(self) -> bool:
        return bool(self._by_anchor)

    def pop(self, prefer: int | None = None) -> Task:
        anchor = prefer if prefer is not None and prefer in self._by_anchor else None
        if anchor is None:
            anchor = next(iter(self._by_anchor))
        queue = self._by_anchor[anchor]
        task = queue.popleft()
        if not queue:
            del self._by_anchor[anchor]
        return task

    def push_front(self, task: Task) -> None:
        """Put a task back first in line (a retry)."""
        self._by_anchor.setdefault(task.anchor, deque()).appendleft(task)
        self._by_anchor.move_to_end(task.anchor, last=False)
