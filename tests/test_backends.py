"""Sweep backends: tasks, retries, hash checks, and the same store from every backend."""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_study_dict
from safetensors.torch import load_file, save_file

from modeconn.cli import main
from modeconn.config.study import load_study, parse_study
from modeconn.engine.backends import (
    ProcessPool,
    RayPool,
    Task,
    TaskResult,
    WorkerSpec,
    _TaskQueue,
    check_ray_address,
    drive,
    make_tasks,
    run_task,
)
from modeconn.engine.sweep import MemberRef, SweepPlan
from modeconn.errors import ConfigError, ModeconnError, PopulationError
from modeconn.pipeline import StudyRunner
from modeconn.store import Store

# Another process evaluates the same float32 forward passes; sums may round differently.
STORE_RTOL = 1e-6
KEY_COLUMNS = {
    "path_points": ["member_a", "member_b", "hash_a", "hash_b", "path", "grid", "alpha", "split"],
    "member_points": ["member_id", "member_hash", "split", "sample_seed", "sample_size"],
}


@dataclass(frozen=True)
class Tiny:
    study: dict[str, Any]  # sweeps the trained members (no train section)
    reference: Path  # the store of an uninterrupted in-process (local) sweep


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """4 tiny members (2 per arm) trained once, grid 5, and their in-process store."""
    root = tmp_path_factory.mktemp("backends")
    data = tiny_study_dict(tiny_model_dir, data_root, root / "train", members=2, points=5)
    (root / "train.yaml").write_text(yaml.safe_dump(data))
    trainer = StudyRunner(load_study(root / "train.yaml"), progress=False)
    trainer.train()
    study = {k: v for k, v in data.items() if k != "train"}
    study["population"] = {"dir": str(trainer.study.members_dir())}
    runner = StudyRunner(load_study(_write(study, root / "local")), progress=False)
    runner.sweep()
    return Tiny(study, runner.study.store_path())


