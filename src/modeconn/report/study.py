"""The study's HTML report: the core sections (curves, distances, basins, members, study)
drawn from the store, then each enabled analysis's own sections (its ``sections()``)."""

from __future__ import annotations

from pathlib import Path

import modeconn.figures as figures
from modeconn.analyses import registry
from modeconn.report.common import heatmap_order, member_paths, provenance
from modeconn.report.html import Section, write_report
from modeconn.results import StudyResult
from modeconn.store import Store


def write_study_report(store: Store, result: StudyResult, out_dir: Path) -> Path:
    """Write `out_dir/report.html` (images embedded) and the PNGs; return the HTML path."""
    study = result.study
    b = study.basins
    basins = result.members["basin"]
    scores = result.members["score"]
    sections: list[Section] = []

    summary = {
        "members": str(len(result.members)),
        "distance": f"{b.distance} of the loss on '{b.split}'",
        "distance range (off-diagonal)": "{:.4f} – {:.4f}".format(*result.distance_range),
        "basins": f"{result.fit.n_basins} (sizes {', '.join(map(str, result.fit.sizes))})",
        "similarity scale δ": f"{result.fit.delta:.4g}",
        "clustering": f"seed {result.fit.seed}, {result.fit.centroids_from} centroids"
        + (" (basins.preset: paper)" if b.preset == "paper" else ""),
        "ties in the basin score (equal within 1e-9, average ranks)": str(result.fit.ties),
    }
    for i, note in enumerate(result.notes, 1):
        summary[f"note {i}"] = note
    if result.recovery is not None:
        summary["basins vs. arms (adjusted Rand index)"] = f"{result.recovery:.3f}"
    for _, row in result.correlations.iterrows():
        summary[f"score ↔ {row['split']} {row['metric']} (Pearson r, 95% CI)"] = (
            f"{row['pearson_r']:+.3f} [{row['pearson_lo']:+.3f}, {row['pearson_hi']:+.3f}]"
        )

    # interpolation curves on every path split
    curve_figs: list[tuple[str, figures.Figure]] = []
    for split in study.paths.splits:
        key = result.splits[split]["key"]
        pts = member_paths(store, result, key)
        pts["split"] = split
        curve_figs.append(
            (
                f"Loss along every linear path on '{split}', coloured by basin.",
                figures.interpolation_curves(pts, split=split, metric="loss", basins=basins),
            )
        )
    ood_all = b.ood
    if ood_all and len(result.members) >= 4:
        col = result.metric_column(ood_all[0])
        for split in study.paths.splits:
            key = result.splits[split]["key"]
            pts = member_paths(store, result, key)
            pts["split"] = split
            curve_figs.append(
                (
                    f"Mean loss on '{split}' among the best and among the worst members by "
                    f"{ood_all[0]} {col.rsplit('.', 1)[1]}, and between the two groups "
                    "(±1 sd bands; the paper's Fig. 1(a)).",
                    figures.best_worst_curves(
                        pts, split=split, ood=result.members[col], ood_label=ood_all[0]
                    ),
                )
            )
            path_metric = result.splits[split].get("metric", "accuracy")
            if path_metric in pts.columns and pts[path_metric].notna().any():
                curve_figs.append(
                    (
                        f"Mean {path_metric} on '{split}' along the same paths (the paper's "
                        "Fig. 1(b)).",
                        figures.best_worst_curves(
                            pts,
                            split=split,
                            ood=result.members[col],
                            ood_label=ood_all[0],
                            metric=path_metric,
                        ),
                    )
                )
    sections.append(
        Section(
            title="Interpolation curves",
            text="θα = α·θA + (1−α)·θB on a fixed sample shared by every pair; α = 1 is A.",
            figures=tuple(curve_figs),
            provenance=provenance(result, *study.paths.splits),
        )
    )

    # distance heatmap sorted by the first OOD metric
    ood = b.ood
    order, order_name = heatmap_order(result)
    sections.append(
        Section(
            title="Convexity-gap matrix" if b.distance == "convexity_gap" else "Distance matrix",
            text=(
                f"{b.distance} of the loss curve on '{b.split}' for every pair"
                + (f", members sorted by {order_name} (ascending)." if order_name else ".")
            ),
            figures=(
                (
                    "Pairwise distances.",
                    figures.distance_heatmap(
                        result.distance, order_by=order, label=b.distance.replace("_", " ")
                    ),
                ),
            ),
            provenance=provenance(result, b.split),
        )
    )

    # basins: table, score scatter and histograms per OOD split
    figs: list[tuple[str, figures.Figure]] = []
    for split in ood:
        col = result.metric_column(split)
        figs.append(
            (
                f"{split}: basin score vs. {col.split('.')[-1]} with a least-squares fit.",
                figures.score_scatter(
                    scores,
                    result.members[col],
                    basins=basins,
                    ylabel=f"{split} {col.split('.')[-1]}",
                ),
            )
        )
        figs.append(
            (
                f"{split}: {col.split('.')[-1]} per basin.",
                figures.basin_histograms(result.members[col], basins, xlabel=f"{split}"),
            )
        )
    arms = ""
    if result.recovery is not None:
        arms = (
            f" Basins against the training arms: adjusted Rand index {result.recovery:.3f} "
            "(1 = the basins are the arms, 0 = chance)."
        )
    sections.append(
        Section(
            title="Basins",
            text=(
                f"Spectral clustering of S = exp(−D²/(2δ²)), δ = {result.fit.delta:.4g}"
                f"{' (median distance)' if b.delta == 'median' else ''}, into "
                f"{result.fit.n_basins} basins. Score = ‖w − c₁‖ − ‖w − c₂‖ in the spectral "
                f"embedding (c₁: centroid of the larger basin; {result.fit.centroids_from} "
                f"centroids); {result.fit.ties} members tie on their score (scores equal "
                "within a relative 1e-9 count as ties, with average ranks)." + arms
            ),
            figures=tuple(figs),
            tables=(
                ("Basins (mean and standard deviation per basin).", result.basins),
                ("Basin score ↔ OOD metric (bootstrap 95% intervals).", result.correlations),
                *(
                    (("Members of each training arm per basin.", result.arms),)
                    if result.arms is not None
                    else ()
                ),
            ),
            provenance=provenance(result, b.split),
        )
    )

    if result.analyses is not None:
        for analysis in registry.enabled(study):
            if analysis.key in result.analyses:
                sections += analysis.sections(result, result.analyses[analysis.key])

    shown = [c for c in result.members.columns if c not in ("hash",)]
    members = result.members[shown].copy()
    members.insert(0, "hash", result.members["hash"].str[:12])
    sections.append(
        Section(
            title="Members",
            text="Every member with its metadata and its loss and metrics on every split.",
            tables=(("Members.", members.reset_index()),),
        )
    )
    sections.append(
        Section(
            title="Study",
            text=study.model_dump_json(indent=2),
        )
    )
    return write_report(out_dir, sections, title=f"modeconn — {study.name}", summary=summary)
