"""The study's analyses beyond the basins, read from the store (Juneja et al. 2023).

* **Alternative distances** (their Appendix I): barrier height, AUC and Euclidean
  distance beside the convexity gap, each clustered the same way, in one table with the
  basins' agreement with the study's own distance and each score's correlation with the
  OOD metrics; and the Euclidean-vs-CG pairs split into within- and between-basin pairs
  with a fit each (their Fig. 21).
* **Cluster statistics** (their Table 1) and the regression of every OOD metric on basin
  membership, on the basin score and on ε-sharpness (R² with bootstrap intervals).
* **ε-sharpness** (Keskar et al. 2017; their Appendix F.4) as a baseline predictor: its
  correlation with each OOD metric beside the basin score's.
* **Uncertainty over the evaluation sample** (:mod:`modeconn.stats.uncertainty`).

Like :mod:`modeconn.results`, everything here reads the store only: values that need the
weights (Euclidean distances, sharpness, loss planes) are computed by the pipeline and
kept in the store's ``analysis_values`` under the keys :func:`value_key` builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from modeconn.errors import DataError, ModeconnError
from modeconn.measures.barriers import curve_distance
from modeconn.results import StudyResult, curves, distance_matrix, metric_column
from modeconn.stats.basins import (
    BasinFit,
    basin_recovery,
    cluster_statistics,
    correlate,
    find_basins,
    median_delta,
    membership_regression,
    r_squared,
)
from modeconn.stats.uncertainty import SampleUncertainty, sample_uncertainty, size_stability
from modeconn.store import Store


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of an analysis's settings, part of its records' keys.

    >>> settings_fingerprint({"epsilon": 1e-5}) == settings_fingerprint({"epsilon": 1e-5})
    True
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def value_key(*parts: str) -> str:
    """The key of one analysis record: its parts joined by ``|``."""
    return "|".join(parts)


def euclidean_key(hash_a: str, hash_b: str) -> str:
    return value_key(*sorted((hash_a, hash_b)))


def sharpness_settings(study: dict[str, Any]) -> dict[str, Any] | None:
    """The study's sharpness settings without the split (the split is keyed apart)."""
    s = (study.get("analyses") or {}).get("sharpness")
    return None if s is None else {k: v for k, v in s.items() if k != "split"}


def sharpness_key(member_hash: str, split_key: str, settings: dict[str, Any]) -> str:
    from modeconn.measures.sharpness import SharpnessConfig

    return value_key(member_hash, split_key, SharpnessConfig.from_dict(settings).fingerprint())


def plane_key(hashes: list[str], split_key: str, settings: dict[str, Any]) -> str:
    """Keyed by weights and data, like every record: member ids and split names left out."""
    grid = {k: v for k, v in settings.items() if k not in ("members", "split")}
    return value_key(*hashes, split_key, settings_fingerprint(grid))


def plane_records(store: Store, result: StudyResult) -> list[dict[str, Any]]:
    """The loss planes the study asks for, in its order (those computed so far)."""
    hashes = result.members["hash"].to_dict()
    out = []
    for section in (result.study.get("analyses") or {}).get("planes") or []:
        if not all(m in hashes for m in section["members"]):
            continue
        key = plane_key(
            [hashes[m] for m in section["members"]],
            result.splits[section["split"]]["key"],
            section,
        )
        rec = store.get_value("plane", key)
        if rec is not None:
            out.append(rec)
    return out


@dataclass(frozen=True)
class Analyses:
    """Tables (and matrices) of the analyses a study asked for; empty where not asked."""

    distances: pd.DataFrame  # one row per distance: range, basins, ARI, r per OOD split
    matrices: dict[str, pd.DataFrame]  # distance name → N×N matrix
    fits: dict[str, BasinFit]  # distance name → basins found with it
    cluster_stats: pd.DataFrame  # Table 1: one row per metric
    regressions: pd.DataFrame  # R² of each OOD metric on each predictor
    predictors: pd.DataFrame  # correlation of each predictor with each OOD metric
    sharpness: pd.Series | None  # per member id
    uncertainty: SampleUncertainty | None
    stability: pd.DataFrame | None
    planes: list[dict[str, Any]] = field(default_factory=list)  # PlaneResult.to_dict()s
    trajectory: pd.DataFrame | None = None  # checkpoints placed in the final embedding
    notes: tuple[str, ...] = ()

    def summary_lines(self) -> list[str]:
        """What a terminal user reads after a run."""
        lines = []
        for _, r in self.predictors.iterrows():
            if r["predictor"] == "basin score":
                continue  # the study summary prints it already
            lines.append(
                f"{r['predictor']} ↔ {r['split']} {r['metric']}: Pearson r = {r['pearson_r']:+.3f} "
                f"[{r['pearson_lo']:+.3f}, {r['pearson_hi']:+.3f}]"
            )
        for _, r in self.distances.iterrows():
            rs = [c for c in self.distances.columns if c.startswith("r (")]
            first = f", r {rs[0][2:]} = {r[rs[0]]:+.3f}" if rs and pd.notna(r[rs[0]]) else ""
            lines.append(f"distance {r['distance']}: basins {r['basins']}{first}")
        if self.uncertainty is not None:
            u = self.uncertainty.summary()
            lo, hi = u["ARI interval"]
            lines.append(
                f"bootstrap over the sample ({u['usable draws']} draws): ARI vs. full sample "
                f"{u['ARI vs. full sample: mean']:.2f} [{lo:.2f}, {hi:.2f}], least-kept member "
                f"{u['least-kept member']:.2f}"
            )
        if self.stability is not None:
            for _, r in self.stability.iterrows():
                lines.append(
                    f"sub-samples of {int(r['size'])}: ARI vs. full sample {r['ari_mean']:.2f}, "
                    f"identical basins in {r['identical']:.0%}"
                )
        return lines


