"""Basins without all pairs: landmarks, adaptive α grids and sequential samples, measured.

    .venv/bin/python benchmarks/landmarks.py                    # N = 100 (demo-population-100)
    .venv/bin/python benchmarks/landmarks.py --members 24 --landmarks 5 --rounds 2

The population is the built-in study ``demo-population-100`` (tiny BatchNorm CNNs on real
digits, three arms: clean, box cue on 60 % and on 90 % of the training images), cut to
``--members`` N (arms kept in proportion); members are trained once into ``--out`` and
reused by every row and every rerun. Each row sweeps the same members on the same
100-example clean test sample and 21-point α grid into a store of its own:

  all pairs      every pair, every α (the reference);
  landmarks      ``basins.landmarks: m`` — only the paths to m seeded landmarks;
  adaptive       ``paths.tolerance: t`` — each path on a refined subset of the 21 α;
  sequential     ``paths.sequential`` — each path on blocks of ``--block`` examples until
                 the bootstrap interval of its curve above the chord is narrower than
                 ``--seq-tolerance`` at every α (at least ``--min-blocks`` blocks) — with
                 ``--affinity`` ε, or once its basin affinity is known to ε;
  all three      landmarks + adaptive + sequential, swept together.

``--replay`` sweeps all pairs once and replays every saving on its stored points instead
(the adaptive grid reads only the lattice points it would evaluate, landmarks only their
pairs, sequential samples blocks of the stored per-example losses): forward passes, ARI
and |ΔCG| for an N whose five timed sweeps would take too long.

Columns: forward passes are examples forwarded on path interiors (endpoints are N member
evaluations in every row and left out), with their share of all pairs'; wall time is the
sweep stage (plan + evaluate + write), timed interleaved over ``--rounds`` rounds (all
pairs, landmarks, adaptive, sequential, all three, again …, each into a fresh store; the
BatchNorm re-estimation of each point, 64 training images, is in the wall time but not in
the forward passes), reported as the
median per-round ratio to all pairs with its [min–max]; ARI is the adjusted Rand index of
the row's basins against all pairs' basins; max |ΔCG| is the largest difference of
convexity gaps on the pairs both rows measured. A line then says why sequential samples
stop where they do: the widest per-α bootstrap interval the rule reads (median over every
10th pair) after ``--min-blocks`` blocks and on the whole sample, against
``--seq-tolerance`` and against δ, the median gap. Then the planner's projection for
``--project`` members (default 1,000) at the reference's measured throughput.
"""

from __future__ import annotations

import argparse
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from _common import format_ratio, interleaved, median, ratio_summary
from sklearn.metrics import adjusted_rand_score

from modeconn.config.study import Study, builtin_study_path, load_study
from modeconn.engine.planning import plan_study
from modeconn.measures.barriers import convexity_gap
from modeconn.pipeline import StudyRunner
from modeconn.results import StudyResult, analyze, curves
from modeconn.stats.adaptive_grid import adaptive_gap
from modeconn.stats.basins import find_basins
from modeconn.stats.landmarks import choose_landmarks, landmark_basins
from modeconn.stats.sequential import curve_interval_width, sequential_gap
from modeconn.store import Store

LIVE = ("all pairs", "landmarks", "adaptive", "sequential", "all three")


@dataclass
class Row:
    name: str
    passes: int  # examples forwarded on path interiors
    result: StudyResult | None = None
    labels: np.ndarray | None = None
    distance: Any = None  # pandas DataFrame, NaN where not measured
    seconds: list[float] | None = None


