"""SIGKILL a real `modeconn run` at random moments, resume it, and check the store.

    .venv/bin/python benchmarks/kill_harness.py                      # 20 kills, local backend
    .venv/bin/python benchmarks/kill_harness.py --kills 5 --backend ray
    .venv/bin/python benchmarks/kill_harness.py --kills 5 --backend process --signal TERM
    .venv/bin/python benchmarks/kill_harness.py --kills 3 --members 4   # a quick smoke run
    .venv/bin/python benchmarks/kill_harness.py --kills 3 --sequential 0.05 --landmarks 3
    .venv/bin/python benchmarks/kill_harness.py --kills 3 --sequential 0.01 --affinity 0.2

Set-up (in a temporary folder, or ``--workdir``): a tiny BERT classifier (width 16,
2 layers, the MiniLM vocabulary), ``--members`` members that are seeded perturbations of
it, and a study sweeping every pair on two splits (MNLI and HANS lexical overlap) at 11 α.

1. The reference: ``python -m modeconn.cli run ref.yaml --quiet`` runs uninterrupted
   (local backend) into its own store.
2. The same study with ``sweep.backend: --backend`` runs as a real child process, and is
   sent SIGKILL at a random moment: the harness draws a unit uniformly over the whole
   sweep, waits until the store holds that many, then waits a further random fraction
   of a unit's evaluation time and kills, so kills land mid-sweep, not at start-up. The
   next run resumes the killed store; when the store is already past the drawn unit it
   is resumed to completion, compared with the reference, and the kill starts a fresh
   store, so any number of kills fit in a sweep of any size. ``--signal TERM`` (or INT)
   sends that signal instead: the run unwinds (its pool is shut down, its transaction
   rolled back) and exits by itself.
3. After every kill the store is opened (which rolls back the unfinished transaction)
   and checked: ``integrity_check() == "ok"`` (every unit marker has all its rows, no
   row lacks a marker), no row duplicated, every row present also in the reference with
   the same loss (relative 1e-6). A kill that passes is *survived*.
4. The last store is resumed to completion and compared with the reference row for row:
   the same path and member rows, none lost, none duplicated.

Printed: one line per kill (units done when it landed, what was checked), then
``k/N kills survived``, and whether every completed store equals the reference. Also
counted: processes the killed run started (worker processes, Python's resource tracker,
Ray), recorded just before the kill, that were still alive ``--grace`` seconds (5) after
the run died; the harness kills those it finds (by pid) before going on. Exit status 0
only if every kill was survived, every completed store matched, and nothing outlived a
killed run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import (
    descendants,
    hans_lo_split,
    make_members,
    mnli_split,
    study_dict,
    tiny_model_dir,
    write_study,
)

KEY = ["hash_a", "hash_b", "path", "grid", "split", "sample_seed", "sample_size", "alpha"]
MEMBER_KEY = ["member_hash", "split", "sample_seed", "sample_size"]


@dataclass
class HarnessResult:
    kills: int = 0
    survived: int = 0
    rounds: int = 0  # stores run to completion and compared with the reference
    rounds_equal: int = 0
    orphans: int = 0  # processes still alive `grace` seconds after their run died
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.survived == self.kills
            and self.rounds_equal == self.rounds
            and self.rounds > 0
            and self.orphans == 0
        )


def _units(store: Path) -> int:
    """Completed units, read without writing (0 while the store does not exist yet)."""
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM units").fetchone()[0])
    except sqlite3.Error:
        return 0


def _sweep_seconds(store: Path) -> float:
    """From the first member point written to the last path row: the sweep's own time."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        first, last = conn.execute(
            "SELECT min(t), max(t) FROM (SELECT created AS t FROM member_points "
            "UNION ALL SELECT created AS t FROM path_points)"
        ).fetchone()
    return float(last - first)


