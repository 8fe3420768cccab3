"""Landmark basins replayed on a complete all-pairs store: every method, every m, in seconds.

    .venv/bin/python benchmarks/landmarks_replay.py STORE_DIR_OR_SQLITE
    .venv/bin/python benchmarks/landmarks_replay.py runs/x --m 3,4,5,8 --seeds 10 --draws 200

A landmark sweep measures every path it measures exactly as the all-pairs sweep did (same
weights, sample, α grid: the same curve), so masking the all-pairs convexity-gap matrix to
the pairs a landmark run would measure *is* that run
(:func:`modeconn.stats.landmarks.replay_landmarks`; ``tests/test_landmark_sweep.py``
checks it against real landmark runs). The matrix and the all-pairs basins are read with
modeconn's own readers (:func:`modeconn.results.analyze`), with the study's basin options.

Printed:

* **the reference's own stability** — the bootstrap over the evaluation sample
  (:mod:`modeconn.stats.uncertainty`, ``--draws`` resamples of the stored per-example
  losses): ARI of each draw's basins against the full sample's (mean, median, 5–95 %),
  the ARI between independent draws, how many members stay in their basin in < 90 % of
  draws, and the spectral gap (λ₂, λ₃ of the normalised Laplacian). No subset of the pairs
  can be expected to agree with the all-pairs basins better than the all-pairs basins agree
  with themselves under a new sample.
* **per method (choice / completion) and m** — the share of the all-pairs interior
  forward passes (pairs × (points − 2) × sample; the N member evaluations are the same in
  both and left out), the ARI against all pairs over ``--seeds`` landmark seeds (mean
  [min–max]), and *noise* on the same masks: the ARI of the all-pairs basins when only the
  unmeasured entries are replaced by their values in a bootstrap draw (seed s uses draw s).
  It is how far the reference moves when nothing but the sampling noise of exactly the
  pairs a landmark run does not measure changes — what a completion that knew every
  unmeasured gap up to that noise would reach. It is no hard bound (a low-rank completion
  also smooths the noise, and may land closer by chance), but a method whose ARI is near
  it has nothing left to gain from a better completion: the rest is the sample's.
* the largest m within ``--budget`` (default 25 %) of the pairs at this N and at
  ``--project`` members (default 100), counted as ``modeconn plan`` counts them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from modeconn.analyses.uncertainty import example_losses
from modeconn.errors import ModeconnError
from modeconn.results import analyze, distance_matrix, study_from_store
from modeconn.stats.basins import find_basins
from modeconn.stats.landmarks import (
    CHOICES,
    COMPLETIONS,
    landmark_fraction,
    measured_mask,
    replay_landmarks,
)
from modeconn.stats.uncertainty import align_labels, distance_samples, resample_weights
from modeconn.store import Store


def _store_path(where: str | Path) -> Path:
    where = Path(where)
    return where / "results.sqlite" if where.is_dir() else where


def read_reference(store_path: str | Path) -> dict[str, Any]:
    """The all-pairs matrix (ids sorted, the sweep's draw order), its basins and options."""
    with Store(_store_path(store_path), create=False) as store:
        study = study_from_store(store)
        b = study.basins
        full = study.model_copy(update={"basins": b.model_copy(update={"landmarks": None})})
        result = analyze(store, full)
        d = distance_matrix(store, split=b.split, metric=b.distance)
        ex, pairs = example_losses(store, result, b.split)
    order = sorted(d.index)
    where = [list(result.members.index).index(m) for m in order]
    return {
        "ids": order,
        "distance": d.loc[order, order].to_numpy(),
        "labels": np.asarray(result.fit.labels)[where],
        "eigenvalues": np.asarray(result.fit.eigenvalues),
        "options": b.fit_options(),
        "examples": ex,  # (P, A, n) in the result's member order
        "pairs": pairs,
        "where": where,
        "alphas": result.grid["alphas"],
        "metric": b.distance,
        "landmark_seed": b.landmark_seed,
    }


def bootstrap(ref: dict[str, Any], draws: int, seed: int = 0) -> np.ndarray:
    """(B, N, N) distance matrices of `draws` resamples of the examples, ids sorted."""
    n = len(ref["ids"])
    w = resample_weights(ref["examples"].shape[2], samples=draws, seed=seed)
    dist = distance_samples(
        ref["examples"], w, ref["pairs"], n, alphas=ref["alphas"], metric=ref["metric"]
    )
    idx = np.asarray(ref["where"])
    return dist[:, idx][:, :, idx]


def stability(ref: dict[str, Any], boot: np.ndarray) -> dict[str, Any]:
    """How far the all-pairs basins are their sample's: ARIs, unstable members, gap."""
    labels, opts = ref["labels"], ref["options"]
    drawn = []
    for d in boot:
        try:
            drawn.append(align_labels(find_basins(d, **opts).labels, labels))
        except ModeconnError:  # a draw with a single basin
            continue
    lab = np.asarray(drawn)
    aris = np.array([adjusted_rand_score(labels, x) for x in lab])
    pairwise = [adjusted_rand_score(lab[i], lab[i + 1]) for i in range(0, len(lab) - 1, 2)]
    keep = (lab == labels).mean(axis=0)
    return {
        "draws": len(lab),
        "ari": aris,
        "draw_vs_draw": float(np.mean(pairwise)) if pairwise else float("nan"),
        "unstable": int(np.sum(keep < 0.9)),
        "keep": keep,
    }


def replay_rows(
    ref: dict[str, Any],
    boot: np.ndarray | None,
    *,
    ms: list[int],
    seeds: int,
    choices: tuple[str, ...] = CHOICES,
    completions: tuple[str, ...] = COMPLETIONS,
) -> pd.DataFrame:
    """One row per (choice, completion, m): share of passes, ARIs over seeds, noise."""
    d, labels, opts = ref["distance"], ref["labels"], ref["options"]
    n, rows = len(d), []
    for choice in choices:
        for completion in completions:
            for m in ms:
                aris, noise = [], []
                for s in range(seeds):
                    seed = ref["landmark_seed"] + s
                    marks, fit = replay_landmarks(
                        d, m, choice=choice, landmark_seed=seed, completion=completion, **opts
                    )
                    aris.append(adjusted_rand_score(labels, fit.labels))
                    if boot is not None and marks is not None:
                        noisy = np.where(measured_mask(n, marks), d, boot[s % len(boot)])
                        try:
                            oracle = find_basins(noisy, **opts).labels
                        except ModeconnError:
                            oracle = np.zeros(n, dtype=np.int64)
                        noise.append(adjusted_rand_score(labels, oracle))
                a = np.asarray(aris)
                rows.append(
                    {
                        "choice": choice,
                        "completion": completion,
                        "m": m,
                        "share": landmark_fraction(n, m) if m < n - 1 else 1.0,
                        "ari_mean": float(a.mean()),
                        "ari_min": float(a.min()),
                        "ari_max": float(a.max()),
                        "noise": float(np.mean(noise)) if noise else float("nan"),
                    }
                )
    return pd.DataFrame(rows)


def subpopulation_rows(
    ref: dict[str, Any],
    *,
    sizes: list[int],
    ms: list[int],
    reps: int,
    choice: str,
    completion: str,
    seed: int = 0,
) -> pd.DataFrame:
    """ARI at fixed m as the population grows: `reps` random sub-populations of each size
    (members drawn with `seed`), each against its own all-pairs basins, landmark seed = rep.

    Nyström's error depends on m and the affinity's spectrum, not on N; if the ARI at a
    fixed m does not change with the sub-population's size, the ARI of m landmarks at this
    N is the forecast for m landmarks at a larger N of the same recipe."""
    d_all, opts = ref["distance"], ref["options"]
    n_all, rng, rows = len(d_all), np.random.default_rng(seed), []
    for size in sizes:
        subs = [np.sort(rng.choice(n_all, size, replace=False)) for _ in range(reps)]
        for m in ms:
            aris = []
            for rep, sub in enumerate(subs):
                d = d_all[np.ix_(sub, sub)]
                try:
                    labels = find_basins(d, **opts).labels
                    _, fit = replay_landmarks(
                        d, m, choice=choice, landmark_seed=rep, completion=completion, **opts
                    )
                except ModeconnError:  # a sub-population with a single basin
                    continue
                aris.append(adjusted_rand_score(labels, fit.labels))
            rows.append({"members": size, "m": m, "ari_mean": float(np.mean(aris))})
    return pd.DataFrame(rows)


def largest_m(n: int, budget: float) -> int:
    """The most landmarks whose pairs stay within `budget` of all N(N − 1)/2."""
    m = 0
    while m + 1 < n - 1 and landmark_fraction(n, m + 1) <= budget:
        m += 1
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store", type=Path, help="an all-pairs study's output dir or results.sqlite")
    ap.add_argument("--m", default="3,4,5,6,8,10,12", help="landmark counts (comma-separated)")
    ap.add_argument("--seeds", type=int, default=10, help="landmark seeds per row (default 10)")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap draws (0: no bootstrap)")
    ap.add_argument("--choices", default=",".join(CHOICES))
    ap.add_argument("--completions", default=",".join(COMPLETIONS))
    ap.add_argument("--budget", type=float, default=0.25, help="share of pairs (default 0.25)")
    ap.add_argument("--project", type=int, default=100, help="members to size m for")
    ap.add_argument(
        "--sub",
        default="",
        help="sub-population sizes (comma-separated) for ARI at fixed m vs. N, with the first "
        "of --choices and --completions, --seeds sub-populations each",
    )
    ap.add_argument("--sub-m", default="4,8,12", help="landmark counts of --sub")
    args = ap.parse_args()
    ref = read_reference(args.store)
    n = len(ref["ids"])
    ex = ref["examples"]
    print(
        f"{_store_path(args.store)}: N = {n} members, {n * (n - 1) // 2} pairs × "
        f"{ex.shape[1] - 2} interior α × {ex.shape[2]} examples; all-pairs basins sizes "
        f"{np.bincount(ref['labels']).tolist()}; options {ref['options']}"
    )
    lam = ref["eigenvalues"]
    print(f"spectral gap: λ₂ = {lam[1]:.3f}, λ₃ = {lam[2]:.3f} (λ₃ − λ₂ = {lam[2] - lam[1]:.3f})")
    boot = None
    if args.draws > 0:
        boot = bootstrap(ref, args.draws)
        st = stability(ref, boot)
        a = st["ari"]
        q05, q50, q95 = np.quantile(a, [0.05, 0.5, 0.95])
        print(
            f"reference stability ({st['draws']} bootstrap draws of the sample): ARI vs. full "
            f"sample mean {a.mean():.3f}, median {q50:.3f}, 5–95 % [{q05:.3f}, {q95:.3f}], "
            f"identical {np.mean(np.isclose(a, 1.0)):.0%}; draw vs. draw {st['draw_vs_draw']:.3f}; "
            f"{st['unstable']} of {n} members in their basin in < 90 % of draws"
        )
    print(
        f"largest m within {args.budget:.0%} of the pairs: {largest_m(n, args.budget)} at "
        f"N = {n}, {largest_m(args.project, args.budget)} at N = {args.project}"
    )
    table = replay_rows(
        ref,
        boot,
        ms=[int(x) for x in args.m.split(",")],
        seeds=args.seeds,
        choices=tuple(args.choices.split(",")),
        completions=tuple(args.completions.split(",")),
    )
    print(
        f"\n{'choice':<10}{'completion':<12}{'m':>3}{'passes':>8}  "
        f"{'ARI vs all pairs mean [min–max]':<32}{'noise':>8}"
    )
    for r in table.itertuples():
        span = f"{r.ari_mean:.3f} [{r.ari_min:.3f}–{r.ari_max:.3f}]"
        print(f"{r.choice:<10}{r.completion:<12}{r.m:>3}{r.share:>8.1%}  {span:<32}{r.noise:>8.3f}")
    if args.sub:
        choice, completion = args.choices.split(",")[0], args.completions.split(",")[0]
        sub = subpopulation_rows(
            ref,
            sizes=[int(x) for x in args.sub.split(",")],
            ms=[int(x) for x in args.sub_m.split(",")],
            reps=args.seeds,
            choice=choice,
            completion=completion,
        )
        print(
            f"\nARI at fixed m vs. members ({choice} / {completion}, {args.seeds} sub-populations)"
        )
        wide = sub.pivot(index="members", columns="m", values="ari_mean")
        print(f"{'members':>8}" + "".join(f"{f'm = {m}':>9}" for m in wide.columns))
        for size, row in wide.iterrows():
            print(f"{size:>8}" + "".join(f"{v:>9.3f}" for v in row))
    first = ref["landmark_seed"]
    print(
        f"\nARI over landmark seeds {first}…{first + args.seeds - 1}; noise: the all-pairs "
        "basins with only the unmeasured entries taken from bootstrap draw s"
    )


if __name__ == "__main__":
    main()
