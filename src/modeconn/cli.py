"""The `modeconn` command: run, demo, plan, report, status, analyses, export.

Every error modeconn raises on purpose is printed as one line naming the thing and the
fix, with exit status 2, and so is an operating-system error (an output path that is a
file, a folder that cannot be written, a full disk), naming the path; nothing else is
caught.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from modeconn.errors import ModeconnError, StoreError


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _print_result(result: object) -> None:
    import pandas as pd

    from modeconn.results import StudyResult

    assert isinstance(result, StudyResult)
    print(result.summary())
    print()
    with pd.option_context("display.width", 120, "display.precision", 3):
        print("basins:")
        print(result.basins.to_string())
    if result.report is not None:
        print(f"\nreport: {result.report}")


def _study_file(arg: str) -> Path:
    """The study file ``arg`` names: a path, or else the name of a built-in study."""
    from modeconn.config.study import builtin_studies, builtin_study_path

    if not Path(arg).exists() and arg in builtin_studies():
        return builtin_study_path(arg)
    return Path(arg)


def cmd_run(args: argparse.Namespace) -> int:
    from modeconn.config.study import load_study
    from modeconn.pipeline import StudyRunner

    study = load_study(_study_file(args.study), output_dir=args.out, data_root=args.data_root)
    result = StudyRunner(study, progress=not args.quiet, say=_say).run()
    _print_result(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from modeconn.config.study import builtin_study_path, load_study
    from modeconn.pipeline import StudyRunner

    path = builtin_study_path(args.study)
    # a built-in study that extends demo-mnli shares its output folder (members and store)
    folder = Path(load_study(path, data_root=args.data_root).output_dir).name
    out = args.out or str(_cache_dir() / folder)
    study = load_study(path, output_dir=out, data_root=args.data_root)
    _say(f"demo study: {path}\noutput: {study.out_path()}")
    result = StudyRunner(study, progress=not args.quiet, say=_say).run()
    _print_result(result)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from modeconn.config.study import load_study
    from modeconn.engine.planning import plan_study

    study = load_study(_study_file(args.study), data_root=args.data_root)
    estimate = plan_study(
        study, members=args.members, throughput=args.throughput, workers=args.workers
    )
    print(json.dumps(estimate.to_dict(), indent=2) if args.json else estimate.summary())
    return 0


def _open_existing(path: str) -> object:
    from modeconn.store import Store

    p = Path(path)
    if p.is_dir():
        p = p / "results.sqlite"
        if p.is_dir():
            raise StoreError(
                f"{p} is a folder, not a results store; pass the store file or the study's "
                "output folder"
            )
    if not p.exists():
        raise StoreError(f"no results store at {p}; give the store file or the study's output dir")
    # a store that cannot be written here (read-only disk, another user's folder) is read
    # without writing; a writable one is opened as usual, which upgrades an older schema
    writable = os.access(p, os.W_OK) and os.access(p.parent, os.W_OK)
    return Store(p, create=False, readonly=not writable)


def _report_folder(store_path: Path, recorded: str) -> Path:
    """Where ``modeconn report STORE`` writes without ``--out``: inside the store's folder.

    The store records its study's ``report_dir``, but a store may come from someone else:
    a recorded absolute path, a ``..`` or a symbolic link that leaves the store's folder
    is not followed; the report then goes to ``report/`` beside the store, and a line
    says so. When even that leaves the folder (``report`` is a link out), nothing is
    written: pass ``--out``.
    """
    folder = store_path.parent.resolve()
    for name in (recorded, "report"):
        target = folder / name
        if not Path(name).is_absolute() and target.resolve().is_relative_to(folder):
            if name != recorded:
                _say(
                    f"modeconn: the store records report_dir {recorded!r}, outside the store's "
                    f"folder; writing the report to {target} instead (--out chooses)"
                )
            return target
    raise StoreError(
        f"the report folder of store {store_path} would be outside its folder {folder} "
        f"(report_dir {recorded!r}, and {folder / 'report'} leads elsewhere); pass --out"
    )


def cmd_report(args: argparse.Namespace) -> int:
    from modeconn.analyses.run import analyze_study
    from modeconn.report.study import write_study_report
    from modeconn.store import Store

    store = _open_existing(args.store)
    assert isinstance(store, Store)
    with store:
        result = analyze_study(store)
        path = None  # --json alone writes nothing anywhere
        if args.out or not args.json:
            out = (
                Path(args.out) if args.out else _report_folder(store.path, result.study.report_dir)
            )
            path = write_study_report(store, result, out)
    if args.json:
        from modeconn.report.json import dumps, study_json

        print(dumps(study_json(result, report=path)))
        return 0
    assert path is not None
    _print_result(result.with_report(path))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from modeconn.status import store_status
    from modeconn.store import Store

    store = _open_existing(args.store)
    assert isinstance(store, Store)
    with store:
        status = store_status(store)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for key, value in status.items():
            print(f"{key}: {value}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from modeconn.store import Store

    store = _open_existing(args.store)
    assert isinstance(store, Store)
    with store:
        for p in store.export(Path(args.out), format=args.format):
            print(p)
    return 0


def cmd_analyses(args: argparse.Namespace) -> int:
    from modeconn.analyses.base import study_keys
    from modeconn.analyses.registry import all_analyses

    rows = []
    for a in all_analyses():
        keys = list(study_keys(a))
        rows.append(
            {
                "key": ", ".join(f"analyses.{k}" for k in keys) or f"{a.key} (always on)",
                "computes": a.summary,
                "reproduces": a.cites,
                "needs weights": "yes" if a.needs_weights else "no",
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        print(f"{r['key']}  (needs weights: {r['needs weights']})")
        print(f"    computes:   {r['computes']}")
        print(f"    reproduces: {r['reproduces']}")
    return 0


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "modeconn"


def build_parser() -> argparse.ArgumentParser:
    from modeconn.config.study import builtin_studies

    parser = argparse.ArgumentParser(
        prog="modeconn",
        description="Find the basins a population of fine-tuned models sits in.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train (if asked) → sweep paths → basins → report")
    p.add_argument("study", help="the study YAML file, or a built-in study's name")
    p.add_argument("--out", help="override the study's output_dir")
    p.add_argument("--data-root", help="folder the split paths are relative to")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the built-in MNLI/HANS study on this CPU")
    p.add_argument(
        "--study",
        default="demo-mnli",
        metavar="NAME",
        help="which built-in study (default demo-mnli; others: "
        + ", ".join(n for n in builtin_studies() if n != "demo-mnli")
        + ")",
    )
    p.add_argument("--out", help=f"output folder (default {_cache_dir() / 'demo-mnli'})")
    p.add_argument("--data-root", help="folder with mnli/ and hans/ (default ../shared/data)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("plan", help="count a study's evaluations and project its wall time")
    p.add_argument("study", help="the study YAML file, or a built-in study's name")
    p.add_argument("--members", type=int, help="number of members (for members kept elsewhere)")
    p.add_argument("--throughput", type=float, metavar="EX_PER_S", help="examples/s per worker")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="workers (default 1)")
    p.add_argument("--data-root", help="folder the split paths are relative to")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("report", help="rebuild the analysis and HTML report from a store")
    p.add_argument("store", help="results.sqlite, or the study's output folder")
    p.add_argument("--out", help="report folder (default: beside the store)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON (docs/json.md) instead; writes the HTML report "
        "only when --out is given",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("status", help="what a store holds and what remains")
    p.add_argument("store", help="results.sqlite, or the study's output folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("analyses", help="list every analysis a study can ask for")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_analyses)

    p = sub.add_parser("export", help="write the store's tables as CSV or Parquet")
    p.add_argument("store", help="results.sqlite, or the study's output folder")
    p.add_argument("--out", required=True, help="folder for the exported files")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.set_defaults(func=cmd_export)
    return parser


def _os_error(err: OSError) -> str:
    """An operating-system error as one line: the path(s), the reason, and what to do."""
    names = [os.fsdecode(n) for n in (err.filename, err.filename2) if n is not None]
    code = errno.errorcode.get(err.errno or 0)
    reason = (err.strerror or str(err) or type(err).__name__) + (f" ({code})" if code else "")
    where = " → ".join(names) if names else "an output path"
    return (
        f"{where}: {reason}; pass a path of the right kind (a folder for --out) that you can "
        "write, on a disk with free space"
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread, so that the command unwinds as on Ctrl-C.

    Unwinding runs every ``finally``: the sweep's worker pool is shut down (its processes
    terminated), the store's open transaction is rolled back. A second SIGTERM while
    that runs ends the process at once (the workers still die with it).
    """


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM: exit at once
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_unwinds():
            return int(args.func(args))
    except ModeconnError as err:
        print(f"modeconn: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the system refused: an --out that is a file, no space, …
        print(f"modeconn: error: {_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(f"modeconn: {how}; rerun the same command to resume", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(err, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
