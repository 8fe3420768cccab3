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
from modeconn.stats.landmarks import landmark_fraction
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
    assert "landmark basins: 3 landmarks, 18 of 28 pairs measured" in result.summary()


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