def _arms(total: int) -> list[int]:
    """Members per arm, in the built-in study's 34 : 33 : 33 proportion."""
    base = [total // 3] * 3
    for i in range(total - sum(base)):
        base[i] += 1
    return base


def study_files(args: argparse.Namespace) -> dict[str, Path]:
    raw = yaml.safe_load(builtin_study_path("demo-population-100").read_text())
    for arm, n in zip(raw["train"]["arms"], _arms(args.members), strict=True):
        arm["members"] = n
    raw["train"]["out_dir"] = str((args.out / "members").resolve())  # shared by every row
    sequential = {
        "tolerance": args.seq_tolerance,
        "block": args.block,
        "min_blocks": args.min_blocks,
        "resamples": args.n_boot,
        **({} if args.affinity is None else {"affinity": args.affinity}),
    }
    variants: dict[str, dict[str, Any]] = {
        "all pairs": {},
        "landmarks": {"basins": {"landmarks": args.landmarks, "landmark_choice": args.choice}},
        "adaptive": {"paths": {"tolerance": args.tolerance}},
        "sequential": {"paths": {"sequential": sequential}},
        "all three": {
            "basins": {"landmarks": args.landmarks, "landmark_choice": args.choice},
            "paths": {"tolerance": args.tolerance, "sequential": sequential},
        },
    }
    paths = {}
    for name, change in variants.items():
        data = yaml.safe_load(yaml.safe_dump(raw))
        for section, values in change.items():
            data[section].update(values)
        folder = args.out / name.replace(" ", "-")
        data["output_dir"] = str(folder.resolve())
        folder.mkdir(parents=True, exist_ok=True)
        paths[name] = folder / "study.yaml"
        paths[name].write_text(yaml.safe_dump(data))
    return paths


def _interior_passes(store: Store, study: Study) -> int:
    """Examples forwarded on the interior α of every stored path of the basins' split
    (each point's own count: a sequential path stops after some blocks)."""
    found = curves(store, study.basins.split)
    return sum(
        int(g.loc[(g["alpha"] > 0) & (g["alpha"] < 1), "n_examples"].sum()) for g in found.values()
    )


def _curves_with_examples(store: Store, study: Study) -> dict[tuple[str, str], Any]:
    return dict(curves(store, study.basins.split, with_examples=True).items())


def replay(
    store: Store,
    result: StudyResult,
    args: argparse.Namespace,
    *,
    landmarks: bool,
    adaptive: bool,
    sequential: bool,
    kmeanspp: bool = False,
    affinity: float | None = None,
) -> Row:
    """A saving (or several) replayed on a complete all-pairs sweep's stored points.

    Landmarks keep only the landmark pairs (the same seeded draw as the sweep); the
    adaptive grid reads only the lattice points it asks for (the values a live adaptive
    sweep computes, up to float reproducibility); sequential samples read blocks of the
    kept α's per-example losses. Passes count interior α × examples read.
    """
    study, b = result.study, result.study.basins
    ids = list(result.distance.index)
    index = {m: i for i, m in enumerate(ids)}
    marks = None
    if landmarks:
        from modeconn.results import landmark_ids

        marks = landmark_ids(ids, args.landmarks, b.landmark_seed)
        if kmeanspp:  # k-means++ on what is measured: each draw reads only landmarks' rows
            order = sorted(ids)
            full = result.distance.loc[order, order].to_numpy()
            picks = choose_landmarks(
                len(order),
                args.landmarks,
                seed=b.landmark_seed,
                method="kmeans++",
                distance=full,
            )
            marks = tuple(order[i] for i in picks)
    kept: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, float]] = {}
    for (a_id, b_id), g in _curves_with_examples(store, study).items():
        if a_id not in index or b_id not in index:
            continue
        if marks is not None and a_id not in marks and b_id not in marks:
            continue
        alphas = g["alpha"].to_numpy()
        losses = np.stack([np.asarray(x, dtype=np.float64) for x in g["example_losses"]])
        keep = np.arange(len(alphas))
        if adaptive:
            means = g["loss"].to_numpy()
            _, used = adaptive_gap(
                lambda k, means=means: float(means[k]),
                alphas,
                args.tolerance,
                known={0: float(means[0]), len(alphas) - 1: float(means[-1])},
            )
            keep = np.array(sorted(used))
        kept[(a_id, b_id)] = (
            alphas[keep],
            losses[keep],
            convexity_gap(g["loss"].to_numpy()[keep], alphas[keep]),
        )
    delta = None
    if sequential and affinity is not None:  # the sweep's δ: numeric, or the pilot's
        first = args.block * args.min_blocks
        pilot = [convexity_gap(sub[:, :first].mean(axis=1), a) for a, sub, _ in kept.values()]
        med = float(np.median(pilot))
        delta = float(b.delta) if b.delta != "median" else (med if med > 0 else 1.0)
    d = np.full((len(ids), len(ids)), np.nan)
    np.fill_diagonal(d, 0.0)
    passes = 0
    for (a_id, b_id), (sub_a, sub, gap) in kept.items():
        interior = int(((sub_a > 0) & (sub_a < 1)).sum())
        examples = sub.shape[1]
        if sequential:
            r = sequential_gap(
                lambda k, sub=sub: sub[:, k * args.block : (k + 1) * args.block],
                sub_a,
                sub.shape[1],
                block=args.block,
                min_blocks=args.min_blocks,
                tolerance=args.seq_tolerance,
                n_boot=args.n_boot,
                seed=0,
                affinity=affinity,
                delta=delta,
            )
            gap, examples = r.gap, r.examples
        passes += interior * examples
        d[index[a_id], index[b_id]] = d[index[b_id], index[a_id]] = gap
    if marks is None:
        labels = find_basins(d, **b.fit_options()).labels
    else:
        labels = landmark_basins(d, [index[m] for m in marks], **b.fit_options()).labels
    return Row("replayed", passes, None, labels, pd.DataFrame(d, index=ids, columns=ids))


