"""δ = median or δ = 1? Both similarity scales on several populations, side by side.

For each population: the convexity-gap matrix, basins at δ = median and δ = 1 (k = 2, seed
0, mean centroids), the ARI between the two clusterings, each one's Pearson r of the basin
score with the OOD metric, and each one's stability under the bootstrap over the
evaluation sample (:func:`modeconn.stats.uncertainty.sample_uncertainty`: mean ARI of a
draw's basins against the full sample's, and the share of draws with identical basins).

Populations:

* stored studies given on the command line (``--store PATH:SPLIT:OOD_COLUMN``), read
  from the store alone (curves with per-example losses, member metrics);
* synthetic two-basin populations at five barrier scales: per-example losses along every
  path, a bump of height ``scale`` between basins and ``ratio × scale`` within (0.25:
  clear basins; 0.7: barely separated), per-example noise; the OOD metric is the basin
  plus noise.

    PYTHONPATH=src python benchmarks/delta_choice.py \
        --store /tmp/digits.sqlite:clean:random_cue.accuracy
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from modeconn.stats.basins import find_basins, median_delta
from modeconn.stats.inference import correlate
from modeconn.stats.uncertainty import distance_samples, sample_uncertainty

ALPHAS = np.linspace(0.0, 1.0, 11)


def synthetic(
    scale: float, *, ratio: float = 0.25, n: int = 10, examples: int = 256, seed: int = 0
) -> dict[str, Any]:
    """(P, A, n) per-example losses of a two-basin population with barriers ~ ``scale``."""
    rng = np.random.default_rng(seed)
    group = np.array([0] * (n // 2 + 1) + [1] * (n - n // 2 - 1))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    bump = np.sin(np.pi * ALPHAS)  # (A,)
    base = rng.uniform(0.3, 0.6, size=(examples,))  # (n_ex,)
    blocks = []
    for i, j in pairs:
        h = scale if group[i] != group[j] else scale * ratio
        h *= rng.uniform(0.6, 1.4)
        per_example = h * rng.gamma(2.0, 0.5, size=examples)  # mean h, spread over examples
        noise = rng.normal(0, 0.02 * scale, size=(ALPHAS.size, examples))
        blocks.append(base[None, :] + bump[:, None] * per_example[None, :] + noise)
    ood = group + rng.normal(0, 0.3, size=n)
    return {"examples": np.stack(blocks), "pairs": pairs, "n": n, "ood": ood}


def from_store(path: str, split: str, ood_column: str) -> dict[str, Any]:
    from modeconn.results import curves, member_table
    from modeconn.store import Store

    with Store(path, create=False) as store:
        members = member_table(store)
        by_pair = curves(store, split, with_examples=True)
        ids = list(members.index)
        pairs, blocks = [], []
        for i, a in enumerate(ids):
            for j in range(i + 1, len(ids)):
                g = by_pair[(a, ids[j])]
                pairs.append((i, j))
                blocks.append(np.stack(list(g["example_losses"])))
        alphas = np.asarray(g["alpha"], dtype=float)
    return {
        "examples": np.stack(blocks).astype(np.float64),
        "pairs": pairs,
        "n": len(ids),
        "ood": members[ood_column].to_numpy(float),
        "alphas": alphas,
    }


def compare(pop: dict[str, Any], *, samples: int = 100) -> dict[str, Any]:
    alphas = pop.get("alphas", ALPHAS)
    ex, pairs, n = pop["examples"], pop["pairs"], pop["n"]
    full = np.full((1, ex.shape[2]), 1.0 / ex.shape[2])
    d = distance_samples(ex, full, pairs, n, alphas=alphas, metric="convexity_gap")[0]
    off = d[~np.eye(n, dtype=bool)]
    row: dict[str, Any] = {"N": n, "CG min": off.min(), "CG max": off.max()}
    fits = {}
    for name, delta in (("median", "median"), ("1", 1.0)):
        fit = find_basins(d, n_basins=2, delta=delta, seed=0)
        fits[name] = fit
        s = np.exp(-(off**2) / (2 * fit.delta**2))
        row[f"S min (δ={name})"] = s.min()
        c = correlate(fit.scores, pop["ood"], n_boot=500, seed=0, constant="undefined")
        row[f"|r| (δ={name})"] = abs(c.pearson_r)
        u = sample_uncertainty(
            ex, pairs, [str(i) for i in range(n)], fit.labels, alphas=alphas,
            metric="convexity_gap", n_basins=2, delta=delta, samples=samples, seed=0,
        )  # fmt: skip
        summary = u.summary()
        row[f"boot ARI (δ={name})"] = summary["ARI vs. full sample: mean"]
        row[f"identical (δ={name})"] = summary["draws with identical basins"]
    row["δ median"] = median_delta(d)
    row["ARI median vs 1"] = adjusted_rand_score(fits["median"].labels, fits["1"].labels)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", action="append", default=[], help="PATH:SPLIT:OOD_COLUMN")
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    rows = []
    for spec in args.store:
        path, split, col = spec.rsplit(":", 2)
        pop = from_store(path, split, col)
        rows.append({"population": f"{path} ({split})", **compare(pop, samples=args.samples)})
    for ratio in (0.25, 0.7):
        for scale in (0.01, 0.1, 1.0, 3.0, 10.0):
            for seed in (0, 1):
                pop = synthetic(scale, ratio=ratio, seed=seed)
                rows.append(
                    {
                        "population": f"synthetic ~{scale}, within/between {ratio}, seed {seed}",
                        **compare(pop, samples=args.samples),
                    }
                )
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.precision", 3):
        print(pd.DataFrame(rows).set_index("population").to_string())


if __name__ == "__main__":
    main()
