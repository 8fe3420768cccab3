"""Cluster statistics (Juneja et al. 2023, Table 1), R² and predictor tables.

How far apart the basins lie on the ID metric and every OOD metric (means per basin and
the gaps in C1's standard deviations, C1 = the larger basin), and how much of each OOD
metric basin membership, the basin score and ε-sharpness (when the study measures it)
explain: R² with bootstrap intervals, and each predictor's Pearson and Spearman
correlation (:mod:`modeconn.stats.basins` does the maths). Read from the store alone; it
runs for every study (no section).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modeconn.analyses.base import MeasureContext
from modeconn.errors import ModeconnError
from modeconn.results import StudyResult
from modeconn.stats.basins import cluster_statistics, correlate, membership_regression, r_squared
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.report.html import Section


@dataclass(frozen=True)
class TableOneTables:
    cluster_stats: pd.DataFrame  # Table 1: one row per metric
    regressions: pd.DataFrame  # R² of each OOD metric on each predictor
    predictors: pd.DataFrame  # correlation of each predictor with each OOD metric
    baseline: pd.Series | None = None  # ε-sharpness per member, if measured


def table_one(result: StudyResult, sharpness: pd.Series | None) -> pd.DataFrame:
    """Their Table 1 over the ID metric and every OOD metric (C1 = the larger basin)."""
    id_col = result.metric_column(result.study.basins.split)
    cols = [id_col, *result.ood_columns().values()]
    values = {c: result.members[c].to_numpy(float) for c in dict.fromkeys(cols)}
    if sharpness is not None:
        values["ε-sharpness"] = sharpness.loc[result.members.index].to_numpy(float)
    return cluster_statistics(result.fit.labels, values).reset_index()


def predictor_tables(
    result: StudyResult, sharpness: pd.Series | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per OOD metric: R² on membership / score / sharpness, and Pearson r of each."""
    b = result.study.basins
    labels = result.fit.labels
    preds: dict[str, np.ndarray] = {"basin score": result.members["score"].to_numpy(float)}
    if sharpness is not None:
        preds["ε-sharpness"] = sharpness.loc[result.members.index].to_numpy(float)
    regs, cors = [], []
    for split, col in result.ood_columns().items():
        y = result.members[col].to_numpy(float)
        fits = []
        with contextlib.suppress(ModeconnError):
            fits.append(membership_regression(y, labels, n_boot=b.bootstrap, seed=b.seed))
        for name, x in preds.items():
            try:
                fits.append(r_squared(x, y, predictor=name, n_boot=b.bootstrap, seed=b.seed))
                c = correlate(x, y, n_boot=b.bootstrap, seed=b.seed)
            except ModeconnError:
                continue
            cors.append(
                {
                    "predictor": name,
                    "split": split,
                    "metric": col.rsplit(".", 1)[1],
                    "pearson_r": c.pearson_r,
                    "pearson_lo": c.pearson_ci[0],
                    "pearson_hi": c.pearson_ci[1],
                    "spearman_rho": c.spearman_rho,
                    "spearman_lo": c.spearman_ci[0],
                    "spearman_hi": c.spearman_ci[1],
                }
            )
        for f in fits:
            regs.append(
                {
                    "outcome": col,
                    "predictor": "basin membership"
                    if f.predictor.startswith("member")
                    else f.predictor,
                    "r_squared": f.r_squared,
                    "r2_lo": f.r_squared_ci[0],
                    "r2_hi": f.r_squared_ci[1],
                    "slope": f.slope,
                    "p_value": f.p_value,
                }
            )
    return pd.DataFrame(regs), pd.DataFrame(cors)


class TableOne:
    key = "table_one"
    section = None  # no options: always computed
    always = True
    cites = "Juneja et al. 2023, Table 1 (and Fig. 11's metric correlations)"
    summary = (
        "per-basin means and gaps of every metric, R² of each OOD metric on basin "
        "membership, score and ε-sharpness, and each predictor's correlation"
    )
    needs_weights = False

    def measure(self, ctx: MeasureContext) -> None:
        return None  # everything comes from the stored member points

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> TableOneTables:
        sharp = earlier.get("sharpness")
        stats = (
            table_one(result, sharp)
            if result.fit.n_basins >= 2 and min(result.fit.sizes[:2]) >= 1
            else pd.DataFrame()
        )
        regressions, predictors = predictor_tables(result, sharp)
        return TableOneTables(stats, regressions, predictors, sharp)

    def sections(self, result: StudyResult, value: TableOneTables) -> list[Section]:
        import modeconn.figures as figures
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        figs = []
        metric_cols = [
            c
            for c in result.members.columns
            if "." in c and c.rsplit(".", 1)[1] in ("accuracy", "f1", "mcc")
        ]
        if len(metric_cols) >= 2 and len(result.members) >= 3:
            frame = result.members[metric_cols].astype(float)
            if value.baseline is not None:
                frame = frame.assign(**{"ε-sharpness": value.baseline})
            frame = frame.loc[:, frame.std() > 0]
            if frame.shape[1] >= 2:
                figs.append(
                    (
                        "Pearson correlations between the members' metrics (the paper's Fig. 11).",
                        figures.correlation_matrix(frame),
                    )
                )
        tables = [
            (
                "Cluster statistics (the paper's Table 1): C1 = the larger basin; gaps in C1's "
                "standard deviations (ddof = 1).",
                value.cluster_stats,
            ),
            (
                "R² of each OOD metric on basin membership, the basin score and ε-sharpness "
                "(bootstrap 95% intervals).",
                value.regressions,
            ),
            (
                "Pearson and Spearman correlation of each predictor with each OOD metric.",
                value.predictors,
            ),
        ]
        return [
            Section(
                title="Cluster statistics and baselines",
                text=(
                    "How far apart the basins lie on each metric, and how much of each OOD "
                    "metric basin membership explains next to the baseline (ε-sharpness, "
                    "when the study measures it)."
                ),
                figures=tuple(figs),
                tables=tuple((c, t) for c, t in tables if len(t)),
                provenance=provenance(result, result.study.basins.split),
            )
        ]

    def summary_lines(self, value: TableOneTables) -> list[str]:
        lines = []
        for _, r in value.predictors.iterrows():
            if r["predictor"] == "basin score":
                continue  # the study summary prints it already
            lines.append(
                f"{r['predictor']} ↔ {r['split']} {r['metric']}: Pearson r = {r['pearson_r']:+.3f} "
                f"[{r['pearson_lo']:+.3f}, {r['pearson_hi']:+.3f}]"
            )
        return lines

    def summary_json(self, value: TableOneTables) -> dict[str, Any]:
        """Table 1, the R² of each OOD metric per predictor, each predictor's correlations."""
        from modeconn.analyses.base import records

        return {
            "cluster_stats": records(value.cluster_stats),
            "regressions": records(value.regressions),
            "predictors": records(value.predictors),
        }
