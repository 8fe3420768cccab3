"""One sweep, end to end, on each sweep backend: local vs process pool vs Ray.

    .venv/bin/python benchmarks/backends.py                          # 10 members, 2 workers
    .venv/bin/python benchmarks/backends.py --examples 32 --points 3 --backends local process
    .venv/bin/python benchmarks/backends.py --layers 6 --examples 512 --workers 4

The sweep: ``--n-members`` members (seeded perturbations of all-MiniLM-L6-v2 cut to
``--layers`` layers, made once in the work folder), every pair on one MNLI split of
``--examples`` pairs at ``--points`` α. Each backend runs it from scratch into its own
results store, in a fresh child process (``StudyRunner.sweep()``, as ``modeconn run``
does before its analysis), with the same cores:

* ``local``   — one process with ``--workers × --threads-per-worker`` torch threads;
* ``process`` — ``sweep: {backend: process, workers, threads_per_worker}``;
* ``ray``     — ``sweep: {backend: ray, …}`` on a fresh local Ray (skipped if Ray is not
  installed: ``pip install 'modeconn[ray]'``).

The backends are timed interleaved (local, process, ray, local, … for ``--rounds``
rounds), each run into an emptied store. Printed per backend, as medians over rounds: the
child's wall time (start-up, member hashing, worker start-up and the sweep: what a user
waits for) and the sweep stage alone; then local's wall time ÷ this backend's in the same
round (above 1 = faster than local), median [min–max]. Last, whether every backend's store holds
the same rows as local's (losses within 1e-6 relative): a faster backend that writes
other numbers is a bug. On a 2-core machine expect little gain; the backends pay off
with many cores or machines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import (
    BUILTIN,
    format_ratio,
    interleaved,
    make_members,
    median,
    mnli_split,
    ratio_summary,
    study_dict,
    write_study,
)

BACKENDS = ("local", "process", "ray")


def child(study_path: Path) -> None:
    """Run one sweep and print its timings as JSON (in a fresh process)."""
    from modeconn.config.study import load_study
    from modeconn.pipeline import StudyRunner

    start = time.perf_counter()
    stats = StudyRunner(load_study(study_path), progress=False).sweep()
    print(
        json.dumps(
            {
                "sweep_s": stats.seconds,
                "total_s": time.perf_counter() - start,
                "evaluations": stats.member_evaluations + stats.path_evaluations,
            }
        )
    )


def _rows(store: Path) -> pd.DataFrame:
    from modeconn.store import Store

    with Store(store, create=False) as s:
        frame = s.path_points().drop(columns=["created"])
    return frame.sort_values(["hash_a", "hash_b", "split", "alpha"]).reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-members", type=int, default=10)
    ap.add_argument("--examples", type=int, default=128, help="MNLI pairs in the sample")
    ap.add_argument("--points", type=int, default=5, help="α grid size")
    ap.add_argument("--layers", type=int, default=2, help="encoder layers of MiniLM to keep")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (local, process, ray, …)"
    )
    ap.add_argument("--workdir", type=Path, help="keep members and stores here")
    ap.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child(args._child)
        return

    backends = list(args.backends)
    if "ray" in backends:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray is not installed: skipping the ray row (pip install 'modeconn[ray]')")
            backends.remove("ray")
    try:
        from modeconn.config.study import SweepConfig  # noqa: F401
    except ImportError:
        raise SystemExit("this modeconn has no `sweep:` study section yet") from None

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        make_members(BUILTIN, work / "members", args.n_members, layers=args.layers)
        cores = args.workers * args.threads_per_worker
        paths = {}
        for backend in backends:
            sweep = None
            if backend != "local":
                sweep = {
                    "backend": backend,
                    "workers": args.workers,
                    "threads_per_worker": args.threads_per_worker,
                }
            out = work / backend
            study = study_dict(
                BUILTIN,
                work / "members",
                out,
                splits={"mnli": mnli_split(args.examples)},
                points=args.points,
                layers=args.layers,
                threads=cores,
                sweep=sweep,
            )
            paths[backend] = write_study(work / f"{backend}.yaml", study)

        runs: dict[str, list[dict[str, float]]] = {backend: [] for backend in backends}
        failed: set[str] = set()

        def fresh(backend: str) -> None:  # untimed: each round sweeps from scratch
            shutil.rmtree(work / backend, ignore_errors=True)

        def run(backend: str) -> None:
            if backend in failed:
                return
            done = subprocess.run(
                [sys.executable, __file__, "--_child", str(paths[backend])],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                print(f"{backend}: failed\n{done.stderr[-2000:]}")
                failed.add(backend)
                return
            runs[backend].append(json.loads(done.stdout.strip().splitlines()[-1]))

        times = interleaved(
            {backend: (lambda b=backend: run(b)) for backend in backends},
            args.rounds,
            before=fresh,
        )
        ok = [b for b in backends if b not in failed]
        stores = {b: work / b / "results.sqlite" for b in ok}

        n_pairs = args.n_members * (args.n_members - 1) // 2
        print(
            f"{args.n_members} members ({n_pairs} pairs), {args.examples} MNLI pairs, "
            f"{args.points} α, {args.layers} layers; {args.workers} workers × "
            f"{args.threads_per_worker} threads (local: {cores} threads); "
            f"{args.rounds} interleaved rounds, medians"
        )
        print(f"{'backend':<10}{'wall s':>9}{'sweep s':>9}{'evals':>7}{'local / this [range]':>24}")
        for backend in ok:
            sweep_s = median([r["sweep_s"] for r in runs[backend]])
            evals = int(runs[backend][-1]["evaluations"])
            ratio = format_ratio(ratio_summary(times, "local", backend)) if "local" in ok else "—"
            print(
                f"{backend:<10}{median(times[backend]):>9.1f}{sweep_s:>9.1f}{evals:>7}{ratio:>24}"
            )
        if "local" in stores:
            want = _rows(stores["local"])
            for backend, store in stores.items():
                if backend == "local":
                    continue
                try:
                    pd.testing.assert_frame_equal(_rows(store), want, check_exact=False, rtol=1e-6)
                    print(f"{backend}: same rows as local")
                except AssertionError as err:
                    print(f"{backend}: rows DIFFER from local: {str(err)[:300]}")


if __name__ == "__main__":
    main()