def _ood_columns(result: StudyResult) -> dict[str, str]:
    b = result.study["basins"]
    return {
        s: metric_column(result.members, s, b.get("metric") or result.splits[s]["metric"])
        for s in b["ood"]
    }


def euclidean_matrix(store: Store, result: StudyResult) -> pd.DataFrame:
    """Pairwise ‖θA − θB‖ from the store's records (written by the pipeline)."""
    ids = list(result.members.index)
    hashes = result.members["hash"].to_dict()
    found = store.values("euclidean")
    d = np.zeros((len(ids), len(ids)))
    for i, a in enumerate(ids):
        for j in range(i + 1, len(ids)):
            rec = found.get(euclidean_key(hashes[a], hashes[ids[j]]))
            if rec is None:
                raise DataError(
                    f"no Euclidean distance {a}–{ids[j]} in {store.path}: run the study with "
                    "`analyses.distances` listing euclidean (`modeconn run` computes it)"
                )
            d[i, j] = d[j, i] = float(rec["distance"])
    return pd.DataFrame(d, index=ids, columns=ids)


def _matrix(store: Store, result: StudyResult, name: str) -> pd.DataFrame:
    if name == "euclidean":
        return euclidean_matrix(store, result)
    split = result.study["basins"]["split"]
    if name == result.study["basins"]["distance"]:
        return result.distance
    return distance_matrix(store, split=split, metric=name)


def _fit(d: np.ndarray, basins: dict[str, Any]) -> BasinFit:
    delta = median_delta(d) if basins["delta"] == "median" else float(basins["delta"])
    return find_basins(d, n_basins=basins["n_basins"], delta=delta, seed=basins["seed"])


def compare_distances(
    store: Store, result: StudyResult, names: list[str], splits: list[str] | None = None
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, BasinFit]]:
    """Cluster with each distance; one row per distance (their Appendix I).

    ``splits`` adds the study's own distance on other path splits (e.g. the validation
    loss beside a training-loss study, their Appendix G), named ``"<distance> on <split>"``.
    """
    b = result.study["basins"]
    ood = _ood_columns(result)
    rows, matrices, fits = [], {}, {}
    extra = [f"{b['distance']} on {s}" for s in splits or [] if s != b["split"]]
    for name in dict.fromkeys([b["distance"], *names, *extra]):
        if " on " in name:
            metric, split = name.split(" on ", 1)
            m = distance_matrix(store, split=split, metric=metric)
        else:
            m = _matrix(store, result, name)
        d = m.to_numpy()
        off = d[~np.eye(len(d), dtype=bool)]
        row: dict[str, Any] = {"distance": name, "min": off.min(), "max": off.max()}
        try:
            fit = result.fit if name == b["distance"] else _fit(d, b)
        except ModeconnError as e:
            row["basins"] = f"none ({e})"
            rows.append(row)
            matrices[name] = m
            continue
        matrices[name], fits[name] = m, fit
        row["basins"] = ", ".join(map(str, fit.sizes))
        row[f"ARI vs {b['distance']}"] = basin_recovery(fit.labels, result.fit.labels)
        arms = result.members["arm"]
        if arms.notna().all() and arms.nunique() > 1:
            row["ARI vs arms"] = basin_recovery(fit.labels, arms.astype(str).to_numpy())
        for split, col in ood.items():
            c = correlate(
                fit.scores,
                result.members[col].to_numpy(float),
                n_boot=b["bootstrap"],
                seed=b["seed"],
            )
            row[f"r ({split})"] = c.pearson_r
            row[f"r lo ({split})"], row[f"r hi ({split})"] = c.pearson_ci
        rows.append(row)
    return pd.DataFrame(rows), matrices, fits