def main_replay(args: argparse.Namespace, studies: dict[str, Study]) -> None:
    """One all-pairs sweep, every saving replayed on it: passes, ARI, max |ΔCG|."""
    fresh_ok = studies["all pairs"]
    StudyRunner(fresh_ok, progress=False).sweep()
    with Store(fresh_ok.store_path(), create=False) as store:
        result = analyze(store, fresh_ok)
        ref = Row(
            "all pairs",
            _interior_passes(store, fresh_ok),
            result,
            result.fit.labels,
            result.distance,
        )
        created = store.path_points(rows="all")["created"]
        seconds = float(created.max() - created.min())  # the sweep's span, first row to last
        rows = {
            "all pairs": ref,
            "landmarks": replay(
                store, result, args, landmarks=True, adaptive=False, sequential=False
            ),
            "landmarks k-means++": replay(
                store,
                result,
                args,
                landmarks=True,
                adaptive=False,
                sequential=False,
                kmeanspp=True,
            ),
            "adaptive": replay(
                store, result, args, landmarks=False, adaptive=True, sequential=False
            ),
            "sequential": replay(
                store, result, args, landmarks=False, adaptive=False, sequential=True
            ),
            "all three": replay(
                store, result, args, landmarks=True, adaptive=True, sequential=True
            ),
        }
        if args.affinity is not None:  # the same rows, stopping on the basin affinity too
            for name, marks, adaptive in (
                ("sequential + affinity", False, False),
                ("all three + affinity", True, True),
            ):
                rows[name] = replay(
                    store,
                    result,
                    args,
                    landmarks=marks,
                    adaptive=adaptive,
                    sequential=True,
                    affinity=args.affinity,
                )
    assert ref.labels is not None
    n = len(ref.labels)
    print(
        f"population: {n} members of demo-population-100 ({' + '.join(map(str, _arms(n)))}), "
        f"21-point α grid, 100 clean test digits per path; every saving replayed on one "
        f"all-pairs sweep (no wall times); landmarks m = {args.landmarks}, paths.tolerance = "
        f"{args.tolerance}, sequential block {args.block} × ≥ {args.min_blocks}, interval < "
        f"{args.seq_tolerance}"
        + ("" if args.affinity is None else f" (or affinity known to {args.affinity})")
    )
    print(f"{'method':<24}{'forward passes':>16}{'share':>8}{'ARI':>7}{'max |ΔCG|':>11}")
    for name, r in rows.items():
        print(
            f"{name:<24}{r.passes:>16,}{r.passes / ref.passes:>8.1%}"
            f"{adjusted_rand_score(ref.labels, r.labels):>7.3f}"
            f"{max_delta(r.distance, ref.distance):>11.4f}"
        )
    if result.recovery is not None:
        print(f"all-pairs basins vs training arms: ARI {result.recovery:.3f}")
    with Store(fresh_ok.store_path(), create=False) as store:
        print(sequential_noise(store, result, args))
    projection(
        args, studies, {k: r.passes / ref.passes for k, r in rows.items()}, ref.passes / seconds, n
    )


