"""Where a sweep's evaluations run: in this process, on a local process pool, or on Ray.

A study's ``sweep`` section picks the backend::

    sweep: {backend: process, workers: 4, threads_per_worker: 1, max_retries: 3}
    sweep: {backend: ray, workers: 16, threads_per_worker: 2, address: 10.0.0.5:6379}

* ``local`` (the default) is :func:`modeconn.engine.sweep.run_sweep`: one evaluator in this
  process, nothing below applies.
* ``process`` starts ``workers`` processes on this machine (``ProcessPoolExecutor``, one
  per worker, ``spawn`` context, so no parent state such as torch threads is inherited).
* ``ray`` starts ``workers`` Ray actors, each reserving ``threads_per_worker`` CPUs.
  ``address: null`` starts a fresh local Ray (``num_cpus = workers × threads_per_worker``,
  no dashboard, never one left behind by another process) that is shut down when the
  sweep ends; if this process is killed, the kernel kills Ray's GCS and raylet with it,
  their workers follow, and Ray's two idle agents exit within about a minute (they first
  try to report the raylet's death). An address (``host:port`` of a head node,
  ``ray://host:port``, ``auto``) joins a running cluster. An address that accepts no
  connection within :data:`CONNECT_TIMEOUT_S` seconds, or that a child process cannot
  join as a Ray driver within :data:`PROBE_TIMEOUT_S`, is a
  :class:`~modeconn.errors.ConfigError` naming the address and the fix, never a hang. If
  Ray is already initialized in this process (a notebook, a test), the sweep uses that
  session.

**What runs where.** This process plans the sweep (:func:`~modeconn.engine.sweep.plan_sweep`,
which hashes every member), cuts the plan into tasks (:func:`make_tasks`), hands them to
the workers and is the store's only writer. A worker gets a small picklable
:class:`WorkerSpec` (the runner's :class:`~modeconn.engine.spec.EngineSpec`, paths, keys,
hashes; no tensors), builds its evaluation context once through the same
:func:`~modeconn.engine.spec.build_engine` as the runner — prepared splits (checked against
the keys the plan used), skeleton :class:`~modeconn.engine.evaluate.Evaluator` — and
keeps an LRU cache of member points (:data:`~modeconn.engine.tasks.WORKER_CACHE_BYTES`,
at least two members). It reads members by path from storage that every worker shares,
and checks each member's weight hash against the plan's: a member whose file changed since
planning is a
:class:`~modeconn.errors.PopulationError`, never a row under the wrong hash. On a cluster
the data files, members and pretrained model must sit at the same paths on every node,
with the same modeconn installed.

**Tasks.** Units (pair × split) are grouped by endpoint A; a task holds a few pairs that
share A (all splits of a pair together), so a worker loads A once per task and B once
per pair, and a worker that finishes a task takes the next one with the same A when there
is one. Each member point (member × split) rides with the first task that loads that
member, so every member is evaluated once per split, as in-process. A worker holds at
most two tasks at a time (one running, one queued).

**Who writes.** Results come back to this process, which writes them exactly as
:func:`~modeconn.engine.sweep.run_sweep` does: member points first (one transaction per
member), then each unit's interior rows with α = 0 and 1 copied from the stored member
points, rows and marker in one :meth:`~modeconn.store.Store.write_unit` transaction. A
unit whose endpoint's member point is still being computed elsewhere waits in memory
until that point is written. Results are written as they arrive, so a lost worker or a
killed sweep loses only what was in flight; the rerun plans only what is missing.

**Retries.** A task whose worker died (a killed process, a dead actor) or that raised an
unexpected exception is sent again, up to ``max_retries`` times, to a fresh worker when
the old one died. A :class:`~modeconn.errors.ModeconnError` raised in a worker (a changed
member, different data on a node) would fail again: it stops the sweep at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

from modeconn import errors
from modeconn.data.base import Split
from modeconn.engine.evaluate import EvalResult
from modeconn.engine.pools import (
    CONNECT_TIMEOUT_S,
    PROBE_TIMEOUT_S,
    ProcessPool,
    RayPool,
    WorkerPool,
    _one_line,
    check_ray_address,
    run_task,
)
from modeconn.engine.sweep import (
    SweepPlan,
    SweepStats,
    _member_point,
    check_finite,
    cost_unit,
    unit_key,
    unit_rows,
)
from modeconn.engine.tasks import (
    MAX_UNITS_PER_TASK,
    MemberSource,
    Task,
    TaskResult,
    WorkerSpec,
    _TaskQueue,
    make_tasks,
)
from modeconn.errors import ConfigError, ModeconnError
from modeconn.store import MemberPoint, Store

__all__ = [
    "CONNECT_TIMEOUT_S",
    "PROBE_TIMEOUT_S",
    "MemberSource",
    "ProcessPool",
    "RayPool",
    "Task",
    "TaskResult",
    "WorkerPool",
    "WorkerSpec",
    "_TaskQueue",
    "check_ray_address",
    "drive",
    "make_tasks",
    "run_parallel_sweep",
    "run_task",
]

log = logging.getLogger("modeconn")

TASK_DEPTH = 2  # tasks handed to one worker at a time: one running, one queued
POLL_S = 1.0  # how often the driver wakes while waiting (keeps Ctrl-C responsive)


class _Writer:
    """The store's one writer: member points first, then units whose endpoints are in."""

    def __init__(
        self,
        plan: SweepPlan,
        splits: Mapping[str, Split],
        store: Store,
        stats: SweepStats,
        *,
        keep_examples: bool,
    ) -> None:
        self.plan, self.splits, self.store, self.stats = plan, splits, store, stats
        self.keep_examples = keep_examples
        self.missing = set(plan.member_todo)  # member points not in the store yet
        self.waiting: list[tuple[int, int, str, tuple[EvalResult, ...]]] = []

    def accept(self, result: TaskResult) -> None:
        by_member: dict[int, list[MemberPoint]] = {}
        for i, s, res in result.member_points:
            check_finite(res, f"member '{self.plan.members[i].id}'", self.splits[s])
        for a, b, s, results in result.units:
            names = f"path {self.plan.members[a].id}–{self.plan.members[b].id}"
            for alpha, res in zip(self.plan.alphas[1:-1], results, strict=True):
                check_finite(res, names, self.splits[s], alpha)
        for i, s, res in result.member_points:
            ref, split = self.plan.members[i], self.splits[s]
            by_member.setdefault(i, []).append(_member_point(ref, split, res, self.keep_examples))
            self.stats.member_evaluations += 1
            self.stats.per_split[s] = self.stats.per_split.get(s, 0) + 1
        for rows in by_member.values():  # one transaction per member, as in-process
            self.store.write_member_points(rows)
        for i, s, _ in result.member_points:
            self.missing.discard((i, s))
        self.stats.path_evaluations += sum(len(u[3]) for u in result.units)
        self.stats.loads += result.loads
        self.waiting.extend(result.units)
        self._flush()

    def _flush(self) -> None:
        still = []
        for a, b, s, results in self.waiting:
            if (a, s) in self.missing or (b, s) in self.missing:
                still.append((a, b, s, results))
                continue
            key = unit_key(self.plan, a, b, self.splits[s])
            where = (key.split, key.sample_seed, key.sample_size)
            end_a = self.store.member_point(key.hash_a, *where)
            end_b = self.store.member_point(key.hash_b, *where)
            assert end_a is not None and end_b is not None, "member points are written first"
            rows = unit_rows(
                key, self.plan.alphas, end_a, end_b, results, keep_examples=self.keep_examples
            )
            self.store.write_unit(key, rows)
            self.stats.units_written += 1
        self.waiting = still


