"""basins.landmarks end to end: only the landmark pairs are swept, basins still found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_vision_study import tiny_digits_study

from modeconn.cli import main
from modeconn.config.study import load_study
from modeconn.engine.planning import plan_study
from modeconn.results import analyze
from modeconn.stats.landmarks import landmark_fraction, measured_mask
from modeconn.store import Store


@pytest.fixture(scope="module")
def landmark_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("landmarks")
    data = tiny_digits_study(root / "out", members=4)  # 8 members, 28 pairs
    data["basins"]["landmarks"] = 3
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--quiet"]) == 0
    return path


def test_only_landmark_pairs_are_swept(landmark_run: Path) -> None:
    study = load_study(landmark_run)
    with Store(study.store_path(), create=False) as store:
        units = store.done_units()
        result = analyze(store, study)
    n, m = 8, 3
    want = round(landmark_fraction(n, m) * n * (n - 1) / 2)  # 3·5 + 3 = 18
    assert want == 18
    assert len(units) == want * len(study.paths.splits)
    assert result.landmarks is not None and len(result.landmarks) == m
    measured = result.measured.to_numpy()
    assert (measured.sum() - n) // 2 == want
    for mark in result.landmarks:  # every landmark row measured, finite
        assert np.all(np.isfinite(result.distance.loc[mark].to_numpy()))
    assert np.isnan(result.distance.to_numpy()).sum() == n * (n - 1) - 2 * want
    assert len(result.fit.labels) == n
    assert "landmark basins: 3 landmarks (random), 18 of 28 pairs measured" in result.summary()


def test_rerun_sweeps_nothing(landmark_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(landmark_run)]) == 0
    said = capsys.readouterr()
    assert "36 path units (0 to do), 16 member points (0 to do)" in said.out + said.err


def test_plan_shows_the_saving(landmark_run: Path) -> None:
    study = load_study(landmark_run)
    est = plan_study(study, members=100, throughput=1000.0)
    assert est.all_pairs == 4950
    assert est.pairs == 3 * 97 + 3
    text = est.summary()
    assert "3 landmarks × 97 others" in text and "saved by landmarks" in text
    assert est.to_dict()["landmarks"] == 3


def test_report_heatmap_masks_unmeasured(landmark_run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from modeconn.figures import distance_heatmap

    study = load_study(landmark_run)
    with Store(study.store_path(), create=False) as store:
        result = analyze(store, study)
    fig = distance_heatmap(result.distance)
    shown = fig.axes[0].images[0].get_array()
    assert int(np.ma.getmaskarray(shown).sum()) == int(np.isnan(result.distance.to_numpy()).sum())
    assert (study.out_path() / study.report_dir / "report.html").is_file()


def test_the_builtin_population_study_is_valid() -> None:
    from modeconn.config.study import builtin_study_path

    study = load_study(builtin_study_path("demo-population-100"))
    est = plan_study(study)
    assert est.members == 100 and est.all_pairs == 4950 and est.points == 21
    assert {a.name for a in study.train.arms} == {"clean", "cue60", "cue90"}  # type: ignore[union-attr]


@pytest.mark.slow
def test_kill_resume_with_landmarks_and_adaptive_grids(data_root: Path, tmp_path: Path) -> None:
    """The kill harness with basins.landmarks and paths.tolerance on: 3 SIGKILLs, resumed,
    each completed store equal to the uninterrupted landmark + adaptive run."""
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    from kill_harness import run_harness

    lines: list[str] = []
    result = run_harness(
        tmp_path,
        kills=3,
        backend="local",
        members=6,
        sample=48,
        data=data_root,
        say=lines.append,
        landmarks=3,
        tolerance=0.01,
    )
    report = "\n".join(lines)
    assert "reference: 24 units" in report, report  # (3·3 + 3 of 15 pairs) × 2 splits
    assert result.survived == result.kills and result.rounds_equal == result.rounds >= 1, report
    assert result.ok, report


def test_plan_says_adaptive_counts_are_upper_bounds(landmark_run: Path) -> None:
    data = yaml.safe_load(landmark_run.read_text())
    data["paths"]["tolerance"] = 0.01
    other = landmark_run.parent / "adaptive-plan.yaml"
    other.write_text(yaml.safe_dump(data))
    est = plan_study(load_study(other), members=10)
    assert est.tolerance == 0.01
    assert "upper bounds" in est.summary()


def test_kmeanspp_landmarks_are_drawn_from_measured_paths(tmp_path: Path) -> None:
    """landmark_choice: kmeans++ sweeps landmark by landmark; only landmark pairs are
    measured, the analysis redraws the same landmarks from the store, a rerun does nothing."""
    from modeconn.pipeline import StudyRunner

    data = tiny_digits_study(tmp_path / "out", members=4)
    data["paths"]["splits"] = ["clean"]
    data["basins"].update({"landmarks": 3, "landmark_choice": "kmeans++"})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--quiet"]) == 0
    study = load_study(path)
    with Store(study.store_path(), create=False) as store:
        units = store.done_units()
        result = analyze(store, study)
        full = result.distance
    assert len(units) == 18  # 3·5 + 3 pairs of 28
    assert result.landmarks is not None and len(result.landmarks) == 3
    measured = {(u.member_a, u.member_b) for u in units} | {(u.member_b, u.member_a) for u in units}
    for a in full.index:
        for b in full.columns:
            if a != b:
                touches = a in result.landmarks or b in result.landmarks
                assert ((a, b) in measured) == touches
    assert StudyRunner(study, progress=False).sweep().path_evaluations == 0


@pytest.mark.slow
def test_replay_equals_real_landmark_runs(tmp_path: Path) -> None:
    """benchmarks/landmarks_replay.py masks an all-pairs matrix to the landmark pairs; on
    the same members that is the landmark run itself: the same landmarks, the same measured
    gaps, the same basins, for every landmark choice and completion."""
    import sys

    from conftest import REPO

    from modeconn.stats.landmarks import replay_landmarks

    sys.path.insert(0, str(REPO / "benchmarks"))
    from landmarks_replay import read_reference, replay_rows

    def run(name: str, basins: dict[str, object]) -> Path:
        data = tiny_digits_study(tmp_path / name, members=4)  # 8 members, 28 pairs
        data["train"]["out_dir"] = str(tmp_path / "members")  # trained once, shared
        data["paths"]["splits"] = ["clean"]
        data["basins"].update(basins)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        assert main(["run", str(path), "--quiet"]) == 0
        return path

    ref = read_reference(load_study(run("all", {})).store_path())
    d, ids, opts = ref["distance"], ref["ids"], ref["options"]
    for choice, completion in [
        ("random", "nystrom"),
        ("kmeans++", "triangle"),
        ("farthest", "nystrom"),
    ]:
        study = load_study(
            run(
                f"{choice}-{completion}",
                {
                    "landmarks": 3,
                    "landmark_choice": choice,
                    "landmark_completion": completion,
                    "landmark_seed": 1,
                },
            )
        )
        with Store(study.store_path(), create=False) as store:
            real = analyze(store, study)
        marks, fit = replay_landmarks(
            d, 3, choice=choice, landmark_seed=1, completion=completion, **opts
        )
        assert marks is not None and real.landmarks is not None
        assert tuple(ids[i] for i in marks) == tuple(sorted(real.landmarks)), choice
        seen = real.distance.loc[ids, ids].to_numpy()  # NaN where not measured
        np.testing.assert_array_equal(np.isnan(seen), ~measured_mask(8, marks))
        np.testing.assert_allclose(seen[~np.isnan(seen)], d[~np.isnan(seen)], rtol=0, atol=1e-12)
        order = [list(real.members.index).index(m) for m in ids]
        np.testing.assert_array_equal(fit.labels, np.asarray(real.fit.labels)[order])
    table = replay_rows(ref, None, ms=[3, 7], seeds=2)  # m = 7 = N − 1: every pair
    assert len(table) == 3 * 2 * 2
    assert (table[table["m"] == 7]["ari_mean"] == 1.0).all()
    assert table[table["m"] == 3]["share"].iloc[0] == pytest.approx(18 / 28)


def test_replay_budget_counts_pairs_as_the_planner_does() -> None:
    """landmarks_replay's largest m within a budget: the planner's pair count for that m
    is within it, for m + 1 it is not (N = 100, 25 %: m = 13, 1,209 of 4,950 pairs)."""
    import dataclasses
    import sys

    from conftest import REPO

    from modeconn.config.study import builtin_study_path

    sys.path.insert(0, str(REPO / "benchmarks"))
    from landmarks_replay import largest_m

    est = plan_study(load_study(builtin_study_path("demo-population-100")))
    m = largest_m(100, 0.25)
    assert m == 13
    assert dataclasses.replace(est, landmarks=m).pairs == 1209 <= 0.25 * est.all_pairs
    assert dataclasses.replace(est, landmarks=m + 1).pairs > 0.25 * est.all_pairs
