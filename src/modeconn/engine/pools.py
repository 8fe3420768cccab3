"""The workers of a parallel sweep: their evaluation context, and the pools that run them.

A worker builds its context once from a :class:`~modeconn.engine.tasks.WorkerSpec`
(:func:`~modeconn.engine.spec.build_engine`, exactly as the runner builds its own), checks
every split's key against the plan's, and answers tasks (:func:`run_task`).
:class:`ProcessPool` runs workers as local processes, :class:`RayPool` as Ray actors; the
driver (:func:`modeconn.engine.backends.drive`) talks to either through
:class:`WorkerPool`.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

import torch

from modeconn.engine.spec import build_engine, check_keys
from modeconn.engine.sweep import _PointCache
from modeconn.engine.tasks import Task, TaskResult, WorkerSpec
from modeconn.errors import ConfigError, ModeconnError, PopulationError

log = logging.getLogger("modeconn")

CONNECT_TIMEOUT_S = 5.0  # how long a Ray address may take to accept a connection
PROBE_TIMEOUT_S = 60.0  # how long joining a Ray cluster may take (a child process)


class _WorkerContext:
    """One worker's prepared splits, skeleton evaluator and member cache."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        torch.set_num_threads(spec.threads)
        # the runner's own recipe: the same model, splits, options and BatchNorm policy
        self.evaluator, self.splits = build_engine(spec.engine)
        check_keys(self.splits, spec.keys, _where())
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

PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal this process gets when its parent dies
PARENT_POLL_S = 0.5  # how often a worker checks that its driver is still there


def _die_with_parent(parent: int) -> None:
    """Worker initializer: this worker ends when its driver ``parent`` ends, however it ends.

    A driver killed by SIGKILL runs no cleanup, so the worker must notice by itself. On
    Linux the kernel sends SIGKILL to the worker the moment its parent exits
    (``prctl(PR_SET_PDEATHSIG)``: the worker writes nothing but its answers to the
    driver, so nothing is lost). Everywhere, a daemon thread also polls ``os.getppid()``
    every :data:`PARENT_POLL_S` seconds and ends the process when the parent has changed
    (an orphan is re-parented to init or a subreaper). A driver that died before this ran
    is caught by the first check.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc to call: the thread below still watches
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="modeconn-watch-driver", daemon=True).start()


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
    that share its current endpoint A. No worker outlives this process: each one ends
    when its parent does (:func:`_die_with_parent`), also when the driver is killed with
    SIGKILL and runs no cleanup.
    """

    name = "process"

    def __init__(self, spec: WorkerSpec, *, target: TaskFn = run_task) -> None:
        self.spec, self.target = spec, target
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[concurrent.futures.ProcessPoolExecutor] = []

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=self._context,
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )

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