def sharpness_series(store: Store, result: StudyResult) -> pd.Series | None:
    """ε-sharpness per member, or None if the study did not ask for it."""
    settings = sharpness_settings(result.study)
    if settings is None:
        return None
    split = result.study["analyses"]["sharpness"]["split"]
    key = result.splits[split]["key"]
    found = store.values("sharpness")
    values = {}
    for mid, h in result.members["hash"].items():
        rec = found.get(sharpness_key(h, key, settings))
        if rec is None:
            raise DataError(
                f"no ε-sharpness of member {mid} in {store.path} for these settings: rerun "
                "`modeconn run` (it computes what is missing)"
            )
        values[mid] = float(rec["value"])
    return pd.Series(values, name="sharpness")


def table_one(result: StudyResult, sharpness: pd.Series | None) -> pd.DataFrame:
    """Their Table 1 over the ID metric and every OOD metric (C1 = the larger basin)."""
    b = result.study["basins"]
    id_col = metric_column(
        result.members, b["split"], b.get("metric") or result.splits[b["split"]]["metric"]
    )
    cols = [id_col, *_ood_columns(result).values()]
    values = {c: result.members[c].to_numpy(float) for c in dict.fromkeys(cols)}
    if sharpness is not None:
        values["ε-sharpness"] = sharpness.loc[result.members.index].to_numpy(float)
    return cluster_statistics(result.fit.labels, values).reset_index()