def _failure(result: TaskResult) -> ModeconnError:
    assert result.failure is not None
    name, message = result.failure
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ModeconnError)):
        cls = ModeconnError
    return cls(f"{message} (on worker {result.worker})")


def _describe(plan: SweepPlan, task: Task) -> str:
    member = plan.members[task.anchor].id
    if task.units:
        return f"task {task.id} ({len(task.units)} path units from member '{member}')"
    return f"task {task.id} (member points of '{member}')"


def drive(
    plan: SweepPlan,
    pool: WorkerPool,
    splits: Mapping[str, Split],
    store: Store,
    *,
    workers: int,
    max_retries: int = 3,
    keep_examples: bool = True,
    progress: bool = True,
    max_units: int = MAX_UNITS_PER_TASK,
) -> SweepStats:
    """Run ``plan`` on ``pool``'s workers and write every result to ``store`` as it comes."""
    if max_retries < 0:
        raise ConfigError(f"max_retries must be >= 0; got {max_retries}")
    stats = SweepStats()
    start = time.perf_counter()
    tasks = make_tasks(plan, workers=workers, max_units=max_units)
    if not tasks:
        return stats
    interior = len(plan.alphas) - 2
    total = sum(splits[s].cost for _, s in plan.member_todo)
    total += sum(interior * splits[s].cost for _, _, s in plan.unit_todo)
    bar = tqdm(
        total=total,
        desc=f"sweep ({pool.name})",
        unit=cost_unit(splits),
        unit_scale=True,
        disable=not progress,
        smoothing=0.05,
    )
    writer = _Writer(plan, splits, store, stats, keep_examples=keep_examples)
    queue = _TaskQueue(tasks)
    slots = min(workers, len(tasks))
    attempts: dict[int, int] = {}
    busy = [0] * slots  # tasks in flight per slot
    anchors: list[int | None] = [None] * slots  # the anchor of each slot's last task
    generation = [0] * slots  # bumped when a slot's worker is replaced
    inflight: dict[Any, tuple[int, int, Task]] = {}
    clean = False
    try:
        pool.start(slots)
        while queue or inflight:
            for slot in range(slots):
                while busy[slot] < TASK_DEPTH and queue:
                    task = queue.pop(prefer=anchors[slot])
                    anchors[slot] = task.anchor
                    inflight[pool.submit(slot, task)] = (slot, generation[slot], task)
                    busy[slot] += 1
            for handle in pool.wait(list(inflight), POLL_S):
                slot, gen, task = inflight.pop(handle)
                busy[slot] -= 1
                try:
                    result = pool.result(handle)
                except Exception as err:
                    n = attempts[task.id] = attempts.get(task.id, 0) + 1
                    what = f"{type(err).__name__}: {_one_line(err)}"
                    if n > max_retries:
                        raise ModeconnError(
                            f"sweep: {_describe(plan, task)} failed {n} times on backend "
                            f"'{pool.name}' (last: {what}); finished units are in the store, "
                            "so rerun to resume, or raise sweep.max_retries"
                        ) from err
                    if pool.lost(err) and gen == generation[slot]:
                        pool.replace(slot)  # the worker is gone: start a fresh one
                        generation[slot] += 1
                        anchors[slot] = None
                    log.warning(
                        "sweep: %s failed (%s); retry %d of %d",
                        _describe(plan, task),
                        what,
                        n,
                        max_retries,
                    )
                    queue.push_front(task)
                    continue
                if result.failure is not None:
                    raise _failure(result)
                writer.accept(result)
                done = sum(splits[s].cost for _, s, _ in result.member_points)
                done += sum(interior * splits[s].cost for _, _, s, _ in result.units)
                bar.update(done)
        clean = True
    finally:
        pool.close(abort=not clean)
        bar.close()
    assert not writer.waiting, "every unit's member points were planned"
    stats.seconds = time.perf_counter() - start
    return stats


def run_parallel_sweep(
    plan: SweepPlan,
    spec: WorkerSpec,
    splits: Mapping[str, Split],
    store: Store,
    *,
    backend: str,
    workers: int = 2,
    address: str | None = None,
    max_retries: int = 3,
    progress: bool = True,
) -> SweepStats:
    """Evaluate what ``plan`` lists on ``backend`` ("process" or "ray"); write to ``store``.

    Nothing is started when the plan is empty (a rerun of a finished sweep).
    """
    if backend not in ("process", "ray"):
        raise ConfigError(
            f"sweep backend must be 'process' or 'ray' here; got {backend!r} (use "
            "modeconn.engine.sweep.run_sweep for 'local')"
        )
    if address is not None and backend != "ray":
        raise ConfigError(f"sweep.address is only used by backend 'ray'; got backend {backend!r}")
    if not plan.member_todo and not plan.unit_todo:
        return SweepStats()
    pool: WorkerPool
    if backend == "process":
        pool = ProcessPool(spec)
    else:
        pool = RayPool(spec, workers=workers, address=address)
    return drive(
        plan,
        pool,
        splits,
        store,
        workers=workers,
        max_retries=max_retries,
        keep_examples=spec.keep_examples,
        progress=progress,
    )
