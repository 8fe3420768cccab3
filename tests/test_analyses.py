"""The analyses beyond the basins, end to end on a tiny study, checked against scipy/numpy."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_study_dict
from safetensors.numpy import load_file
from scipy import stats

from modeconn.config.study import load_study
from modeconn.measures.barriers import barrier_height
from modeconn.pipeline import StudyRunner
from modeconn.results import StudyResult, curves
from modeconn.store import Store

ANALYSES: dict[str, Any] = {
    "distances": ["convexity_gap", "barrier_height", "auc", "auc_distance", "euclidean"],
    "sharpness": {"split": "mnli", "steps": 3, "examples": 16, "batch_size": 8, "accumulate": 1},
    "uncertainty": {"samples": 8, "sizes": [12], "repeats": 3},
    "trajectory": {"stages": True},
    "planes": [{"members": ["aug-00", "seed-00", "seed-01"], "split": "mnli", "resolution": 3}],
}


@pytest.fixture(scope="module")
def ran(tiny_model_dir: Path, data_root: Path, tmp_path_factory) -> tuple[Path, StudyResult]:
    folder = tmp_path_factory.mktemp("analyses")
    study = tiny_study_dict(tiny_model_dir, data_root, folder / "out")
    study["analyses"] = ANALYSES
    study["train"]["checkpoints"] = [0.5]
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    result = StudyRunner(load_study(path), progress=False).run()
    return path, result


def _members(result: StudyResult, study: Path) -> dict[str, dict[str, np.ndarray]]:
    folder = load_study(study).members_dir()
    return {m: load_file(str(folder / f"{m}.safetensors")) for m in result.members.index}


def test_euclidean_distances_match_numpy(ran) -> None:
    path, result = ran
    assert result.analyses is not None
    weights = _members(result, path)
    m = result.analyses.matrices["euclidean"]
    for a, b in itertools.combinations(result.members.index, 2):
        # float entries of the state dict (position_ids etc. are integers and left out)
        keys = [k for k, v in weights[a].items() if v.dtype.kind == "f"]
        want = np.sqrt(
            sum(((weights[a][k].astype(np.float64) - weights[b][k]) ** 2).sum() for k in keys)
        )
        assert m.loc[a, b] == pytest.approx(want, rel=1e-6)
        assert m.loc[b, a] == m.loc[a, b]


def test_alternative_distances_table_and_barrier_matrix(ran) -> None:
    path, result = ran
    a = result.analyses
    assert a is not None
    assert a.distances["distance"].tolist() == [
        "convexity_gap", "barrier_height", "auc", "auc_distance", "euclidean"
    ]  # fmt: skip
    with Store(load_study(path).store_path()) as store:
        found = curves(store, "mnli")
    bh = a.matrices["barrier_height"]
    for (x, y), g in found.items():
        if "@" in x:
            continue  # a checkpoint's path (the trajectory), not a member pair
        loss = g["loss"].to_numpy()
        # Entezari: max(0, max_i [L_i − chord_i]), chord from L(α=0) to L(α=1)
        chord = loss[0] + (loss[-1] - loss[0]) * g["alpha"].to_numpy()
        assert bh.loc[x, y] == pytest.approx(max(0.0, float(np.max(loss - chord))), abs=1e-12)
        assert bh.loc[x, y] == pytest.approx(barrier_height(loss))
    # the paper's AUC: trapezoid over (L − min L) with step ‖θA − θB‖/(n − 1), by hand
    ad, eu = a.matrices["auc_distance"], a.matrices["euclidean"]
    assert "parameter distance" in a.distances.set_index("distance").loc["auc_distance", "form"]
    for (x, y), g in found.items():
        if "@" in x:
            continue
        lifted = g["loss"].to_numpy() - g["loss"].min()
        step = eu.loc[x, y] / (len(lifted) - 1)
        by_hand = sum(step * (lifted[i] + lifted[i + 1]) / 2 for i in range(len(lifted) - 1))
        assert ad.loc[x, y] == pytest.approx(by_hand, rel=1e-9)
    # the study's own distance agrees with its own basins perfectly
    row = a.distances.set_index("distance").loc["convexity_gap"]
    assert row["ARI vs convexity_gap"] == pytest.approx(1.0)


def test_table_one_and_regressions_match_numpy_and_scipy(ran) -> None:
    _, result = ran
    a = result.analyses
    assert a is not None
    labels = result.members["basin"].to_numpy()
    t = a.cluster_stats.set_index("metric")
    for col in ["mnli.accuracy", "hans_lo.accuracy", "hans_sub.accuracy", "ε-sharpness"]:
        f = (
            a.sharpness.loc[result.members.index].to_numpy()
            if col == "ε-sharpness"
            else result.members[col].to_numpy(float)
        )
        c1, c2 = f[labels == 0], f[labels == 1]
        assert t.loc[col, "mu_c1"] == pytest.approx(c1.mean())
        assert t.loc[col, "mu_c2"] == pytest.approx(c2.mean())
        if c1.size > 1 and c1.std(ddof=1) > 0:
            sd = c1.std(ddof=1)
            assert t.loc[col, "mean_gap"] == pytest.approx((c1.mean() - c2.mean()) / sd)
            assert t.loc[col, "max_gap"] == pytest.approx((c1.mean() - c2.max()) / sd)
    regs = a.regressions
    for _, r in regs.iterrows():
        y = result.members[r["outcome"]].to_numpy(float)
        if r["predictor"] == "basin membership":
            x = (labels == 0).astype(float)
        elif r["predictor"] == "basin score":
            x = result.members["score"].to_numpy(float)
        else:
            x = a.sharpness.loc[result.members.index].to_numpy()
        assert r["r_squared"] == pytest.approx(stats.linregress(x, y).rvalue ** 2, abs=1e-9)
    for _, r in a.predictors.iterrows():
        y = result.members[f"{r['split']}.{r['metric']}"].to_numpy(float)
        x = (
            result.members["score"].to_numpy(float)
            if r["predictor"] == "basin score"
            else a.sharpness.loc[result.members.index].to_numpy()
        )
        assert r["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)
        assert r["pearson_lo"] <= r["pearson_r"] + 1e-9 or np.isnan(r["pearson_lo"])


def test_sharpness_records_follow_the_formula(ran) -> None:
    path, result = ran
    with Store(load_study(path).store_path()) as store:
        records = store.values("sharpness")
    assert len(records) == len(result.members)
    for rec in records.values():
        # φ = 100 · (max L − L) / (1 + L)
        want = 100.0 * (rec["max_loss"] - rec["loss"]) / (1.0 + rec["loss"])
        assert rec["value"] == pytest.approx(want)
        assert rec["steps"] == 3


def test_uncertainty_tables(ran) -> None:
    _, result = ran
    a = result.analyses
    assert a is not None and a.uncertainty is not None and a.stability is not None
    u = a.uncertainty
    d = result.distance.to_numpy()
    assert u.distance_lo.shape == d.shape
    assert np.all(u.distance_lo <= u.distance_hi + 1e-12)
    assert np.all((u.keep >= 0) & (u.keep <= 1))
    assert a.stability["size"].tolist() == [12]
    assert "bootstrap over the sample" in result.summary()


def test_rerun_measures_nothing_again(ran) -> None:
    path, _ = ran
    with Store(load_study(path).store_path()) as store:
        before = store.values("sharpness"), store.values("euclidean")
    said: list[str] = []
    runner = StudyRunner(load_study(path), progress=False, say=said.append)
    runner.measure()
    assert not any("sharpness" in s or "euclidean" in s for s in said)
    with Store(load_study(path).store_path()) as store:
        assert (store.values("sharpness"), store.values("euclidean")) == before


def test_trajectory_places_every_checkpoint(ran) -> None:
    path, result = ran
    a = result.analyses
    assert a is not None and a.trajectory is not None
    t = a.trajectory
    ckpts = t[~t["final"]]
    assert len(ckpts) == len(result.members)  # one checkpoint (at half the steps) each
    assert set(ckpts["member"]) == set(result.members.index)
    assert ckpts["step"].nunique() == 1
    # every checkpoint was joined to every final member, through the sweep
    with Store(load_study(path).store_path()) as store:
        found = curves(store, "mnli")
    for ck in ckpts["id"]:
        for m in result.members.index:
            assert (ck, m) in found
    # the final members sit at their own embedding coordinates
    finals = t[t["final"]].set_index("member").loc[result.members.index]
    np.testing.assert_allclose(finals["x"], result.fit.embedding[:, 0])
    # placement: a similarity-weighted mean of the final coordinates, so inside their hull
    assert ckpts["x"].between(finals["x"].min() - 1e-9, finals["x"].max() + 1e-9).all()


def test_loss_plane_passes_through_its_members(ran) -> None:
    _, result = ran
    a = result.analyses
    assert a is not None and len(a.planes) == 1
    rec = a.planes[0]
    assert rec["spec"]["members"] == ["aug-00", "seed-00", "seed-01"]
    loss = np.asarray(rec["loss"])
    assert loss.shape == (3, 3) and np.isfinite(loss).all()
    # θ1 − θ0 is one unit: the scale is the members' Euclidean distance
    assert rec["scale"] == pytest.approx(a.matrices["euclidean"].loc["aug-00", "seed-00"], rel=1e-5)


def test_report_shows_every_analysis(ran) -> None:
    _, result = ran
    assert result.report is not None
    html = result.report.read_text(encoding="utf-8")
    for title in (
        "Alternative distances",
        "Cluster statistics and baselines",
        "Uncertainty over the evaluation sample",
        "Fig. 21",
        "Table 1",
        "Fig. 1(a)",
        "Fig. 1(b)",
        "ε-sharpness vs. hans_lo",
        "Basins along training",
        "Loss planes",
    ):
        assert title in html, title
    assert "http://" not in html.replace("http://www.w3.org", "")  # opens with no network


def test_summary_and_report_show_the_ties_and_the_clustering(ran) -> None:
    _, result = ran
    ties = result.fit.ties
    assert f"ties in the basin score: {ties}" in result.summary()
    assert f"clustering seed {result.fit.seed}, mean centroids" in result.summary()
    assert result.report is not None
    html = result.report.read_text(encoding="utf-8")
    assert "ties in the basin score" in html and f"{ties} members tie on their score" in html


def test_trajectory_stages_cluster_each_stage_alone(ran) -> None:
    """The paper's Fig. 7: one stage's checkpoints clustered among themselves."""
    from modeconn.measures.barriers import convexity_gap
    from modeconn.stats.basins import find_basins

    path, result = ran
    a = result.analyses
    assert a is not None and a.stages is not None
    st = a.stages
    ckpts = st[~st["final"]]
    assert set(ckpts["stage"]) == {0} and len(ckpts) == len(result.members)
    assert (st[st["final"]]["stage"] == 1).all()
    ids = list(ckpts["id"])
    with Store(load_study(path).store_path()) as store:
        found = curves(store, "mnli")
    d = np.zeros((len(ids), len(ids)))
    for i, x in enumerate(ids):
        for j in range(i + 1, len(ids)):
            g = found[(x, ids[j])]  # every pair of the stage was swept
            d[i, j] = d[j, i] = convexity_gap(g["loss"].to_numpy(), g["alpha"].to_numpy())
    fit = find_basins(d, **result.study.basins.fit_options())
    np.testing.assert_allclose(ckpts["score"].to_numpy(float), fit.scores, atol=1e-12)
    # each checkpoint's OOD accuracy at its stage was evaluated
    assert ckpts["hans_lo.accuracy"].between(0, 1).all()
    assert "basins at each training stage (sizes)" in result.summary()
    html = result.report.read_text(encoding="utf-8") if result.report else ""
    assert "Basins along training, stage by stage" in html
