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
:class:`WorkerSpec` (paths, split specs, hashes; no tensors), builds its evaluation
context once — tokenizer, prepared splits (checked against the keys the plan used),
skeleton :class:`~modeconn.engine.evaluate.Evaluator` — and keeps an LRU cache of member
points (:data:`WORKER_CACHE_BYTES`, at least two members). It reads members by path from
storage that every worker shares, and checks each member's weight hash against the
plan's: a member whose file changed since planning is a
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

import concurrent.futures
import logging
import math
import multiprocessing
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from modeconn import errors
from modeconn.data.text import PreparedSplit, SplitSpec
from modeconn.engine.evaluate import EvalResult, Evaluator
from modeconn.engine.sweep import (
    SweepPlan,
    SweepStats,
    _member_point,
    _PointCache,
    unit_key,
    unit_rows,
)
from modeconn.errors import ConfigError, DataError, ModeconnError, PopulationError
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
    "check_ray_address",
    "drive",
    "make_tasks",
    "run_parallel_sweep",
    "run_task",
]

log = logging.getLogger("modeconn")

CONNECT_TIMEOUT_S = 5.0  # how long a Ray address may take to accept a connection
PROBE_TIMEOUT_S = 60.0  # how long joining a Ray cluster may take (a child process)
WORKER_CACHE_BYTES = 1 << 30  # member points a worker keeps (at least 2 members)
MAX_UNITS_PER_TASK = 16  # a lost worker loses at most two tasks of this size
TASKS_PER_WORKER = 4  # cut the plan finer than one task per worker, to balance the load
TASK_DEPTH = 2  # tasks handed to one worker at a time: one running, one queued
POLL_S = 1.0  # how often the driver wakes while waiting (keeps Ctrl-C responsive)


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class MemberSource:
    """Where a worker reads a member, and the weight hash the plan was made with."""

    id: str
    path: str  # absolute; the same path on every worker (shared storage)
    hash: str


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build its evaluation context; small and picklable.

    ``splits`` pairs each split's spec with the key the plan used, so a worker whose data
    files tokenize differently fails instead of writing rows under the wrong key.
    ``members`` follows the plan's member order: tasks name members by index.
    """

    model: str  # an absolute model directory, or a `builtin:` name resolved per worker
    label_order: tuple[str, ...]
    num_layers: int | None
    splits: tuple[tuple[SplitSpec, str], ...]
    members: tuple[MemberSource, ...]
    alphas: tuple[float, ...]
    max_length: int = 128
    max_tokens: int = 1024
    max_batch: int = 128
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False
    threads: int = 1
    keep_examples: bool = True
    cache_bytes: int = WORKER_CACHE_BYTES


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


# --------------------------------------------------------------------------- tasks


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


# --------------------------------------------------------------------------- worker side


class _WorkerContext:
    """One worker's tokenizer, prepared splits, skeleton evaluator and member cache."""

    def __init__(self, spec: WorkerSpec) -> None:
        from modeconn.data.text import prepare_split
        from modeconn.models.hf import classifier_skeleton, load_tokenizer, resolve_pretrained

        self.spec = spec
        torch.set_num_threads(spec.threads)
        model_dir = resolve_pretrained(spec.model)
        tokenizer = load_tokenizer(model_dir)
        self.splits: dict[str, PreparedSplit] = {}
        for split_spec, key in spec.splits:
            split = prepare_split(
                split_spec,
                tokenizer,
                spec.label_order,
                max_length=spec.max_length,
                max_tokens=spec.max_tokens,
                max_batch=spec.max_batch,
            )
            if split.key != key:
                raise DataError(
                    f"split '{split_spec.name}' ({split_spec.path}) reads as {split.key} on "
                    f"worker {_where()}, but the sweep was planned with {key}; give every "
                    "worker the same data files and the same modeconn/tokenizer versions"
                )
            self.splits[split_spec.name] = split  # the evaluator moves it to its device
        skeleton = classifier_skeleton(model_dir, spec.label_order, num_layers=spec.num_layers)
        self.evaluator = Evaluator(
            skeleton, device=spec.device, dtype=spec.dtype, compile=spec.compile
        )
        self.sources = {m.id: m for m in spec.members}
        self.cache = _PointCache(self._load, spec.cache_bytes)

    def _load(self, member_id: str) -> list[torch.Tensor]:
        from modeconn.population.members import load_state_dict, weights_hash

        src = self.sources[member_id]
        state = load_state_dict(src.path, name=member_id)
        found = weights_hash(state)
        if found != src.hash:
            raise PopulationError(
                f"member {member_id!r} ({src.path}) changed since the sweep was planned: its "
                f"weights hash is {found[:12]}…, the plan has {src.hash[:12]}…; rerun the "
                "sweep so it plans with the current weights (rows are keyed by weight hash)"
            )
        return self.evaluator.as_point(state, name=member_id)

    def run(self, task: Task) -> TaskResult:
        start = time.perf_counter()
        loads = self.cache.loads
        keep = self.spec.keep_examples
        ev, members = self.evaluator, self.spec.members
        points = []
        for i, s in task.member_points:
            res = ev.evaluate_member(
                self.cache.get(members[i].id), self.splits[s], per_example=keep
            )
            points.append((i, s, res))
        units = []
        for a, b, s in task.units:
            point_a = self.cache.get(members[a].id)
            point_b = self.cache.get(members[b].id)
            split = self.splits[s]
            results = tuple(
                ev.evaluate_lerp(point_a, point_b, alpha, split, per_example=keep)
                for alpha in self.spec.alphas[1:-1]
            )
            units.append((a, b, s, results))
        return TaskResult(
            task_id=task.id,
            member_points=tuple(points),
            units=tuple(units),
            loads=self.cache.loads - loads,
            seconds=time.perf_counter() - start,
            worker=_where(),
        )