def sequential_noise(store: Store, result: StudyResult, args: argparse.Namespace) -> str:
    """Why a sequential sweep stops where it does: the width its rule reads, on every 10th
    pair, at the first ``min_blocks`` blocks and at the whole sample, against the tolerance
    and against δ (the kernel's scale, the median gap)."""
    first = args.block * args.min_blocks
    w_first, w_all, n_ex = [], [], 0
    for _, g in sorted(_curves_with_examples(store, result.study).items())[::10]:
        alphas = g["alpha"].to_numpy()
        losses = np.stack([np.asarray(x, dtype=np.float64) for x in g["example_losses"]])
        n_ex = losses.shape[1]
        w_first.append(curve_interval_width(losses[:, :first], alphas, n_boot=args.n_boot))
        w_all.append(curve_interval_width(losses, alphas, n_boot=args.n_boot))
    d = result.distance.to_numpy()
    gaps = d[np.triu_indices(len(d), 1)]
    return (
        f"sequential rule's interval width (widest α, median of {len(w_all)} pairs): "
        f"{np.median(w_first):.4f} at {first} examples, {np.median(w_all):.4f} at all {n_ex} "
        f"(below {args.seq_tolerance} for {np.mean(np.array(w_all) < args.seq_tolerance):.0%} "
        f"of pairs); δ = median gap {np.median(gaps):.4f}"
    )


