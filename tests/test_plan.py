"""`modeconn plan`: the counts of a sweep, checked against hand-computed numbers."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO, tiny_study_dict

import modeconn.engine.planning
from modeconn.cli import main
from modeconn.config.study import load_study
from modeconn.engine.planning import SweepEstimate, plan_study
from modeconn.engine.sweep import MemberRef, plan_sweep
from modeconn.errors import ConfigError
from modeconn.store import Store

PAPER = REPO / "examples" / "paper-mnli-100.yaml"


def paper(**kw: object) -> SweepEstimate:
    values: dict = dict(
        members=100,
        points=11,
        path_splits=("mnli", "hans_lo"),
        eval_splits=("mnli", "hans_lo"),
        sample_sizes={"mnli": 512, "hans_lo": 512},
        row_counts={"mnli": 9815, "hans_lo": 5000},
        throughput=70.0,
    )
    values.update(kw)
    return SweepEstimate(**values)


def test_paper_counts() -> None:
    est = paper()
    assert est.pairs == 4950  # 100 × 99 / 2
    assert est.path_units == 9900  # 4,950 pairs × 2 path splits
    assert est.interior_points == 9  # α = 0.1 … 0.9
    assert est.member_evaluations == 200  # 100 members × 2 splits
    assert est.split_evaluations("mnli") == (100, 44_550)  # 4,950 × 9 interior
    assert est.interior_evaluations == 89_100  # 9,900 units × 9
    assert est.evaluations == 89_300
    assert est.examples_per_evaluation("mnli") == 512
    assert est.split_examples("hans_lo") == 22_860_800  # (100 + 44,550) × 512
    assert est.examples == 45_721_600  # 89,300 × 512
    assert est.worker_seconds == pytest.approx(653_165.714, abs=1e-3)  # 45,721,600 / 70
    assert est.worker_seconds / 3600 == pytest.approx(181.4, abs=0.05)
    assert est.wall_seconds == est.worker_seconds


def test_workers_divide_the_wall_time_only() -> None:
    one, four = paper(), paper(workers=4)
    assert four.worker_seconds == one.worker_seconds
    assert four.wall_seconds == pytest.approx(163_291.43, abs=0.01)  # 653,165.71 / 4


def test_member_only_splits_and_capped_and_whole_samples() -> None:
    est = SweepEstimate(
        members=4,
        points=5,
        path_splits=("a", "b"),
        eval_splits=("a", "b", "c"),
        sample_sizes={"a": 24, "b": 512, "c": None},
        row_counts={"a": 3815, "b": 300, "c": 1000},
        throughput=100.0,
        workers=2,
    )
    assert (est.pairs, est.path_units) == (6, 12)  # 4 × 3 / 2; × 2 path splits
    assert est.member_evaluations == 12  # 4 members × 3 splits
    assert est.interior_evaluations == 36  # 12 units × 3 interior α
    assert est.split_evaluations("c") == (4, 0)  # member-only: no paths
    assert est.examples_per_evaluation("b") == 300  # 512 asked, 300 rows
    assert est.examples_per_evaluation("c") == 1000  # sample_size null: every row
    # a: 24 × (4 + 6 × 3) = 528; b: 300 × (4 + 18) = 6,600; c: 1,000 × 4 = 4,000
    assert est.examples == 528 + 6600 + 4000
    assert est.wall_seconds == pytest.approx(11_128 / 100 / 2)


def test_unknown_sample_size_gives_no_projection() -> None:
    est = paper(sample_sizes={"mnli": 512, "hans_lo": None}, row_counts={"mnli": 9815})
    assert est.examples_per_evaluation("hans_lo") is None
    assert est.split_examples("mnli") == 22_860_800
    assert est.unknown_splits == ("hans_lo",)
    assert est.examples is None and est.worker_seconds is None and est.wall_seconds is None
    text = est.summary()
    assert "forward passes: unknown" in text and "hans_lo" in text
    assert "projection: unknown" in text
    # a declared size with the file unread counts as declared
    assert paper(row_counts={}).examples == 45_721_600


def test_to_dict_round_trip_and_json() -> None:
    est = paper(workers=3, study="paper", members_from="--members")
    data = json.loads(json.dumps(est.to_dict()))
    assert data["pairs"] == 4950 and data["examples"] == 45_721_600
    assert data["per_split"]["mnli"]["interior_evaluations"] == 44_550
    assert "perfect scaling" in data["assumption"]
    assert SweepEstimate.from_dict(data) == est


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"members": 1}, "at least 2 members"),
        ({"members": True}, "integer"),
        ({"workers": 0}, "--workers"),
        ({"throughput": 0.0}, "--throughput"),
        ({"throughput": math.nan}, "--throughput"),
        ({"points": 2}, "paths.points"),
        ({"path_splits": ("mnli", "qqp")}, "'qqp'"),
        ({"sample_sizes": {"mnli": 512}}, "'hans_lo'"),
        ({"row_counts": {"mnli": -1}}, "non-negative"),
    ],
)
def test_bad_arguments_are_named(change: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        paper(**change)
    assert needle in str(info.value)


def test_module_examples() -> None:
    assert doctest.testmod(modeconn.engine.planning).failed == 0


def test_counts_match_the_sweeps_own_plan(tmp_path: Path) -> None:
    """The estimate counts exactly what `plan_sweep` would do on an empty store."""
    splits = {  # what plan_sweep reads of a PreparedSplit
        name: SimpleNamespace(key=f"{name}#0", n=n, spec=SimpleNamespace(sample_seed=0))
        for name, n in (("a", 24), ("b", 16), ("c", 8))
    }
    members = [MemberRef(f"m{i}", f"h{i}") for i in range(5)]
    with Store(tmp_path / "r.sqlite") as store:
        plan = plan_sweep(
            members, splits, path_splits=["a", "b"], member_splits=["c"], points=7, store=store
        )
    est = SweepEstimate(
        members=5,
        points=7,
        path_splits=("a", "b"),
        eval_splits=("a", "b", "c"),
        sample_sizes={"a": 24, "b": 16, "c": 8},
    )
    assert plan.n_units == len(plan.unit_todo) == est.path_units == 20
    assert plan.n_member_points == len(plan.member_todo) == est.member_evaluations == 15
    assert plan.n_evaluations == est.evaluations == 15 + 20 * 5


# --------------------------------------------------------------------------- from studies


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_paper_study_on_the_command_line(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("MODECONN_DATA", str(data_root))
    code, out, err = _run(capsys, "plan", str(PAPER), "--members", "100", "--throughput", "70")
    assert code == 0, err
    assert "members: 100 (from --members)" in out
    assert "pairs: 4,950 = 100 × 99 / 2" in out
    assert "path units: 9,900" in out
    assert "(100 per split)" in out
    assert "(4,950 × 9 = 44,550 per path split)" in out
    # the paths' 45,721,600 examples plus the whole HANS-LO set (5,000) once per member
    assert "forward passes: 46,221,600 examples" in out
    assert "9,815 rows" in out and "5,000 rows" in out  # both files were read
    assert "hans_lo_full  5,000 per evaluation" in out
    assert "660,309 s = 183.4 h" in out and "perfect scaling" in out


def test_paper_study_as_json(data_root: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("MODECONN_DATA", str(data_root))
    argv = ["plan", str(PAPER), "--members", "100", "--throughput", "70", "--workers", "4"]
    code, out, _ = _run(capsys, *argv, "--json")
    data = json.loads(out)
    assert code == 0 and data["members_from"] == "--members"
    assert data["wall_seconds"] == pytest.approx((45_721_600 + 500_000) / 70 / 4)


def test_tiny_study_counts_its_train_arms(tiny_study: Path) -> None:
    est = plan_study(load_study(tiny_study), throughput=96.0, workers=2)
    assert est.members == 4 and est.members_from == "train arms: seed 2 + aug 2"
    assert est.eval_splits == ("mnli", "hans_lo", "hans_sub")
    assert est.row_counts == {"mnli": 3815, "hans_lo": 5000, "hans_sub": 5000}  # rows 6000:
    # mnli, hans_lo: 24 × (4 + 6 pairs × 3 interior) = 528 each; hans_sub: 24 × 4 = 96
    assert est.examples == 528 + 528 + 96
    assert est.worker_seconds == pytest.approx(12.0)  # 1,152 / 96
    assert est.wall_seconds == pytest.approx(6.0)


def _population(study: Path, population: dict) -> Path:
    data = yaml.safe_load(study.read_text())
    del data["train"]
    data["population"] = population
    study.write_text(yaml.safe_dump(data))
    return study


def test_members_are_counted_in_the_population_dir(tiny_study: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pop"
    folder.mkdir()
    for name in ("a.safetensors", "b.pt", "c.safetensors", "c.json", "notes.txt"):
        (folder / name).write_text("{}")  # counting reads names and sidecars, not weights
    est = plan_study(load_study(_population(tiny_study, {"dir": str(folder)})))
    assert est.members == 3 and est.members_from == f"population.dir {folder}"
    assert est.pairs == 3


def test_members_are_counted_in_the_population_list(tiny_study: Path) -> None:
    study = load_study(_population(tiny_study, {"members": [f"m{i}.pt" for i in range(7)]}))
    assert plan_study(study).members == 7
    assert plan_study(study, members=12).pairs == 66  # --members wins: 12 × 11 / 2


def test_unknown_rows_are_said(tiny_study: Path, tmp_path: Path, capsys) -> None:
    data = yaml.safe_load(tiny_study.read_text())
    data["splits"]["hans_sub"].update(sample_size=None, path="hans/elsewhere.tsv")
    tiny_study.write_text(yaml.safe_dump(data))
    code, out, err = _run(capsys, "plan", str(tiny_study), "--throughput", "50")
    assert code == 0, err
    assert "forward passes: unknown (the sample size of hans_sub is unknown" in out
    assert "hans_sub" in out and "rows not read" in out
    assert "projection: unknown" in out


def test_missing_data_root_leaves_rows_unread(tiny_study: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MODECONN_DATA", raising=False)
    data = yaml.safe_load(tiny_study.read_text())
    data["data_root"] = str(tiny_study.parent / "no-data-here")
    tiny_study.write_text(yaml.safe_dump(data))
    est = plan_study(load_study(tiny_study))
    assert est.row_counts == {"mnli": None, "hans_lo": None, "hans_sub": None}
    assert est.examples == 24 * (4 + 18) * 2 + 24 * 4  # declared sizes still count


def test_plan_needs_no_model(tiny_model_dir: Path, data_root: Path, tmp_path: Path) -> None:
    """Planning reads the study and the data files, never the model or the members."""
    data = tiny_study_dict(tiny_model_dir, data_root, tmp_path / "out")
    data["model"]["pretrained"] = str(tmp_path / "no-model")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    assert plan_study(load_study(path)).members == 4


def test_builtin_study_by_name_counts_its_digits_rows(capsys) -> None:
    """`modeconn plan demo-digits` finds the built-in study and counts the wheel's digits."""
    from modeconn.cli import main

    assert main(["plan", "demo-digits"]) == 0
    out = capsys.readouterr().out
    assert "unknown" not in out
    # 100 test digits a class are held out of the 5,000: the test part has 1,000 rows
    assert "1,000 per evaluation (of 1,000 rows) × (10 member evaluations) = 10,000" in out
