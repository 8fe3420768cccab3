"""Peak memory of a sweep against the bytes of the population's parameters.

    .venv/bin/python benchmarks/memory.py                        # 10 six-layer members
    .venv/bin/python benchmarks/memory.py --n-members 4 --layers 2 --examples 32  # smoke
    .venv/bin/python benchmarks/memory.py --backend process --workers 2

The sweep: ``--n-members`` members (seeded perturbations of all-MiniLM-L6-v2 cut to
``--layers`` layers, float32), every pair on one MNLI split of ``--examples`` pairs at
``--points`` α, run by ``StudyRunner.sweep()`` in a child process. Memory does not grow
with the number of α or examples much; it grows with the members held at once.

Printed:

* population parameters — Σ over members of the floating-point parameter bytes (what
  holding every member in memory at once would cost);
* RSS before the sweep — the child's resident memory once the runner is built
  (torch, tokenizer, prepared split, resident skeleton) and before any member is read;
* peak RSS — the largest resident memory of the child *and its descendants together*
  (worker processes, Ray), sampled from /proc every 20 ms, plus the child's own
  ``ru_maxrss`` (exact, child only);
* growth ÷ population — (peak − before) ÷ population parameters. The sweep keeps
  members' flat parameter lists in an LRU cache under a 2 GiB budget, so up to that
  budget expect about 1 (each member held once); a population larger than the budget
  should stay near budget ÷ population. Each extra worker process holds its own
  skeleton and cache.

Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import (
    BUILTIN,
    descendants,
    make_members,
    mnli_split,
    param_bytes,
    study_dict,
    write_study,
)

MiB = 1 << 20


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of `root` and every process descended from it."""
    return sum(_rss_kib(pid) for pid in descendants(root)) * 1024


def child(study_path: Path) -> None:
    """Build the runner, note RSS, sweep, and print RSS figures as JSON."""
    from modeconn.config.study import load_study
    from modeconn.pipeline import StudyRunner

    runner = StudyRunner(load_study(study_path), progress=False)
    runner.splits()
    runner.evaluator()
    before = _rss_kib(os.getpid()) * 1024
    stats = runner.sweep()
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"before": before, "peak_self": peak_self, "seconds": stats.seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-members", type=int, default=10)
    ap.add_argument("--layers", type=int, default=6, help="encoder layers of MiniLM to keep")
    ap.add_argument("--examples", type=int, default=64, help="MNLI pairs in the sample")
    ap.add_argument("--points", type=int, default=3, help="α grid size")
    ap.add_argument("--backend", choices=["local", "process", "ray"], default="local")
    ap.add_argument("--workers", type=int, default=2, help="process/ray workers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, help="keep members and the store here")
    ap.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child(args._child)
        return

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        paths = make_members(BUILTIN, work / "members", args.n_members, layers=args.layers)
        population = sum(param_bytes(load_file(str(p))) for p in paths)
        sweep = None
        if args.backend != "local":
            sweep = {"backend": args.backend, "workers": args.workers, "threads_per_worker": 1}
        out = work / f"memory-{time.time_ns()}"
        study = study_dict(
            BUILTIN,
            work / "members",
            out,
            splits={"mnli": mnli_split(args.examples)},
            points=args.points,
            layers=args.layers,
            threads=args.threads,
            sweep=sweep,
        )
        path = write_study(out / "study.yaml", study)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--_child", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak_tree = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not done.is_set():
                peak_tree = max(peak_tree, tree_rss_bytes(proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        done.set()
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"the sweep failed:\n{stderr[-2000:]}")
        got = json.loads(stdout.strip().splitlines()[-1])

    before, peak_self = got["before"], got["peak_self"]
    peak = max(peak_tree, peak_self)
    print(
        f"{args.n_members} members × {args.layers} layers, backend {args.backend}, "
        f"{args.examples} MNLI pairs, {args.points} α; sweep {got['seconds']:.1f} s"
    )
    print(f"population parameters:   {population / MiB:8.0f} MiB")
    print(f"RSS before the sweep:    {before / MiB:8.0f} MiB (runner built, no member read)")
    print(f"peak RSS (process tree): {peak_tree / MiB:8.0f} MiB (sampled every 20 ms)")
    print(f"peak RSS (child only):   {peak_self / MiB:8.0f} MiB (ru_maxrss)")
    print(f"growth ÷ population:     {(peak - before) / population:8.2f}")


if __name__ == "__main__":
    main()
