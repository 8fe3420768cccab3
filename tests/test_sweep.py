"""The sweep: endpoint counts, resume, and a store equal to an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from modeconn.config.study import load_study
from modeconn.pipeline import StudyRunner
from modeconn.store import Store


def _rows(store_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store(store_path, create=False) as store:
        paths = store.path_points().drop(columns=["created"], errors="ignore")
        members = store.member_points().drop(columns=["created"], errors="ignore")
    keys = ["hash_a", "hash_b", "split", "alpha"]
    return (
        paths.sort_values(keys).reset_index(drop=True),
        members.sort_values(["member_hash", "split"]).reset_index(drop=True),
    )


def test_n_members_cost_n_endpoint_evaluations_per_split(tiny_study: Path) -> None:
    runner = StudyRunner(load_study(tiny_study), progress=False)
    stats = runner.sweep()
    ev = runner.evaluator()
    n = len(runner.population())
    study = runner.study
    pairs = n * (n - 1) // 2
    interior = study.paths.points - 2
    for split in study.eval_splits():
        assert ev.counts[("member", split)] == n
    for split in study.paths.splits:
        assert ev.counts[("path", split)] == pairs * interior
    assert stats.member_evaluations == n * len(study.eval_splits())
    # a population that fits the cache is read from disk once per member
    assert stats.loads == n

    # a rerun finds everything done and evaluates nothing
    again = StudyRunner(load_study(tiny_study), progress=False)
    stats2 = again.sweep()
    assert stats2.member_evaluations == 0 and stats2.path_evaluations == 0
    assert sum(again.evaluator().counts.values()) == 0


def test_every_unit_has_the_full_grid_and_endpoints_match_members(tiny_study: Path) -> None:
    runner = StudyRunner(load_study(tiny_study), progress=False)
    runner.sweep()
    paths, members = _rows(runner.study.store_path())
    n = len(runner.population())
    points = runner.study.paths.points
    assert len(paths) == n * (n - 1) // 2 * len(runner.study.paths.splits) * points
    assert not paths.duplicated(["hash_a", "hash_b", "split", "alpha"]).any()
    loss = members.set_index(["member_hash", "split"])["loss"]
    ends = paths[paths["alpha"].isin([0.0, 1.0])]
    for _, row in ends.iterrows():
        h = row["hash_a"] if row["alpha"] == 1.0 else row["hash_b"]
        assert row["loss"] == loss[(h, row["split"])]


def test_result_tables_come_back_as_dataframes(tiny_study: Path) -> None:
    runner = StudyRunner(load_study(tiny_study), progress=False)
    result = runner.run()
    assert isinstance(result.members, pd.DataFrame) and len(result.members) == 4
    assert result.distance.shape == (4, 4)
    assert set(result.correlations["split"]) == {"hans_lo", "hans_sub"}
    assert result.report is not None and result.report.is_file()
    assert (result.report.parent / "figures").is_dir()


@pytest.mark.parametrize("drop", ["hans_lo"])
def test_changed_sample_never_reuses_stale_rows(tiny_study: Path, drop: str) -> None:
    import yaml

    StudyRunner(load_study(tiny_study), progress=False).sweep()
    data = yaml.safe_load(tiny_study.read_text())
    data["splits"][drop]["sample_seed"] = 5
    tiny_study.write_text(yaml.safe_dump(data))
    runner = StudyRunner(load_study(tiny_study), progress=False)
    stats = runner.sweep()
    n = len(runner.population())
    # the new sample of hans_lo is evaluated afresh; other splits are reused
    assert stats.member_evaluations == n
    assert stats.path_evaluations == n * (n - 1) // 2 * (runner.study.paths.points - 2)
