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


def test_a_non_finite_loss_names_the_member_and_split_and_writes_nothing(
    tiny_study: Path,
) -> None:
    import torch

    from modeconn.engine.sweep import run_sweep
    from modeconn.errors import PopulationError

    runner = StudyRunner(load_study(tiny_study), progress=False)
    pop, ev = runner.population(), runner.evaluator()
    bad = sorted(m.id for m in pop)[1]

    def load(mid: str) -> list[torch.Tensor]:
        state = dict(pop.load(mid))
        if mid == bad:  # finite but huge: a neutral example's loss 3e38 − (−3e38) overflows
            state["classifier.weight"] = torch.zeros_like(state["classifier.weight"])
            state["classifier.bias"] = torch.tensor([3e38, -3e38, 0.0])
        return ev.as_point(state, name=mid)

    with runner.open_store() as store:
        plan = runner.plan(store)
        with pytest.raises(PopulationError) as err:
            run_sweep(plan, ev, load, runner.splits(), store, progress=False)
        message = str(err.value)
        assert f"member '{bad}'" in message and "split 'mnli'" in message
        assert "non-finite loss" in message and "\n" not in message
        hashes = {m.id: m.hash for m in plan.members}
        assert bad not in set(store.member_points()["member_id"])
        done = store.done_units()
        assert not any(hashes[bad] in (u.hash_a, u.hash_b) for u in done)


def test_a_non_finite_path_point_names_the_pair_split_and_alpha(tiny_study: Path) -> None:
    from modeconn.engine.evaluate import EvalResult
    from modeconn.engine.sweep import check_finite
    from modeconn.errors import PopulationError

    split = StudyRunner(load_study(tiny_study), progress=False).splits()["hans_lo"]
    check_finite(EvalResult("hans_lo", 0.7, {}, 3), "path a–b", split, 0.5)  # finite: fine
    pattern = r"path a–b .*\(inf\) on split 'hans_lo' at α = 0\.25"
    with pytest.raises(PopulationError, match=pattern):
        check_finite(EvalResult("hans_lo", float("inf"), {}, 3), "path a–b", split, 0.25)