def max_delta(a: Any, b: Any) -> float:
    x, y = a.to_numpy(), b.loc[a.index, a.columns].to_numpy()
    both = np.isfinite(x) & np.isfinite(y)
    return float(np.max(np.abs(x[both] - y[both]))) if both.any() else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=100, help="population size N (default 100)")
    ap.add_argument("--landmarks", type=int, default=12, help="landmarks m (default 12)")
    ap.add_argument(
        "--choice",
        choices=["random", "kmeans++", "farthest"],
        default="random",
        help="basins.landmark_choice of the swept landmark rows (default random, the "
        "study default)",
    )
    ap.add_argument("--tolerance", type=float, default=0.01, help="paths.tolerance (loss)")
    ap.add_argument("--block", type=int, default=20, help="sequential block (examples)")
    ap.add_argument("--min-blocks", type=int, default=2, help="sequential minimum blocks")
    ap.add_argument("--seq-tolerance", type=float, default=0.05, help="interval width to stop")
    ap.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples per check")
    ap.add_argument(
        "--affinity",
        type=float,
        default=None,
        help="paths.sequential.affinity of the sequential rows: also stop a path once its "
        "basin affinity is known to this width (default: the interval rule alone)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    ap.add_argument("--project", type=int, default=1000, help="members of the projection")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-landmarks"))
    ap.add_argument(
        "--replay",
        action="store_true",
        help="sweep all pairs once and replay every saving on its stored points "
        "(forward passes, ARI, |ΔCG|; no wall times): for an N too slow to sweep 4× over",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = study_files(args)
    studies = {name: load_study(path) for name, path in files.items()}
    StudyRunner(studies["all pairs"], progress=False).train()  # once; every row reuses them
    if args.replay:
        main_replay(args, studies)
        return

    def fresh(name: str) -> None:
        store = studies[name].store_path()
        for p in store.parent.glob(store.name + "*"):
            p.unlink()
        shutil.rmtree(studies[name].out_path() / studies[name].report_dir, ignore_errors=True)

    runs = {
        name: (lambda name=name: StudyRunner(studies[name], progress=False).sweep())
        for name in LIVE
    }
    times = interleaved(runs, args.rounds, before=fresh)

    rows: dict[str, Row] = {}
    for name in LIVE:
        with Store(studies[name].store_path(), create=False) as store:
            result = analyze(store, studies[name])
            passes = _interior_passes(store, studies[name])
            rows[name] = Row(name, passes, result, result.fit.labels, result.distance, times[name])
            if name == "all pairs":  # the rule replayed on the full sweep, for comparison
                rows["sequential (replayed)"] = replay(
                    store,
                    result,
                    args,
                    landmarks=False,
                    adaptive=False,
                    sequential=True,
                    affinity=args.affinity,
                )
    ref = rows["all pairs"]
    assert ref.labels is not None and ref.seconds is not None
    n = len(ref.labels)
    print(
        f"population: {n} members of demo-population-100 ({' + '.join(map(str, _arms(n)))}), "
        f"21-point α grid, 100 clean test digits per path; landmarks m = {args.landmarks}, "
        f"paths.tolerance = {args.tolerance}, sequential block {args.block} × ≥ "
        f"{args.min_blocks}, interval < {args.seq_tolerance}"
        + ("" if args.affinity is None else f" (or affinity known to {args.affinity})")
    )
    print(
        f"timing: {args.rounds} interleaved rounds; all pairs median "
        f"{median(ref.seconds):.1f} s per sweep"
    )
    header = (
        f"{'method':<24}{'forward passes':>16}{'share':>8}{'wall vs all [range]':>22}"
        f"{'ARI':>7}{'max |ΔCG|':>11}"
    )
    print(header)
    order = ["all pairs", "landmarks", "adaptive", "sequential", "sequential (replayed)"]
    for name in [*order, "all three"]:
        r = rows[name]
        wall = format_ratio(ratio_summary(times, name, "all pairs")) if name in times else "not run"
        ari = adjusted_rand_score(ref.labels, r.labels)
        delta = max_delta(r.distance, ref.distance)
        print(
            f"{name:<24}{r.passes:>16,}{r.passes / ref.passes:>8.1%}{wall:>22}"
            f"{ari:>7.3f}{delta:>11.4f}"
        )
    if ref.result is not None and ref.result.recovery is not None:
        print(f"all-pairs basins vs training arms: ARI {ref.result.recovery:.3f}")
    if ref.result is not None:
        with Store(studies["all pairs"].store_path(), create=False) as store:
            print(sequential_noise(store, ref.result, args))

    throughput = ref.passes / median(ref.seconds)
    projection(args, studies, {k: r.passes / ref.passes for k, r in rows.items()}, throughput, n)


def projection(
    args: argparse.Namespace,
    studies: dict[str, Study],
    share: dict[str, float],
    throughput: float,
    n: int,
) -> None:
    """The planner's counts for ``--project`` members, all pairs vs landmarks, and the
    measured shares of the other savings applied on top of the landmark plan."""
    full = plan_study(studies["all pairs"], members=args.project, throughput=throughput)
    marks = plan_study(studies["landmarks"], members=args.project, throughput=throughput)
    print(
        f"\nprojection for N = {args.project:,} (modeconn plan, at the all-pairs sweep's "
        f"measured {throughput:,.0f} examples/s on this machine):"
    )
    print("all pairs:\n  " + full.summary().replace("\n", "\n  "))
    print("landmarks:\n  " + marks.summary().replace("\n", "\n  "))
    seq = "sequential"  # swept, or replayed (--replay)
    both = share["all three"] / share["landmarks"]  # adaptive + sequential on landmark paths
    wall, full_wall = marks.wall_seconds, full.wall_seconds
    print(
        f"adaptive alone kept {share['adaptive']:.1%} and sequential alone "
        f"{share[seq]:.1%} of the interior passes at N = {n}; on the landmark paths together "
        f"they kept {both:.1%}"
    )
    if wall is not None and full_wall is not None:
        print(
            f"all three at N = {args.project:,}: ≈ {marks.interior_evaluations * both:,.0f} "
            f"interior evaluations, ≈ {wall * both / 3600:,.1f} h instead of "
            f"{full_wall / 3600:,.1f} h for all pairs ({wall * both / full_wall:.2%}), "
            "assuming the measured shares hold at that N"
        )


if __name__ == "__main__":
    main()