def predictor_tables(
    result: StudyResult, sharpness: pd.Series | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per OOD metric: R² on membership / score / sharpness, and Pearson r of each."""
    b = result.study["basins"]
    labels = result.fit.labels
    preds: dict[str, np.ndarray] = {"basin score": result.members["score"].to_numpy(float)}
    if sharpness is not None:
        preds["ε-sharpness"] = sharpness.loc[result.members.index].to_numpy(float)
    regs, cors = [], []
    for split, col in _ood_columns(result).items():
        y = result.members[col].to_numpy(float)
        fits = []
        with contextlib.suppress(ModeconnError):
            fits.append(membership_regression(y, labels, n_boot=b["bootstrap"], seed=b["seed"]))
        for name, x in preds.items():
            try:
                fits.append(r_squared(x, y, predictor=name, n_boot=b["bootstrap"], seed=b["seed"]))
                c = correlate(x, y, n_boot=b["bootstrap"], seed=b["seed"])
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
                    else (f.predictor),
                    "r_squared": f.r_squared,
                    "r2_lo": f.r_squared_ci[0],
                    "r2_hi": f.r_squared_ci[1],
                    "slope": f.slope,
                    "p_value": f.p_value,
                }
            )
    return pd.DataFrame(regs), pd.DataFrame(cors)


def example_losses(store: Store, result: StudyResult, split: str) -> tuple[np.ndarray, list]:
    """(P, A, n) per-example losses of every pair on `split`, and the pairs (i, j)."""
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
            blocks.append(np.stack(arrays))  # (A, n)
    return np.stack(blocks).astype(np.float64), pairs


def place_in_embedding(
    distances: np.ndarray, fit: BasinFit
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put new models into a population's spectral embedding from their distances to it.

    ``distances`` is (M, N): each new model's distance to each of the N members. A new
    model lands at the similarity-weighted mean of the members' embedding coordinates,
    with the population's own similarity exp(−D²/(2δ²)) (an out-of-sample extension in
    the spirit of Nyström's; a model at distance 0 from one member and far from the
    others lands on that member). Returns (M, k) coordinates, (M,) scores
    ‖w − c₀‖ − ‖w − c₁‖ and (M,) nearest-centroid basins.

    >>> fit = find_basins(np.array([[0, .1, 3, 3], [.1, 0, 3, 3], [3, 3, 0, .1],
    ...                             [3, 3, .1, 0.]]), n_basins=2, delta=1.0)
    >>> _, scores, basins = place_in_embedding(np.array([[0.0, 0.1, 3, 3]]), fit)
    >>> basins.tolist(), bool(scores[0] < 0)
    ([0], True)
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != fit.embedding.shape[0]:
        raise DataError(
            f"distances must be (models, {fit.embedding.shape[0]} members); got {d.shape}"
        )
    logw = -(d**2) / (2.0 * fit.delta**2)  # (M, N) log-similarities
    w = np.exp(logw - logw.max(axis=1, keepdims=True))  # stable: the nearest member weighs 1
    w /= w.sum(axis=1, keepdims=True)
    coords = w @ fit.embedding  # (M, k)
    to_c = np.linalg.norm(coords[:, None, :] - fit.centroids[None, :, :], axis=2)  # (M, k)
    return coords, to_c[:, 0] - to_c[:, 1], to_c.argmin(axis=1)


def trajectory_table(store: Store, result: StudyResult) -> pd.DataFrame | None:
    """Every checkpoint (and final member) with its step, embedding coordinates and basin."""
    raw = store.get_meta("checkpoints")
    if raw is None:
        return None
    ckpts = json.loads(raw)
    b = result.study["basins"]
    found = curves(store, b["split"])
    ids = list(result.members.index)
    d = np.zeros((len(ckpts), len(ids)))
    for c, ck in enumerate(ckpts):
        for f, m in enumerate(ids):
            g = found.get((ck["id"], m))
            if g is None:
                raise DataError(
                    f"no path {ck['id']}–{m} on '{b['split']}' in {store.path}; rerun "
                    "`modeconn run` (the trajectory resumes)"
                )
            d[c, f] = curve_distance(g["loss"].to_numpy(), g["alpha"].to_numpy(), b["distance"])
    coords, scores, basins = place_in_embedding(d, result.fit)
    rows = [
        {
            "id": ck["id"],
            "member": ck["of"],
            "step": ck["step"],
            "final": False,
            "x": coords[c, 0],
            "y": coords[c, 1] if coords.shape[1] > 1 else 0.0,
            "score": scores[c],
            "basin": int(basins[c]),
            "distance_to_final": d[c, ids.index(ck["of"])] if ck["of"] in ids else np.nan,
        }
        for c, ck in enumerate(ckpts)
    ]
    emb = result.fit.embedding
    for i, m in enumerate(ids):
        rows.append(
            {
                "id": m,
                "member": m,
                "step": result.members["step"].iloc[i] if "step" in result.members else None,
                "final": True,
                "x": emb[i, 0],
                "y": emb[i, 1] if emb.shape[1] > 1 else 0.0,
                "score": result.fit.scores[i],
                "basin": int(result.fit.labels[i]),
                "distance_to_final": 0.0,
            }
        )
    return pd.DataFrame(rows).sort_values(["member", "final", "step"]).reset_index(drop=True)


def run_analyses(store: Store, result: StudyResult) -> Analyses:
    """Every analysis the study's ``analyses`` section (and Table 1, always) asks for."""
    study = result.study
    asked = study.get("analyses") or {}
    b = study["basins"]
    notes: list[str] = []
    names = list(asked.get("distances") or [])
    other_splits = list(asked.get("distance_splits") or [])
    if names or other_splits:
        distances, matrices, fits = compare_distances(store, result, names, other_splits)
    else:
        distances, matrices, fits = pd.DataFrame(), {}, {}
    sharp = sharpness_series(store, result)
    stats = (
        table_one(result, sharp)
        if result.fit.n_basins >= 2 and min(result.fit.sizes[:2]) >= 1
        else pd.DataFrame()
    )
    regressions, predictors = predictor_tables(result, sharp)
    uncertainty = stability = None
    u = asked.get("uncertainty")
    if u is not None:
        ex, pairs = example_losses(store, result, b["split"])
        ood = _ood_columns(result)
        first = next(iter(ood.values()), None)
        uncertainty = sample_uncertainty(
            ex,
            pairs,
            list(result.members.index),
            result.fit.labels,
            alphas=result.grid["alphas"],
            metric=b["distance"],
            n_basins=result.fit.n_basins,
            delta=b["delta"],
            ood=None if first is None else result.members[first].to_numpy(float),
            samples=u["samples"],
            seed=u["seed"],
            cluster_seed=b["seed"],
        )
        sizes = [s for s in u.get("sizes") or [] if s < ex.shape[2]]
        if len(sizes) < len(u.get("sizes") or []):
            notes.append(
                f"sub-sample sizes ≥ the stored sample ({ex.shape[2]}) were skipped; raise "
                f"the sample size of '{b['split']}' to study them"
            )
        if sizes:
            stability = size_stability(
                ex,
                pairs,
                len(result.members),
                result.fit.labels,
                sizes=sizes,
                alphas=result.grid["alphas"],
                metric=b["distance"],
                n_basins=result.fit.n_basins,
                delta=b["delta"],
                repeats=u["repeats"],
                seed=u["seed"],
                cluster_seed=b["seed"],
            )
    planes = plane_records(store, result)
    return Analyses(
        distances=distances,
        matrices=matrices,
        fits=fits,
        cluster_stats=stats,
        regressions=regressions,
        predictors=predictors,
        sharpness=sharp,
        uncertainty=uncertainty,
        stability=stability,
        planes=planes,
        trajectory=trajectory_table(store, result) if asked.get("trajectory") else None,
        notes=tuple(notes),
    )
