"""Uncertainty over the evaluation sample: a bootstrap of the examples every path shares.

The fixed sample of ``basins.split`` is resampled with replacement (one draw shared by
every pair and α); each draw gives a distance matrix and basins, matched to the full
sample's: intervals of every distance entry, how often each member keeps its basin, the
ARI against the full sample, and the interval of the score ↔ OOD correlation; and the
basins re-clustered on random sub-samples of given sizes (their stability to the sample
size). The maths is :mod:`modeconn.stats.uncertainty`; this reads the per-example losses
the sweep stored and needs no weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

from modeconn.analyses.base import MeasureContext
from modeconn.config.sections import SectionModel
from modeconn.errors import DataError
from modeconn.results import StudyResult, curves
from modeconn.stats.uncertainty import SampleUncertainty, sample_uncertainty, size_stability
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.report.html import Section


# The basins are called noise when the bootstrap over the sample keeps them (identical
# basins, ARI = 1) in fewer than half of its draws.
UNSTABLE = 0.5


def instability_notes(u: SampleUncertainty, *, examples: int, split: str) -> list[str]:
    """The note that the basins are noise, when the bootstrap keeps them < half the time.

    >>> import numpy as np
    >>> u = SampleUncertainty(("a", "b", "c"), np.zeros((3, 3)), np.zeros((3, 3)),
    ...     np.ones(3), np.array([1.0, 0.2, 0.0, 0.3]), np.full(0, np.nan), 4, 0, 0.95, 0)
    >>> instability_notes(u, examples=64, split="mnli")[0][:62]
    "the bootstrap over the 64 examples of 'mnli' gives the very sa"
    """
    summary = u.summary()
    if not summary["usable draws"] or summary["draws with identical basins"] >= UNSTABLE:
        return []
    return [
        f"the bootstrap over the {examples} examples of '{split}' gives the very same "
        f"basins in only {summary['draws with identical basins']:.0%} of draws (mean ARI "
        f"{summary['ARI vs. full sample: mean']:.2f}): the basins follow the sample's "
        "noise as much as the loss surface; a larger sample is needed before reading them"
    ]


class UncertaintySection(SectionModel):
    """Bootstrap over the evaluation sample: intervals of every distance entry, how often
    each member keeps its basin, and the basins' stability to the sample size."""

    samples: int = Field(default=200, ge=2, description="bootstrap resamples of the sample")
    sizes: list[int] = Field(
        default_factory=list, description="sub-sample sizes to re-cluster at (e.g. [128, 256])"
    )
    repeats: int = Field(default=50, ge=1, description="random sub-samples per size")
    seed: int = 0


@dataclass(frozen=True)
class UncertaintyTables:
    uncertainty: SampleUncertainty
    stability: pd.DataFrame | None
    notes: tuple[str, ...] = ()


def example_losses(store: Store, result: StudyResult, split: str) -> tuple[np.ndarray, list]:
    """(P, A, n) per-example losses of every pair on `split`, and the pairs (i, j).

    A path a sequential sweep stopped after its first m examples has NaN for the rest
    (:func:`modeconn.stats.uncertainty.distance_samples` reads each path on its own).
    """
    ids = list(result.members.index)
    by_pair = curves(store, split, with_examples=True)  # by the current members' hashes
    pairs, blocks = [], []
    for i, a in enumerate(ids):
        for j in range(i + 1, len(ids)):
            g = by_pair.get((a, ids[j]))
            if g is None:
                raise DataError(
                    f"no path {a}–{ids[j]} on '{split}' in {store.path}; rerun the sweep"
                )
            arrays = list(g["example_losses"])
            if any(x is None for x in arrays):
                raise DataError(
                    f"path {a}–{ids[j]} on '{split}' was stored without per-example losses; "
                    "the bootstrap over the sample needs them (rerun into a new store)"
                )
            pairs.append((i, j))
            blocks.append(np.stack(arrays))  # (A, m) m ≤ n: paths.sequential may stop early
    n = max((b.shape[1] for b in blocks), default=0)
    out = np.full((len(blocks), len(blocks[0]) if blocks else 0, n), np.nan)
    for p, b in enumerate(blocks):  # the examples a path did not see stay NaN
        out[p, :, : b.shape[1]] = b
    return out, pairs


