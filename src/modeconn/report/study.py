"""The study's HTML report: figures and tables drawn from the store and its analysis."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from modeconn import figures
from modeconn.report.html import Section, write_report
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


def _heatmap_order(result: StudyResult) -> tuple[pd.Series | None, str]:
    """The member metric heatmaps are sorted by: basins.sort_by, else the first OOD split."""
    b = result.study["basins"]
    split = b.get("sort_by") or (b["ood"][0] if b["ood"] else None)
    if split is None:
        return None, ""
    col = _ood_column(result, split)
    return result.members[col], f"{split} {col.rsplit('.', 1)[1]}"


def _member_paths(store: Store, result: StudyResult, key: str) -> pd.DataFrame:
    """Path points between the study's members (not checkpoints) on one split key."""
    pts = store.path_points(split=key, grid=result.grid["grid"])
    ids = set(result.members.index)
    return pts[pts["member_a"].isin(ids) & pts["member_b"].isin(ids)].copy()


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
        pts = _member_paths(store, result, key)
        pts["split"] = split
        curve_figs.append(
            (
                f"Loss along every linear path on '{split}', coloured by basin.",
                figures.interpolation_curves(pts, split=split, metric="loss", basins=basins),
            )
        )
    ood_all = b["ood"]
    if ood_all and len(result.members) >= 4:
        col = _ood_column(result, ood_all[0])
        for split in study["paths"]["splits"]:
            key = result.splits[split]["key"]
            pts = _member_paths(store, result, key)
            pts["split"] = split
            curve_figs.append(
                (
                    f"Mean loss on '{split}' among the best and among the worst members by "
                    f"{ood_all[0]} {col.rsplit('.', 1)[1]}, and between the two groups "
                    "(±1 sd bands; the paper's Fig. 1).",
                    figures.best_worst_curves(
                        pts, split=split, ood=result.members[col], ood_label=ood_all[0]
                    ),
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
    order, order_name = _heatmap_order(result)
    sections.append(
        Section(
            title="Convexity-gap matrix" if b["distance"] == "convexity_gap" else "Distance matrix",
            text=(
                f"{b['distance']} of the loss curve on '{b['split']}' for every pair"
                + (f", members sorted by {order_name} (ascending)." if order_name else ".")
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

    if result.analyses is not None:
        sections += analysis_sections(result)

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


def analysis_sections(result: StudyResult) -> list[Section]:
    """Sections for the study's ``analyses``: distances, Table 1, sharpness, uncertainty."""
    a = result.analyses
    assert a is not None
    study, b = result.study, result.study["basins"]
    basins, sections = result.members["basin"], []
    ood = b["ood"]
    order, order_name = _heatmap_order(result)

    if len(a.distances):
        figs: list[tuple[str, figures.Figure]] = []
        for name, m in a.matrices.items():
            if name == b["distance"]:
                continue
            figs.append(
                (
                    f"{name.replace('_', ' ')} for every pair"
                    + (f", members sorted by {order_name}." if order_name else "."),
                    figures.distance_heatmap(
                        m,
                        order_by=order,
                        label=name.replace("_", " "),
                        mask_diagonal=name == "euclidean",
                    ),
                )
            )
        if "euclidean" in a.matrices:
            figs.append(
                (
                    f"Euclidean distance vs. {b['distance'].replace('_', ' ')} per pair, within "
                    "and between basins, each with a least-squares fit (the paper's Fig. 21).",
                    figures.distance_scatter(
                        a.matrices["euclidean"],
                        a.matrices[b["distance"]],
                        basins=basins,
                        ylabel=b["distance"].replace("_", " "),
                    ),
                )
            )
        sections.append(
            Section(
                title="Alternative distances",
                text=(
                    "Each distance clustered the same way (spectral clustering of "
                    "exp(−D²/2δ²)); ARI against the basins of the study's own distance, and "
                    "each score's Pearson r with the OOD metrics (bootstrap 95% intervals). "
                    "Barrier height and AUC come from the same stored curves; AUC is in α "
                    "units; the Euclidean distance is over every floating-point state entry. "
                    "A score's sign follows which basin is the larger (c₁), so compare |r|; "
                    "ARI vs arms: agreement of each distance's basins with the training arms."
                ),
                figures=tuple(figs),
                tables=(("Distances side by side (the paper's Appendix I).", a.distances),),
                provenance=_provenance(result, b["split"]),
            )
        )

    figs = []
    if a.sharpness is not None:
        for split in ood:
            col = _ood_column(result, split)
            figs.append(
                (
                    f"ε-sharpness vs. {split} {col.rsplit('.', 1)[1]} with a least-squares fit.",
                    figures.score_scatter(
                        a.sharpness,
                        result.members[col],
                        basins=basins,
                        xlabel="ε-sharpness",
                        ylabel=f"{split} {col.rsplit('.', 1)[1]}",
                    ),
                )
            )
    metric_cols = [
        c
        for c in result.members.columns
        if "." in c and c.rsplit(".", 1)[1] in ("accuracy", "f1", "mcc")
    ]
    if len(metric_cols) >= 2 and len(result.members) >= 3:
        frame = result.members[metric_cols].astype(float)
        if a.sharpness is not None:
            frame = frame.assign(**{"ε-sharpness": a.sharpness})
        frame = frame.loc[:, frame.std() > 0]
        if frame.shape[1] >= 2:
            figs.append(
                (
                    "Pearson correlations between the members' metrics (the paper's Fig. 11).",
                    figures.correlation_matrix(frame),
                )
            )
    sharp = study.get("analyses", {}).get("sharpness")
    tables = [
        (
            "Cluster statistics (the paper's Table 1): C1 = the larger basin; gaps in C1's "
            "standard deviations (ddof = 1).",
            a.cluster_stats,
        ),
        (
            "R² of each OOD metric on basin membership, the basin score and ε-sharpness "
            "(bootstrap 95% intervals).",
            a.regressions,
        ),
        ("Pearson and Spearman correlation of each predictor with each OOD metric.", a.predictors),
    ]
    text = (
        "How far apart the basins lie on each metric, and how much of each OOD metric basin "
        "membership explains next to the baseline."
    )
    if sharp is not None:
        text += (
            f" ε-sharpness (Keskar et al.): φ = 100·(max L(x+y) − L(x))/(1 + L(x)) over the box "
            f"|yᵢ| ≤ ε(|xᵢ|+1), ε = {sharp['epsilon']:g}, by {sharp['steps']} projected ascent "
            f"steps (lr {sharp['lr']:g}, batches of {sharp['batch_size']} × {sharp['accumulate']}"
            f") on '{sharp['split']}' (at most {sharp['examples']} examples)."
        )
    sections.append(
        Section(
            title="Cluster statistics and baselines",
            text=text,
            figures=tuple(figs),
            tables=tuple((c, t) for c, t in tables if len(t)),
            provenance=_provenance(result, b["split"]),
        )
    )

    if a.uncertainty is not None:
        u = a.uncertainty
        summary = u.summary()
        d = result.distance
        width = pd.DataFrame(u.distance_hi - u.distance_lo, index=d.index, columns=d.columns)
        lo, hi = summary["ARI interval"]
        rlo, rhi = summary["score ↔ OOD r interval"]
        stats_table = pd.DataFrame(
            {
                "draws": [summary["draws"]],
                "usable": [summary["usable draws"]],
                "ARI mean": [summary["ARI vs. full sample: mean"]],
                "ARI lo": [lo],
                "ARI hi": [hi],
                "identical basins": [summary["draws with identical basins"]],
                f"r lo ({ood[0] if ood else '-'})": [rlo],
                f"r hi ({ood[0] if ood else '-'})": [rhi],
            }
        )
        tables2 = [("Bootstrap over the evaluation sample.", stats_table)]
        if a.stability is not None:
            tables2.append(
                ("Basins re-clustered on random sub-samples of the evaluation sample.", a.stability)
            )
        sections.append(
            Section(
                title="Uncertainty over the evaluation sample",
                text=(
                    f"The {result.splits[b['split']]['sample_size']} examples of "
                    f"'{b['split']}' were resampled with replacement {u.samples} times (one "
                    "draw shared by every pair and α); each draw gives a distance matrix and "
                    "basins, matched to the full sample's."
                ),
                figures=(
                    (
                        "Share of draws in which each member keeps its basin.",
                        figures.basin_keeping(
                            pd.Series(u.keep, index=list(u.members)), basins, draws=u.samples
                        ),
                    ),
                    (
                        f"Width of the 95% interval of every {b['distance'].replace('_', ' ')} "
                        "entry.",
                        figures.distance_heatmap(
                            width, order_by=order, label="interval width", mask_diagonal=True
                        ),
                    ),
                ),
                tables=tuple(tables2),
                provenance=_provenance(result, b["split"]),
            )
        )
    if a.planes:
        plane_figs = []
        for rec in a.planes:
            members = ", ".join(rec["spec"]["members"])
            plane_figs.append(
                (
                    f"Loss on '{rec.get('split_name', rec['split'])}' over the plane through "
                    f"{members} ({len(rec['loss'][0])}×{len(rec['loss'])} grid; one unit = "
                    f"‖θ₀θ₁‖ = {rec['scale']:.3g}).",
                    figures.loss_plane(rec),
                )
            )
        sections.append(
            Section(
                title="Loss planes",
                text=(
                    "The plane through three members θ₀, θ₁, θ₂: origin θ₀, x along θ₁ − θ₀, "
                    "y along the part of θ₂ − θ₀ orthogonal to it, both scaled to ‖θ₀θ₁‖ "
                    "(the paper's Fig. 2); every grid point evaluated by the engine on the "
                    "split's fixed sample. Dashed lines: the linear paths."
                ),
                figures=tuple(plane_figs),
                provenance=_provenance(
                    result, *{r.get("split_name", b["split"]) for r in a.planes}
                ),
            )
        )
    if a.trajectory is not None:
        t = a.trajectory
        moved = t[~t["final"]]
        sections.append(
            Section(
                title="Basins along training",
                text=(
                    f"{len(moved)} checkpoints, each joined by a linear path to every final "
                    f"member on '{b['split']}'; each is placed at the similarity-weighted mean "
                    "of the final members' spectral coordinates (similarity exp(−D²/2δ²) with "
                    "the final population's δ) and given the basin of the nearer centroid "
                    "(the paper's Fig. 7)."
                ),
                figures=(
                    (
                        "Members along training: checkpoints (small dots) and arrows in step "
                        "order to each final member (large dots, coloured by basin).",
                        figures.cluster_movement(t),
                    ),
                ),
                tables=(("Checkpoints and final members in the embedding.", t),),
                provenance=_provenance(result, b["split"]),
            )
        )
    return sections