def _tables(store: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    from modeconn.store import Store

    with Store(store, create=False) as s:
        check = s.integrity_check()
        paths = s.path_points().drop(columns=["created"])
        members = s.member_points().drop(columns=["created"])
    paths = paths.sort_values(KEY).reset_index(drop=True)
    members = members.sort_values(MEMBER_KEY).reset_index(drop=True)
    return paths, members, check


def _examples(store: Path) -> dict[tuple[object, ...], np.ndarray]:
    """Each path row's per-example losses by KEY."""
    from modeconn.store import Store

    with Store(store, create=False) as s:
        rows = s.path_points(rows="all", with_examples=True)
    return {tuple(r[k] for k in KEY): np.asarray(r["example_losses"]) for _, r in rows.iterrows()}


def _reference_prefix(joined: pd.DataFrame, ref: dict[tuple[object, ...], np.ndarray]) -> Any:
    """Rows on fewer examples than the reference's (a sequential sweep's stage not yet
    extended) whose loss is the reference's mean over those first examples."""
    ok = []
    for _, r in joined.iterrows():
        n, losses = int(r["n_examples"]), ref.get(tuple(r[k] for k in KEY))
        ok.append(
            losses is not None
            and n < int(r["n_examples_ref"])
            and abs(r["loss"] - float(np.mean(losses[:n], dtype=np.float64))) <= 1e-5
        )
    return pd.Series(ok, index=joined.index)


def _partial_problems(
    store: Path, want: tuple[pd.DataFrame, pd.DataFrame, dict[tuple[object, ...], np.ndarray]]
) -> list[str]:
    """What is wrong with a killed store: it must be a consistent subset of the reference
    (a path row on fewer examples than the reference's: the reference's first examples)."""
    if not store.exists():
        return []  # killed before the store was created: nothing to check
    paths, members, check = _tables(store)
    problems = [] if check == "ok" else [f"integrity_check: {check}"]
    for name, got, ref, key in (
        ("path", paths, want[0], KEY),
        ("member", members, want[1], MEMBER_KEY),
    ):
        if got.duplicated(key).any():
            problems.append(f"duplicated {name} rows")
        joined = got.merge(ref, on=key, how="left", suffixes=("", "_ref"), indicator=True)
        if (joined["_merge"] != "both").any():
            problems.append(f"{name} rows absent from the reference")
        else:
            bad = (joined["loss"] - joined["loss_ref"]).abs() > 1e-6 * joined["loss_ref"].abs()
            if name == "path" and bad.any():  # a provisional prefix (the affinity pilot's)
                bad &= ~_reference_prefix(joined, want[2])
            if bad.any():
                problems.append(f"{int(bad.sum())} {name} rows with another loss")
    return problems


def _equal(store: Path, want: tuple[pd.DataFrame, pd.DataFrame, Any]) -> str | None:
    """None if the store holds exactly the reference's rows, else what differs."""
    paths, members, check = _tables(store)
    if check != "ok":
        return f"integrity_check: {check}"
    if paths.duplicated(KEY).any() or members.duplicated(MEMBER_KEY).any():
        return "duplicated rows"
    try:
        pd.testing.assert_frame_equal(paths, want[0], check_exact=False, rtol=1e-6)
        pd.testing.assert_frame_equal(members, want[1], check_exact=False, rtol=1e-6)
    except AssertionError as err:
        return " ".join(str(err).split())[:300]
    return None


def _started(pid: int) -> int | None:
    """The process's start time in clock ticks (None if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _name(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(raw.decode(errors="replace").split("\0")).strip()[:60] or "?"


def _reap(pids: dict[int, int | None], wait_s: float) -> list[str]:
    """Processes of `pids` (pid → start time) still alive after `wait_s`, by command line;
    they are then killed.

    A pid is the same process only while its start time is the same, so a pid reused by
    another program is never signalled.
    """
    deadline = time.monotonic() + wait_s
    alive = {p: t for p, t in pids.items() if t is not None}
    while alive and time.monotonic() < deadline:
        alive = {p: t for p, t in alive.items() if _started(p) == t}
        if alive:
            time.sleep(0.2)
    names = []
    for pid, started in alive.items():
        if _started(pid) == started:
            names.append(_name(pid))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return names


def build(
    work: Path,
    *,
    members: int,
    sample: int,
    backend: str,
    workers: int,
    data: Path | None = None,
    landmarks: int | None = None,
    tolerance: float | None = None,
    sequential: dict[str, float] | None = None,
) -> tuple[Path, Path]:
    """The reference and the to-be-killed study files over the same tiny members.

    ``landmarks`` (``basins.landmarks``), ``tolerance`` (``paths.tolerance``) and
    ``sequential`` (``paths.sequential``) are set in both, so the uninterrupted reference
    is the same landmark / adaptive / sequential sweep.
    """
    model = tiny_model_dir(work / "tiny-bert")
    make_members(str(model), work / "members", members, scale=0.05)
    splits = {"mnli": mnli_split(sample), "hans_lo": hans_lo_split(sample)}
    common = {"splits": splits, "points": 11, "threads": 1, "data": data}
    ref = study_dict(str(model), work / "members", work / "ref", **common)  # type: ignore[arg-type]
    sweep = None if backend == "local" else {"backend": backend, "workers": workers}
    killed = study_dict(
        str(model),
        work / "members",
        work / "killed",
        sweep=sweep,
        **common,  # type: ignore[arg-type]
    )
    for study in (ref, killed):
        if landmarks is not None:
            study["basins"]["landmarks"] = landmarks
        if tolerance is not None:
            study["paths"]["tolerance"] = tolerance
        if sequential is not None:
            study["paths"]["sequential"] = dict(sequential)
    return write_study(work / "ref.yaml", ref), write_study(work / "killed.yaml", killed)


def run_harness(
    work: Path,
    *,
    kills: int = 20,
    backend: str = "local",
    members: int = 6,
    sample: int = 48,
    workers: int = 2,
    seed: int = 0,
    data: Path | None = None,
    sig: int = signal.SIGKILL,
    grace: float = 5.0,
    say: Callable[[str], None] = print,
    landmarks: int | None = None,
    tolerance: float | None = None,
    sequential: dict[str, float] | None = None,
) -> HarnessResult:
    """Kill, check and resume as the module docstring says; returns the tally."""
    rng = random.Random(seed)
    ref_yaml, killed_yaml = build(
        work,
        members=members,
        sample=sample,
        backend=backend,
        workers=workers,
        data=data,
        landmarks=landmarks,
        tolerance=tolerance,
        sequential=sequential,
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def cli(study: Path) -> list[str]:
        return [sys.executable, "-m", "modeconn.cli", "run", str(study), "--quiet"]

    start = time.monotonic()
    done = subprocess.run(cli(ref_yaml), capture_output=True, text=True, env=env)
    ref_s = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{done.stderr[-2000:]}")
    ref_store = work / "ref" / "results.sqlite"
    paths, members_frame, _ = _tables(ref_store)
    want = (paths, members_frame, _examples(ref_store))
    total = _units(ref_store)
    per_unit = _sweep_seconds(ref_store) / max(1, total)
    say(
        f"reference: {total} units, {len(paths)} path rows; {ref_s:.1f} s uninterrupted, "
        f"{per_unit * 1000:.0f} ms per unit"
    )

    store = work / "killed" / "results.sqlite"
    result = HarnessResult()

    def finish_round(how: str) -> None:
        result.rounds += 1
        diff = _equal(store, want)
        result.rounds_equal += diff is None
        say(f"  store complete ({how}): " + ("equals the reference" if diff is None else diff))
        shutil.rmtree(work / "killed")  # the next kill starts a fresh store

    for k in range(1, kills + 1):
        # each kill lands at a uniformly drawn unit of the sweep, mid-work: a store that is
        # already past the drawn unit is resumed to completion, checked, and started afresh
        target = rng.randint(1, max(1, total - 1))
        if store.exists() and _units(store) >= target:
            done = subprocess.run(cli(killed_yaml), capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"a resume failed:\n{done.stderr[-2000:]}")
            finish_round("resumed to completion")
        extra = rng.uniform(0.0, per_unit)
        log = work / f"run-{k}.log"  # a file, not a pipe: a full pipe would stall the run
        with log.open("w") as err_file:
            proc = subprocess.Popen(
                cli(killed_yaml),
                stdout=subprocess.DEVNULL,
                stderr=err_file,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 600
        while _units(store) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(extra)
        tree = {pid: _started(pid) for pid in descendants(proc.pid) - {proc.pid}}
        if proc.poll() is not None:  # finished (or failed) before the kill
            if proc.returncode != 0:
                err = log.read_text()[-2000:]
                raise RuntimeError(f"run {k} failed by itself:\n{err}")
            say(f"kill {k}: the run finished before its kill ({_units(store)}/{total} units)")
            finish_round("run finished")
            continue
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=60)  # SIGTERM / SIGINT: the run unwinds by itself
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            say(f"kill {k}: the run did not exit within 60 s of {signal.Signals(sig).name}")
            result.orphans += 1
        orphans = _reap(tree, grace) if tree else []
        result.orphans += len(orphans)
        result.kills += 1
        problems = _partial_problems(store, want)
        result.survived += not problems
        landed = _units(store)
        note = "; ".join(problems) if problems else "consistent"
        extra_note = f"; left running {grace:g} s later: {', '.join(orphans)}" if orphans else ""
        say(f"kill {k}: {landed}/{total} units when killed — {note}{extra_note}")

    done = subprocess.run(cli(killed_yaml), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the final resume failed:\n{done.stderr[-2000:]}")
    finish_round("final resume")
    say(f"{result.survived}/{result.kills} kills survived")
    say(
        f"{result.rounds_equal}/{result.rounds} completed stores equal the uninterrupted run; "
        f"{result.orphans} processes outlived their killed run by {grace:g} s"
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--backend", choices=["local", "process", "ray"], default="local")
    ap.add_argument("--members", type=int, default=6, help="members (pairs: n(n−1)/2)")
    ap.add_argument("--sample", type=int, default=48, help="examples per split")
    ap.add_argument("--workers", type=int, default=2, help="process/ray workers")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--signal", choices=["KILL", "TERM", "INT"], default="KILL")
    ap.add_argument("--grace", type=float, default=5.0, help="seconds a child may outlive it")
    ap.add_argument("--workdir", type=Path, help="work here (default: a temporary folder)")
    ap.add_argument("--landmarks", type=int, help="basins.landmarks of both runs")
    ap.add_argument("--tolerance", type=float, help="paths.tolerance of both runs")
    ap.add_argument(
        "--sequential",
        type=float,
        metavar="TOL",
        help="paths.sequential.tolerance of both runs (blocks of --block, at least 2)",
    )
    ap.add_argument("--block", type=int, default=12, help="paths.sequential.block")
    ap.add_argument(
        "--affinity",
        type=float,
        help="paths.sequential.affinity of both runs (with --sequential): the two-stage "
        "sweep of a pilot δ, then the unsettled paths",
    )
    args = ap.parse_args()
    sequential = None
    if args.sequential is not None:
        sequential = {"tolerance": args.sequential, "block": args.block, "min_blocks": 2}
        if args.affinity is not None:
            sequential["affinity"] = args.affinity
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        result = run_harness(
            work,
            kills=args.kills,
            backend=args.backend,
            members=args.members,
            sample=args.sample,
            workers=args.workers,
            seed=args.seed,
            sig=signal.Signals[f"SIG{args.signal}"],
            grace=args.grace,
            landmarks=args.landmarks,
            tolerance=args.tolerance,
            sequential=sequential,
        )
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