class Uncertainty:
    key = "uncertainty"
    section = UncertaintySection
    cites = "modeconn's own check (no figure in Juneja et al. 2023): bootstrap over the sample"
    summary = (
        "bootstrap over the evaluation sample: distance intervals, basin keeping, ARI vs. "
        "the full sample, and stability to sub-sample sizes"
    )
    needs_weights = False

    def measure(self, ctx: MeasureContext) -> None:
        return None  # the sweep stores the per-example losses it resamples

    def read(
        self, store: Store, result: StudyResult, earlier: Mapping[str, Any]
    ) -> UncertaintyTables:
        u: UncertaintySection = result.study.section(self.key)
        b = result.study.basins
        ex, pairs = example_losses(store, result, b.split)
        first = next(iter(result.ood_columns().values()), None)
        uncertainty = sample_uncertainty(
            ex,
            pairs,
            list(result.members.index),
            result.fit.labels,
            alphas=result.grid["alphas"],
            metric=b.distance,
            n_basins=result.fit.n_basins,
            delta=b.delta,
            ood=None if first is None else result.members[first].to_numpy(float),
            samples=u.samples,
            seed=u.seed,
            cluster_seed=b.seed,
            centroids=b.centroids,
        )
        notes = []
        notes += instability_notes(uncertainty, examples=ex.shape[2], split=b.split)
        sizes = [s for s in u.sizes if s < ex.shape[2]]
        if len(sizes) < len(u.sizes):
            notes.append(
                f"sub-sample sizes ≥ the stored sample ({ex.shape[2]}) were skipped; raise "
                f"the sample size of '{b.split}' to study them"
            )
        stability = None
        if sizes:
            stability = size_stability(
                ex,
                pairs,
                len(result.members),
                result.fit.labels,
                sizes=sizes,
                alphas=result.grid["alphas"],
                metric=b.distance,
                n_basins=result.fit.n_basins,
                delta=b.delta,
                repeats=u.repeats,
                seed=u.seed,
                cluster_seed=b.seed,
                centroids=b.centroids,
            )
        return UncertaintyTables(uncertainty, stability, tuple(notes))

    def sections(self, result: StudyResult, value: UncertaintyTables) -> list[Section]:
        import modeconn.figures as figures
        from modeconn.report.common import heatmap_order, provenance
        from modeconn.report.html import Section

        b = result.study.basins
        u = value.uncertainty
        summary = u.summary()
        d = result.distance
        width = pd.DataFrame(u.distance_hi - u.distance_lo, index=d.index, columns=d.columns)
        lo, hi = summary["ARI interval"]
        rlo, rhi = summary["score ↔ OOD r interval"]
        first = b.ood[0] if b.ood else "-"
        stats_table = pd.DataFrame(
            {
                "draws": [summary["draws"]],
                "usable": [summary["usable draws"]],
                "ARI mean": [summary["ARI vs. full sample: mean"]],
                "ARI lo": [lo],
                "ARI hi": [hi],
                "identical basins": [summary["draws with identical basins"]],
                f"r lo ({first})": [rlo],
                f"r hi ({first})": [rhi],
            }
        )
        tables = [("Bootstrap over the evaluation sample.", stats_table)]
        if value.stability is not None:
            tables.append(
                (
                    "Basins re-clustered on random sub-samples of the evaluation sample.",
                    value.stability,
                )
            )
        order, _ = heatmap_order(result)
        return [
            Section(
                title="Uncertainty over the evaluation sample",
                text=(
                    f"The {result.splits[b.split]['sample_size']} examples of "
                    f"'{b.split}' were resampled with replacement {u.samples} times (one "
                    "draw shared by every pair and α); each draw gives a distance matrix and "
                    "basins, matched to the full sample's."
                ),
                figures=(
                    (
                        "Share of draws in which each member keeps its basin.",
                        figures.basin_keeping(
                            pd.Series(u.keep, index=list(u.members)),
                            result.members["basin"],
                            draws=u.samples,
                        ),
                    ),
                    (
                        f"Width of the 95% interval of every {b.distance.replace('_', ' ')} entry.",
                        figures.distance_heatmap(
                            width, order_by=order, label="interval width", mask_diagonal=True
                        ),
                    ),
                ),
                tables=tuple(tables),
                provenance=provenance(result, b.split),
            )
        ]

    def summary_lines(self, value: UncertaintyTables) -> list[str]:
        u = value.uncertainty.summary()
        lo, hi = u["ARI interval"]
        lines = [
            f"bootstrap over the sample ({u['usable draws']} draws): ARI vs. full sample "
            f"{u['ARI vs. full sample: mean']:.2f} [{lo:.2f}, {hi:.2f}], least-kept member "
            f"{u['least-kept member']:.2f}"
        ]
        if value.stability is not None:
            for _, r in value.stability.iterrows():
                lines.append(
                    f"sub-samples of {int(r['size'])}: ARI vs. full sample {r['ari_mean']:.2f}, "
                    f"identical basins in {r['identical']:.0%}"
                )
        return lines

    def summary_json(self, value: UncertaintyTables) -> dict[str, Any]:
        """The bootstrap's headline (ARI vs. the full sample with its interval, share of
        draws with identical basins), each member's share of draws kept in its basin, and
        the stability to sub-sample sizes."""
        from modeconn.analyses.base import records

        u = value.uncertainty
        s = u.summary()
        return {
            "draws": s["draws"],
            "usable_draws": s["usable draws"],
            "ari_mean": s["ARI vs. full sample: mean"],
            "ari_interval": list(s["ARI interval"]),
            "identical_share": s["draws with identical basins"],
            "score_r_interval": list(s["score ↔ OOD r interval"]),
            "kept": dict(zip(u.members, u.keep.tolist(), strict=True)),
            "stability": None if value.stability is None else records(value.stability),
        }