_CONTEXT: _WorkerContext | None = None  # one per worker process, built on its first task


def _where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(spec: WorkerSpec, task: Task) -> TaskResult:
    """Evaluate one task in this process, building the worker's context on first use.

    A :class:`~modeconn.errors.ModeconnError` comes back as ``TaskResult.failure`` (the
    driver raises it, without retrying); any other exception propagates (and is retried).
    """
    global _CONTEXT
    try:
        if _CONTEXT is None or _CONTEXT.spec != spec:
            _CONTEXT = None  # free the old context before building the next
            _CONTEXT = _WorkerContext(spec)
        return _CONTEXT.run(task)
    except ModeconnError as err:
        return TaskResult(task.id, (), (), 0, 0.0, _where(), (type(err).__name__, str(err)))


# --------------------------------------------------------------------------- pools


class WorkerPool(Protocol):
    """Slots that each run one worker; :func:`drive` hands tasks to slots.

    ``submit`` returns a handle that ``wait`` and ``result`` take. When ``result`` raises
    an error for which ``lost`` is true, the slot's worker is gone and ``replace`` starts
    a fresh one.
    """

    name: str

    def start(self, slots: int) -> None: ...

    def submit(self, slot: int, task: Task) -> Any: ...

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]: ...

    def result(self, handle: Any) -> TaskResult: ...

    def lost(self, error: BaseException) -> bool: ...

    def replace(self, slot: int) -> None: ...

    def close(self, *, abort: bool) -> None: ...


TaskFn = Callable[[WorkerSpec, Task], TaskResult]


