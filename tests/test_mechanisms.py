"""Counterfactual connectivity end to end on a tiny image study: a cue arm, two recipe
arms from it, the four sets, the methods × sets table and the paths back to the cue
models; and the built-in `demo-cues` study and the bad-input lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_recipes import _study

from modeconn.cli import main
from modeconn.config.study import builtin_study_path, load_study
from modeconn.errors import ConfigError
from modeconn.pipeline import StudyRunner

SETS = {"clean": "clean", "cue": "cue", "random_cue": "random_cue", "random_image": "ri"}


def _data(tmp_path: Path) -> dict:
    arms = [
        {"name": "ft", "members": 2, "data": "ft_clean", "recipe": "ft-s", "from": "cue",
         "examples": 40},
        {"name": "cb", "members": 2, "data": "ft_clean", "recipe": "cbft", "from": "cue",
         "examples": 40},
    ]  # fmt: skip
    data = _study(tmp_path, arms)
    digits = {"kind": "digits", "sample_size": 32, "role": "ood"}
    data["splits"]["cue"] = {**digits, "cue": "label"}
    data["splits"]["ri"] = {**digits, "cue": "random_image"}
    data["analyses"] = {"mechanisms": {"sets": dict(SETS), "points": 3}}  # tests edit it
    data["paths"]["splits"] = ["clean"]
    return data


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("mech")
    runner = StudyRunner(load_study(_write(tmp, _data(tmp))), progress=False)
    result = runner.run()
    return {"result": result, "value": result.analyses["mechanisms"]}


def test_the_table_has_every_method_and_set(measured) -> None:
    table = measured["value"]["table"]
    assert set(table["method"]) == {"cue", "ft", "cb"}
    assert set(table["set"]) == {"clean", "cue", "random_cue", "random_image"}
    assert table["accuracy"].between(0, 1).all()
    two = table[table["members"] == 2]
    assert (two["low"] <= two["accuracy"]).all() and (two["accuracy"] <= two["high"]).all()
    members = measured["value"]["members"]
    assert np.allclose(members["reliance"], members["clean"] - members["random_cue"])


def test_each_tuned_member_has_a_path_back_to_its_cue_model_on_each_set(measured) -> None:
    paths = measured["value"]["paths"]
    assert len(paths) == 4 * 4  # 4 tuned members × 4 sets
    assert set(zip(paths["member"], paths["source"], strict=True)) == {
        ("ft-00", "cue-00"), ("ft-01", "cue-01"), ("cb-00", "cue-00"), ("cb-01", "cue-01")
    }  # fmt: skip
    curves = measured["value"]["curves"]
    members = measured["value"]["members"]
    # α = 1 is the member itself: its accuracy there is its member point's
    for _, row in curves[curves["alpha"] == 1.0].iterrows():
        assert abs(row["accuracy"] - members.loc[row["member"], row["set"]]) < 1e-9


def test_the_report_has_the_section_and_figure(measured) -> None:
    html = measured["result"].report.read_text("utf-8")
    assert "Counterfactual connectivity" in html and "mechanisms" in measured["result"].summary()


def test_demo_cues_is_a_valid_study() -> None:
    study = load_study(builtin_study_path("demo-cues"))
    recipes = [a.recipe for a in study.train.arms]
    assert recipes == ["cue", "finetune", "ft-s", "ft-m", "llrt", "lp-ft", "cbft"]
    assert study.section("mechanisms").sets.random_image == "random_image"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["analyses"]["mechanisms"]["sets"].update(cue="nope"),
         r"analyses\.mechanisms\.sets\.cue names split 'nope'"),
        (lambda d: d["train"]["arms"][1].update(recipe="magic"), r"recipe"),
        (lambda d: d["splits"]["cue"].update(cue_fraction=1.5), r"cue_fraction"),
        (lambda d: d["splits"]["cue"].update(cue="box"), r"cue"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, change, match, capsys):
    data = _data(tmp_path)
    change(data)
    with pytest.raises(ConfigError, match=match):
        load_study(_write(tmp_path, data))
    assert main(["run", str(tmp_path / "study.yaml")]) == 2
    assert not (tmp_path / "out").exists()
