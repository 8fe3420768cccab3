"""The study's HTML report: figures and tables drawn from the store and its analysis."""

from __future__ import annotations

import json
from pathlib import Path

from modeconn import figures
from modeconn.report import Section, write_report
from modeconn.results import StudyResult, metric_column
from modeconn.store import Store


def _provenance(result: StudyResult, *splits: str) -> dict[str, str]:
    infos = {s: result.splits[s] for s in splits}
    return {
        "members": f"{len(result.members)} ({', '.join(result.members.index[:6])}"
        + (", …)" if len(result.members) > 6 else ")"),
        "split": "; ".join(f"{s} (store key {i['key']})" for s, i in infos.items()),
        "sample": "; ".join(
            f"{s}: {i['sample_size']} examples, seed {i['sample_seed']}" for s, i in infos.items()
        ),
        "grid": f"{result.grid['grid']}: α = {', '.join(f'{a:g}' for a in result.grid['alphas'])}",
    }


def _ood_column(result: StudyResult, split: str) -> str:
    metric = result.study["basins"].get("metric") or result.splits[split]["metric"]
    return metric_column(result.members, split, metric)


def write_study_report(store: Store, result: StudyResult, out_dir: Path) -> Path:
    """Write `out_dir/report.html` (images embedded) and the PNGs; return the HTML path."""
    study = result.study
    b = study["basins"]
    basins = result.members["basin"]
    scores = result.members["score"]
    sections: list[Section] = []

    summary = {
        "members": str(len(result.members)),
        "distance": f"{b['distance']} of the loss on '{b['split']}'",
        "distance range (off-diagonal)": "{:.4f} – {:.4f}".format(*result.distance_range),
        "basins": f"{result.fit.n_basins} (sizes {', '.join(map(str, result.fit.sizes))})",
        "similarity scale δ": f"{result.fit.delta:.4g}",
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
    for split in study["paths"]["splits"]:
        key = result.splits[split]["key"]
        pts = store.path_points(split=key, grid=result.grid["grid"]).copy()
        pts["split"] = split
        curve_figs.append(
            (
                f"Loss along every linear path on '{split}', coloured by basin.",
                figures.interpolation_curves(pts, split=split, metric="loss", basins=basins),
            )
        )
    sections.append(
        Section(
            title="Interpolation curves",
            text="θα = α·θA + (1−α)·θB on a fixed sample shared by every pair; α = 1 is A.",
            figures=tuple(curve_figs),
            provenance=_provenance(result, *study["paths"]["splits"]),
        )
    )

    # distance heatmap sorted by the first OOD metric
    ood = b["ood"]
    order = result.members[_ood_column(result, ood[0])] if ood else None
    sections.append(
        Section(
            title="Convexity-gap matrix" if b["distance"] == "convexity_gap" else "Distance matrix",
            text=(
                f"{b['distance']} of the loss curve on '{b['split']}' for every pair"
                + (f", members sorted by {ood[0]} accuracy (ascending)." if ood else ".")
            ),
            figures=(
                (
                    "Pairwise distances.",
                    figures.distance_heatmap(
                        result.distance, order_by=order, label=b["distance"].replace("_", " ")
                    ),
                ),
            ),
            provenance=_provenance(result, b["split"]),
        )
    )

    # basins: table, score scatter and histograms per OOD split
    figs: list[tuple[str, figures.Figure]] = []
    for split in ood:
        col = _ood_column(result, split)
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
                f"{' (median distance)' if b['delta'] == 'median' else ''}, into "
                f"{result.fit.n_basins} basins. Score = ‖w − c₁‖ − ‖w − c₂‖ in the spectral "
                "embedding (c₁: centroid of the larger basin)." + arms
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
            provenance=_provenance(result, b["split"]),
        )
    )

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
            text=json.dumps(study, indent=2),
        )
    )
    return write_report(out_dir, sections, title=f"modeconn — {study['name']}", summary=summary)