class ProcessPool:
    """One single-process ``ProcessPoolExecutor`` per worker (``spawn`` context).

    One executor per worker, not one executor for all: a killed worker breaks only its
    own executor, so only its tasks are retried, and a worker can be given the tasks
    that share its current endpoint A.
    """

    name = "process"

    def __init__(self, spec: WorkerSpec, *, target: TaskFn = run_task) -> None:
        self.spec, self.target = spec, target
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[concurrent.futures.ProcessPoolExecutor] = []

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=self._context)

    def start(self, slots: int) -> None:
        self._slots = [self._executor() for _ in range(slots)]

    def submit(self, slot: int, task: Task) -> concurrent.futures.Future[TaskResult]:
        return self._slots[slot].submit(self.target, self.spec, task)

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        done, _ = concurrent.futures.wait(
            handles, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        return list(done)

    def result(self, handle: Any) -> TaskResult:
        result = handle.result()
        assert isinstance(result, TaskResult)
        return result

    def lost(self, error: BaseException) -> bool:
        return isinstance(error, BrokenProcessPool)

    def replace(self, slot: int) -> None:
        _stop_executor(self._slots[slot], abort=True)
        self._slots[slot] = self._executor()

    def close(self, *, abort: bool) -> None:
        slots, self._slots = self._slots, []
        for executor in slots:
            _stop_executor(executor, abort=abort)


def _stop_executor(executor: concurrent.futures.ProcessPoolExecutor, *, abort: bool) -> None:
    if abort:
        # the executor has no public way to stop a running task; its processes are private
        for proc in list((getattr(executor, "_processes", None) or {}).values()):
            proc.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


class _RayWorker:
    """The body of a Ray actor: one evaluation context per actor process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec

    def run(self, task: Task) -> TaskResult:
        return run_task(self.spec, task)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "sweep.backend 'ray' needs the package 'ray'; install it with "
            "`pip install 'modeconn[ray]'` (or `pip install 'ray>=2.9'`), or use "
            "`backend: process` for a pool on this machine"
        ) from None
    return ray


def check_ray_address(
    address: str,
    *,
    timeout: float = CONNECT_TIMEOUT_S,
    probe_timeout: float | None = PROBE_TIMEOUT_S,
) -> None:
    """Raise ConfigError unless a Ray cluster answers at ``address``, within bounded time.

    ``ray.init`` retries an address for many minutes, so this first checks in ``timeout``
    seconds that ``host:port`` accepts a TCP connection, then (unless ``probe_timeout``
    is None) joins the cluster from a child process that is killed after
    ``probe_timeout`` seconds: a port that answers but is not Ray fails here, not in a
    hang. ``auto`` is only probed.

    >>> check_ray_address("no-port-here")
    Traceback (most recent call last):
    ...
    modeconn.errors.ConfigError: sweep.address 'no-port-here' is not host:port; ...
    """
    if address != "auto":
        target = address.removeprefix("ray://").split("/", 1)[0]
        host, sep, port = target.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            raise ConfigError(
                f"sweep.address {address!r} is not host:port; write the head node's address, "
                "e.g. 10.0.0.5:6379 (or ray://10.0.0.5:10001, or auto), or null to start a "
                "local Ray"
            )
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                pass
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise ConfigError(
                f"sweep.address {address!r}: no Ray cluster answers there within {timeout:g} "
                f"s ({reason}); start one with `ray start --head --port={port}` on {host}, fix "
                "the address, or set `address: null` to start a local Ray"
            ) from None
    if probe_timeout is not None:
        _probe_ray(address, probe_timeout)


_PROBE = (
    "import logging, sys, ray; "
    "ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.ERROR); "
    "ray.shutdown()"
)


def _probe_ray(address: str, timeout: float) -> None:
    """Join and leave the cluster from a child process, killed after ``timeout`` seconds."""
    import subprocess
    import sys

    try:
        subprocess.run(
            [sys.executable, "-c", _PROBE, address],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"sweep.address {address!r}: no Ray cluster answered there within {timeout:g} s "
            "(something listens, but it is not a Ray head node's GCS port, or the cluster "
            "is unhealthy); fix the address (the head's port, 6379 by default), or set "
            "`address: null` to start a local Ray"
        ) from None
    except subprocess.CalledProcessError as err:
        lines = [ln for ln in (err.stderr or "").splitlines() if ln.strip()]
        reason = _one_line(Exception(lines[-1])) if lines else f"exit status {err.returncode}"
        raise ConfigError(
            f"sweep.address {address!r}: could not join the Ray cluster ({reason}); check the "
            "address and that the cluster runs the same Ray and Python versions, or set "
            "`address: null` to start a local Ray"
        ) from None


class RayPool:
    """One Ray actor per worker, each reserving ``threads`` CPUs.

    With ``address=None`` a fresh local Ray is started with ``workers × threads`` CPUs
    (``address="local"``, so a cluster left behind by another process is never joined)
    and shut down by :meth:`close`; Ray's head processes are tied to this process and die
    with it. An address joins that cluster after :func:`check_ray_address`. If Ray is
    already initialized in this process, its session is used and left running.
    """

    name = "ray"

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        workers: int,
        address: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        probe_timeout: float | None = PROBE_TIMEOUT_S,
    ) -> None:
        self.spec, self.workers = spec, workers
        self.address, self.connect_timeout = address, connect_timeout
        self.probe_timeout = probe_timeout
        self._ray: Any = None
        self._owns = False
        self._actors: list[Any] = []
        self._actor_class: Any = None

    def _init(self, ray: Any) -> None:
        threads = self.spec.threads
        if self.address in (None, "local"):
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network, no prompt
            try:
                ray.init(
                    address="local",
                    num_cpus=self.workers * threads,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except Exception as err:
                raise ConfigError(
                    f"could not start a local Ray ({type(err).__name__}: {_one_line(err)}); "
                    "check that /tmp is writable, or use `backend: process`"
                ) from None
            return
        assert self.address is not None
        check_ray_address(
            self.address, timeout=self.connect_timeout, probe_timeout=self.probe_timeout
        )
        try:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as err:
            raise ConfigError(
                f"sweep.address {self.address!r}: could not join the Ray cluster "
                f"({type(err).__name__}: {_one_line(err)}); check the address and that the "
                "cluster runs the same Ray and Python versions, or set `address: null` to "
                "start a local Ray"
            ) from None

    def start(self, slots: int) -> None:
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            self._init(ray)
            self._owns = True
        try:
            cpus = float(ray.cluster_resources().get("CPU", 0))
            need = slots * self.spec.threads
            if cpus < need:
                raise ConfigError(
                    f"the Ray cluster has {cpus:g} CPUs, but {slots} workers × "
                    f"{self.spec.threads} threads_per_worker need {need}; lower sweep.workers "
                    "or sweep.threads_per_worker, or add nodes"
                )
            self._actor_class = ray.remote(num_cpus=self.spec.threads)(_RayWorker)
            self._actors = [self._actor_class.remote(self.spec) for _ in range(slots)]
        except BaseException:
            self.close(abort=True)
            raise

    def submit(self, slot: int, task: Task) -> Any:
        return self._actors[slot].run.remote(task)

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        ready, _ = self._ray.wait(list(handles), num_returns=1, timeout=timeout)
        return list(ready)

    def result(self, handle: Any) -> TaskResult:
        result = self._ray.get(handle)
        assert isinstance(result, TaskResult)
        return result

    def lost(self, error: BaseException) -> bool:
        # a RayTaskError is an exception raised by our code in a live actor; anything else
        # Ray raises (actor died, worker crashed, node lost) means the actor is gone
        return not isinstance(error, self._ray.exceptions.RayTaskError)

    def replace(self, slot: int) -> None:
        self._kill(self._actors[slot])
        self._actors[slot] = self._actor_class.remote(self.spec)

    def _kill(self, actor: Any) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # already dead, or the cluster is gone
            log.debug("ray.kill of a sweep actor failed", exc_info=True)

    def close(self, *, abort: bool) -> None:
        if self._ray is None:
            return
        actors, self._actors = self._actors, []
        for actor in actors:
            self._kill(actor)
        if self._owns:
            self._owns = False
            self._ray.shutdown()


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- driver


class _Writer:
    """The store's one writer: member points first, then units whose endpoints are in."""

    def __init__(
        self,
        plan: SweepPlan,
        splits: Mapping[str, PreparedSplit],
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
    splits: Mapping[str, PreparedSplit],
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
    total = sum(splits[s].n_padded for _, s in plan.member_todo)
    total += sum(interior * splits[s].n_padded for _, _, s in plan.unit_todo)
    bar = tqdm(
        total=total,
        desc=f"sweep ({pool.name})",
        unit="tok",
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
                done = sum(splits[s].n_padded for _, s, _ in result.member_points)
                done += sum(interior * splits[s].n_padded for _, _, s, _ in result.units)
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
    splits: Mapping[str, PreparedSplit],
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