def _write(study: dict[str, Any], folder: Path, **sweep: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = dict(study, output_dir=str(folder / "out"))
    if sweep:
        data["sweep"] = sweep
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    with Store(path, create=False) as store:
        assert store.integrity_check() == "ok"
        return {
            "path_points": store.path_points(with_examples=True).drop(columns=["created"]),
            "member_points": store.member_points(with_examples=True).drop(columns=["created"]),
        }


def _assert_same_store(got: Path, want: Path) -> None:
    """Row for row: keys exactly, values to STORE_RTOL (rows come sorted by key)."""
    mine, theirs = _tables(got), _tables(want)
    for table, keys in KEY_COLUMNS.items():
        g, w = mine[table], theirs[table]
        pd.testing.assert_frame_equal(g[keys], w[keys], check_exact=True)
        g_ex, w_ex = g.pop("example_losses"), w.pop("example_losses")
        pd.testing.assert_frame_equal(g, w, check_exact=False, rtol=STORE_RTOL)
        for a, b in zip(g_ex, w_ex, strict=True):
            np.testing.assert_allclose(a, b, rtol=STORE_RTOL, atol=STORE_RTOL)


# --------------------------------------------------------------------------- tasks


def _full_plan(n: int, path_splits: Sequence[str], member_splits: Sequence[str]) -> SweepPlan:
    """The plan `plan_sweep` makes for an empty store (no models needed)."""
    refs = tuple(MemberRef(f"m{i}", f"h{i}") for i in range(n))
    units = tuple((i, j, s) for i in range(n) for j in range(i + 1, n) for s in path_splits)
    points = tuple((i, s) for i in range(n) for s in member_splits)
    return SweepPlan(refs, (0.0, 0.5, 1.0), "linear:3", points, units, len(units), len(points))


@pytest.mark.parametrize("workers", [1, 2, 7])
def test_tasks_share_endpoint_a_and_carry_each_member_point_once(workers: int) -> None:
    plan = _full_plan(9, ["mnli", "hans_lo"], ["mnli", "hans_lo", "hans_sub"])
    tasks = make_tasks(plan, workers=workers)
    units = [u for t in tasks for u in t.units]
    points = [p for t in tasks for p in t.member_points]
    assert sorted(units) == sorted(plan.unit_todo) and len(set(units)) == len(units)
    assert sorted(points) == sorted(plan.member_todo) and len(set(points)) == len(points)
    # every unit of a task shares its endpoint A, and A only grows along the task list
    assert all(a == t.anchor for t in tasks for a, _, _ in t.units)
    anchors = [t.anchor for t in tasks if t.units]
    assert anchors == sorted(anchors)
    # both splits of a pair go to one task, so B is loaded once for them
    home = {(a, b): t.id for t in tasks for a, b, _ in t.units}
    assert all(home[(a, b)] == t.id for t in tasks for a, b, _ in t.units)
    # a member point rides with the first task that loads its member
    first = {}
    for t in tasks:
        for a, b, _ in t.units:
            first.setdefault(a, t.id)
            first.setdefault(b, t.id)
    assert all(first[m] == t.id for t in tasks for m, _ in t.member_points)
    # 36 pairs × 2 splits = 72 units: about 4 tasks per worker, at most 16 units each
    assert max(len(t.units) for t in tasks) <= 16
    assert len(tasks) >= min(4 * workers, 36)


def test_members_with_nothing_left_to_pair_get_tasks_of_their_own() -> None:
    plan = _full_plan(3, ["mnli"], ["mnli", "hans_sub"])
    plan = SweepPlan(plan.members, plan.alphas, plan.grid, plan.member_todo, (), 3, 6)
    tasks = make_tasks(plan, workers=2)
    assert [(t.anchor, t.units) for t in tasks] == [(0, ()), (1, ()), (2, ())]
    assert tasks[1].member_points == ((1, "mnli"), (1, "hans_sub"))


def test_a_worker_keeps_to_its_endpoint_a_while_it_has_tasks() -> None:
    tasks = make_tasks(_full_plan(5, ["mnli", "hans_lo"], []), workers=2)
    queue = _TaskQueue(tasks)
    first = queue.pop()
    assert first.id == 0
    other = queue.pop(prefer=3)
    assert other.anchor == 3  # a worker busy with A = 3 stays on it
    assert queue.pop(prefer=first.anchor).anchor == first.anchor
    queue.push_front(other)  # a retried task goes first
    assert queue.pop() is other


# --------------------------------------------------------------------------- study file


def test_sweep_section_defaults_and_errors(tiny: Tiny, tmp_path: Path) -> None:
    sweep = parse_study(tiny.study, base_dir=tmp_path).sweep
    assert (sweep.backend, sweep.workers, sweep.threads_per_worker) == ("local", 2, 1)
    assert (sweep.address, sweep.max_retries) == (None, 3)
    ray = {"backend": "ray", "workers": 4, "threads_per_worker": 2, "address": "head-node:6379"}
    assert parse_study({**tiny.study, "sweep": ray}, base_dir=tmp_path).sweep.workers == 4
    bad = [
        ({"backend": "dask"}, r"sweep\.backend: expected 'local', 'process' or 'ray'"),
        ({"workers": 0}, r"sweep\.workers: .*greater than or equal to 1"),
        ({"threads": 2}, r"sweep\.threads: unknown field"),
        ({"backend": "process", "address": "h:1"}, r"address is only used by backend 'ray'"),
    ]
    for section, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_study({**tiny.study, "sweep": section}, base_dir=tmp_path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_ray_address_fails_fast_naming_the_fix(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_closed_port()}"
    study = _write(tiny.study, tmp_path, backend="ray", address=address)
    start = time.monotonic()
    code = main(["run", str(study), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - start < 60
    line = next(ln for ln in err.splitlines() if ln.startswith("modeconn: error:"))
    assert repr(address) in line and "ray start --head" in line and "address: null" in line
    with pytest.raises(ConfigError, match="is not host:port"):
        check_ray_address("ray://head-node")


def test_an_address_that_answers_but_is_not_ray_gives_up_in_time() -> None:
    pytest.importorskip("ray")
    # a loopback port nobody listens on: refused at once, never a Ray cluster
    closed = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"'{closed}': no Ray cluster answers"):
        check_ray_address(closed, timeout=0.5)
    assert time.monotonic() - start < 5
    # a port that accepts connections and says nothing: ray.init alone would retry for
    # many minutes; the probe gives up after its timeout
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ConfigError, match=rf"'{address}': no Ray cluster answered .* 4 s"):
            check_ray_address(address, timeout=0.5, probe_timeout=4)
        assert time.monotonic() - start < 15


# --------------------------------------------------------------------------- same store


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_backend_writes_the_same_store_as_local(tiny: Tiny, tmp_path: Path, backend: str) -> None:
    ray = pytest.importorskip("ray") if backend == "ray" else None
    path = _write(tiny.study, tmp_path, backend=backend, workers=2, threads_per_worker=1)
    runner = StudyRunner(load_study(path), progress=False)
    stats = runner.sweep()
    n, study = 4, runner.study
    units = n * (n - 1) // 2 * len(study.paths.splits)
    assert stats.member_evaluations == n * len(study.eval_splits())
    assert stats.path_evaluations == units * (study.paths.points - 2)
    assert stats.units_written == units
    assert n <= stats.loads <= 2 * n  # each of 2 workers reads a member at most once
    _assert_same_store(study.store_path(), tiny.reference)
    if ray is not None:  # the backend started its own local Ray and shut it down
        assert not ray.is_initialized()
    # a rerun finds everything done and starts no worker
    again = StudyRunner(load_study(path), progress=False).sweep()
    assert again.member_evaluations == again.path_evaluations == again.units_written == 0


# --------------------------------------------------------------------------- retries


class _Lost(Exception):
    """Stands for a worker that died mid-task."""


class InlinePool:
    """A pool that runs each task in this process when it is submitted.

    ``lose`` names task ids whose first attempt is lost with their worker; ``fail`` names
    task ids that raise on every attempt.
    """

    name = "inline"

    def __init__(
        self, spec: WorkerSpec, *, lose: Iterable[int] = (), fail: Iterable[int] = ()
    ) -> None:
        self.spec, self.lose, self.fail = spec, set(lose), set(fail)
        self.replaced: list[int] = []
        self.submitted: list[int] = []
        self.closed: bool | None = None

    def start(self, slots: int) -> None:
        self.slots = slots

    def submit(self, slot: int, task: Task) -> concurrent.futures.Future[TaskResult]:
        self.submitted.append(task.id)
        future: concurrent.futures.Future[TaskResult] = concurrent.futures.Future()
        if task.id in self.lose:
            self.lose.discard(task.id)
            future.set_exception(_Lost(f"worker of slot {slot} died"))
        elif task.id in self.fail:
            future.set_exception(RuntimeError("out of memory"))
        else:
            future.set_result(run_task(self.spec, task))
        return future

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        return list(handles[:1])

    def result(self, handle: Any) -> TaskResult:
        return handle.result()

    def lost(self, error: BaseException) -> bool:
        return isinstance(error, _Lost)

    def replace(self, slot: int) -> None:
        self.replaced.append(slot)

    def close(self, *, abort: bool) -> None:
        self.closed = abort


def _planned(study: dict[str, Any], folder: Path) -> tuple[StudyRunner, Store, SweepPlan]:
    runner = StudyRunner(load_study(_write(study, folder)), progress=False)
    store = runner.open_store()
    return runner, store, runner.plan(store)


def test_lost_worker_is_retried_and_the_store_is_complete(tiny: Tiny, tmp_path: Path) -> None:
    runner, store, plan = _planned(tiny.study, tmp_path)
    pool = InlinePool(runner.worker_spec(plan), lose=[0, 3])
    with store:
        stats = drive(plan, pool, runner.splits(), store, workers=2, max_retries=1, progress=False)
    assert pool.submitted.count(0) == pool.submitted.count(3) == 2
    assert len(pool.replaced) == 2 and pool.closed is False
    assert stats.units_written == plan.n_units
    _assert_same_store(runner.study.store_path(), tiny.reference)


def test_task_failing_past_max_retries_stops_and_keeps_finished_units(
    tiny: Tiny, tmp_path: Path
) -> None:
    runner, store, plan = _planned(tiny.study, tmp_path)
    tasks = make_tasks(plan, workers=2)
    last = tasks[-1].id
    pool = InlinePool(runner.worker_spec(plan), fail=[last])
    with store, pytest.raises(ModeconnError, match=rf"task {last} .* failed 3 times .*rerun"):
        drive(plan, pool, runner.splits(), store, workers=2, max_retries=2, progress=False)
    assert pool.submitted.count(last) == 3 and pool.replaced == [] and pool.closed is True
    with Store(runner.study.store_path(), create=False) as done:
        assert done.integrity_check() == "ok"
        assert done.counts()["units"] == plan.n_units - len(tasks[-1].units)


def test_member_changed_since_planning_is_an_error_never_a_row(tiny: Tiny, tmp_path: Path) -> None:
    members = tmp_path / "members"
    shutil.copytree(tiny.study["population"]["dir"], members)
    study = dict(tiny.study, population={"dir": str(members)})
    runner, store, plan = _planned(study, tmp_path)
    changed = plan.members[-1].id
    source = runner.population()[changed].source
    weights = load_file(source)
    save_file({k: v + 1e-3 if v.is_floating_point() else v for k, v in weights.items()}, source)
    pool = InlinePool(runner.worker_spec(plan))
    with store, pytest.raises(PopulationError, match=rf"'{changed}' .* changed since the sweep"):
        drive(plan, pool, runner.splits(), store, workers=2, progress=False)
    assert len(pool.submitted) == len(set(pool.submitted))  # not retried: it would fail again
    with Store(runner.study.store_path(), create=False) as done:
        assert changed not in set(done.member_points()["member_id"])
        paths = done.path_points()
        assert changed not in set(paths["member_a"]) | set(paths["member_b"])


def test_worker_spec_is_small_picklable_and_absolute(tiny: Tiny, tmp_path: Path) -> None:
    study = dict(tiny.study, eval=dict(tiny.study["eval"], dtype="bfloat16"))
    runner, store, plan = _planned(study, tmp_path)
    store.close()
    spec = runner.worker_spec(plan)
    assert len(pickle.dumps(spec)) < 64 << 10  # paths and hashes, no tensors
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert [m.hash for m in spec.members] == [m.hash for m in plan.members]
    assert all(Path(m.path).is_absolute() for m in spec.members)
    assert all(split.path.is_absolute() for split, _ in spec.splits)
    assert {key for _, key in spec.splits} == {s.key for s in runner.splits().values()}
    # the workers evaluate exactly as this process would
    assert (spec.device, spec.dtype, spec.compile) == ("cpu", "bfloat16", False)


def _die_once(spec: WorkerSpec, task: Task) -> TaskResult:
    """Kill this worker process on task 1's first attempt (spawned workers import this)."""
    marker = Path(os.environ["MODECONN_TEST_DIE_ONCE"])
    if task.id == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return run_task(spec, task)


@pytest.mark.slow
def test_a_killed_worker_process_is_replaced(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODECONN_TEST_DIE_ONCE", str(tmp_path / "died"))
    runner, store, plan = _planned(tiny.study, tmp_path)
    pool = ProcessPool(runner.worker_spec(plan), target=_die_once)
    with store:
        stats = drive(plan, pool, runner.splits(), store, workers=2, max_retries=1, progress=False)
    assert (tmp_path / "died").is_file() and stats.units_written == plan.n_units
    assert "task 1 " in caplog.text and "BrokenProcessPool" in caplog.text
    _assert_same_store(runner.study.store_path(), tiny.reference)


class _KillsAnActorOnce(RayPool):
    """Kills the actor that was just handed task 1, the first time (a lost worker)."""

    killed = 0

    def submit(self, slot: int, task: Task) -> Any:
        handle = super().submit(slot, task)
        if task.id == 1 and not self.killed:
            self.killed += 1
            self._ray.kill(self._actors[slot], no_restart=True)
        return handle


@pytest.mark.slow
def test_a_killed_ray_actor_is_replaced(
    tiny: Tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ray = pytest.importorskip("ray")
    runner, store, plan = _planned(tiny.study, tmp_path)
    pool = _KillsAnActorOnce(runner.worker_spec(plan), workers=2)
    with store:
        stats = drive(plan, pool, runner.splits(), store, workers=2, max_retries=1, progress=False)
    assert pool.killed == 1 and stats.units_written == plan.n_units
    assert "task 1 " in caplog.text and "retry 1 of 1" in caplog.text
    assert not ray.is_initialized()
    _assert_same_store(runner.study.store_path(), tiny.reference)


# --------------------------------------------------------------------------- resume on Ray


def _units(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM units").fetchone()[0])
    except sqlite3.Error:
        return 0


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(pid: int) -> dict[tuple[int, int], str]:
    """Every live process below `pid`: (pid, start time) → command line."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(int(entry.name))
        if stat is not None and stat[0] != "Z":
            children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
    found: dict[tuple[int, int], str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                cmd = Path(f"/proc/{child[0]}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            found[child] = cmd.decode(errors="replace").strip()
            todo.append(child[0])
    return found


def _alive(processes: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """The processes still running (same pid and start time; zombies count as gone)."""
    alive = set()
    for pid, started in processes:
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z" and stat[2] == started:
            alive.add((pid, started))
    return alive


def _wait_gone(processes: Iterable[tuple[int, int]], seconds: float) -> set[tuple[int, int]]:
    deadline = time.monotonic() + seconds
    while (left := _alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.slow
def test_killed_ray_sweep_resumes_to_the_uninterrupted_store(tiny: Tiny, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    # longer units than the module's study, so the kill lands mid-sweep
    study = dict(tiny.study, paths=dict(tiny.study["paths"], points=11))
    study["splits"] = {
        name: dict(cfg, sample_size=96) if cfg.get("sample_size") else cfg
        for name, cfg in study["splits"].items()
    }
    reference = StudyRunner(load_study(_write(study, tmp_path / "ref")), progress=False)
    reference.sweep()
    total = 4 * 3 // 2 * len(reference.study.paths.splits)

    path = _write(study, tmp_path / "ray", backend="ray", workers=2)
    store = tmp_path / "ray" / "out" / "results.sqlite"
    cmd = [sys.executable, "-m", "modeconn.cli", "run", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    ray: dict[tuple[int, int], str] = {}
    while _units(store) < total // 3 and proc.poll() is None and time.monotonic() < deadline:
        ray.update(_descendants(proc.pid))
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    assert proc.returncode == -signal.SIGKILL
    seen = _units(store)
    assert 0 < seen < total, (seen, total)
    # the local Ray it started dies with it: GCS, raylet and the actors' workers at once
    assert any("raylet" in cmd for cmd in ray.values()), ray
    agents = {p for p, cmd in ray.items() if cmd.startswith("ray::") and "Agent" in cmd}
    assert not _wait_gone(ray.keys() - agents, 30), ray

    # the rerun starts a fresh local Ray (never the dead one) and resumes
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _assert_same_store(store, reference.study.store_path())
    # Ray's two idle agents exit by themselves, after their 60 s attempt to report the
    # raylet's death to the GCS that died with it
    assert not _wait_gone(agents, max(0.0, 90 - (time.monotonic() - killed))), ray


# --------------------------------------------------------------------------- orphans

_DRIVER = '''
import os, sys, time
from pathlib import Path

from modeconn.engine.pools import ProcessPool


def hold(spec, task):
    """A worker's task: say who it is, then work for ten minutes."""
    Path(sys.argv[1], f"worker-{os.getpid()}").write_text(str(os.getppid()))
    time.sleep(600)


if __name__ == "__main__":
    pool = ProcessPool(None, target=hold)
    pool.start(2)
    handles = [pool.submit(slot, slot) for slot in range(2)]
    pool.wait(handles, 600)
'''


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_process_worker_outlives_its_driver(tmp_path: Path, sig: int) -> None:
    """A driver killed while its process pool works: its workers are gone within 5 s.

    The driver is a bare script (no `modeconn` command, so no SIGTERM handling of its
    own): the workers must notice their parent's death by themselves.
    """
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("worker-*"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the driver died by itself"
        time.sleep(0.05)
    marks = list(tmp_path.glob("worker-*"))
    assert len(marks) == 2, "the workers did not start"
    assert {int(m.read_text()) for m in marks} == {proc.pid}  # the driver's own children
    workers = {(pid, stat[2]) for pid in (int(m.name[7:]) for m in marks) if (stat := _stat(pid))}
    children = set(_descendants(proc.pid))  # the workers and Python's resource tracker
    assert workers <= children, (workers, children)
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    left = _wait_gone(children, 5.0)
    assert not left, {p: Path(f"/proc/{p[0]}/cmdline").read_bytes() for p in left}


@pytest.mark.slow
def test_sigterm_unwinds_a_process_sweep_and_resumes(tiny: Tiny, tmp_path: Path) -> None:
    """`modeconn run` sent SIGTERM mid-sweep: it shuts its pool down, exits 143 with one
    line, leaves a sound store and no process; the rerun resumes to the reference."""
    study = dict(tiny.study, paths=dict(tiny.study["paths"], points=11))
    path = _write(study, tmp_path, backend="process", workers=2)
    store = tmp_path / "out" / "results.sqlite"
    cmd = [sys.executable, "-m", "modeconn.cli", "run", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children: dict[tuple[int, int], str] = {}
    deadline = time.monotonic() + 180
    while _units(store) < 1 and proc.poll() is None and time.monotonic() < deadline:
        children.update(_descendants(proc.pid))
        time.sleep(0.01)
    children.update(_descendants(proc.pid))
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == (
        "modeconn: terminated (SIGTERM); rerun the same command to resume"
    ), err
    assert "Traceback" not in err, err
    assert sum("spawn_main" in c for c in children.values()) == 2, children
    assert not _wait_gone(children, 5.0), children
    with Store(store, create=False) as s:
        assert s.integrity_check() == "ok"
    # the rerun plans what is missing and ends with the uninterrupted run's rows (grid 11)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Store(store, create=False) as s:
        assert s.integrity_check() == "ok" and s.counts()["units"] == 6 * len(
            study["paths"]["splits"]
        )
