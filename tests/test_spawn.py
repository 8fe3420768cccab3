"""Spawn time (Frankle et al. 2020; Singh et al. 2024): the runs and the analysis.

* a child spawned at step k starts from exactly (bitwise) the parent's weights at k, which
  are the weights the ordinary image recipe has at step k (its own checkpoint);
* the parent is bitwise the member the image recipe trains with the same data seed;
* a child given the parent's own seed replays the parent — at k = 0, and (the optimiser
  state and the schedule carried over) at k > 0;
* a rerun trains nothing and measures nothing;
* the displacement angle, by hand and against the stored record;
* the analysis end to end on a tiny digits study, and its bad inputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_vision_study import tiny_digits_study

from modeconn.cli import main
from modeconn.config.study import load_study
from modeconn.engine.spec import engine_spec
from modeconn.errors import ConfigError
from modeconn.measures.displacement import displacement_cosine, displacement_norms
from modeconn.pipeline import StudyRunner
from modeconn.population.spawn import (
    PARENT,
    SpawnRuns,
    check_spawn,
    child_id,
    train_child,
    train_spawn,
    trainer_for,
)

STEPS = [0, 8, 24]  # the tiny recipe has 1024 // 32 = 32 steps


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _study(folder: Path, **spawn: Any) -> Path:
    data = tiny_digits_study(folder / "out", members=1)
    data["train"]["arms"] = data["train"]["arms"][:1]
    data["train"]["arms"][0]["members"] = 3  # basins need 3
    data["paths"] = {"points": 3, "splits": ["clean"]}
    data["basins"] = {"split": "clean", "n_basins": 2, "bootstrap": 20}
    data["analyses"] = {
        "spawn": {"steps": STEPS, "children": 2, "split": "clean", "points": 5, **spawn}
    }
    path = folder / "study.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models on a shared CPU: one thread (as eval.threads: 1 gives a study's run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Snapshot:
    """A trainer that records the model's weights at its first loss of each run."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.kind, self.total = inner, inner.kind, inner.total
        self.first: list[dict[str, torch.Tensor]] = []
        self._armed = False

    def arm(self) -> None:
        self._armed = True

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        if self._armed:
            self.first.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            self._armed = False
        return self.inner.loss(model, batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("spawn-runs")
    study = load_study(_study(folder))
    trainer = trainer_for(study, engine_spec(study).model, "train_clean")
    runs = SpawnRuns(folder / "runs", tuple(STEPS), 2, seed=0)
    trained = train_spawn(trainer, runs, say=lambda _: None)
    return {"study": study, "trainer": trainer, "runs": runs, "trained": trained, "folder": folder}


def test_children_start_from_the_parents_weights_at_k_bitwise(spawned) -> None:
    from modeconn.population.train_vision import (
        ImageMemberPlan,
        ImageTrainConfig,
        train_image_member,
    )

    runs, trainer = spawned["runs"], spawned["trainer"]
    snap = Snapshot(trainer)
    for k in STEPS:
        snap.arm()
        assert train_child(snap, runs, k, seed=7, run_id=f"probe@{k}")
    for k, first in zip(STEPS, snap.first, strict=True):
        saved = load_file(str(runs.folder / "checkpoints" / f"{PARENT}@{k}.safetensors"))
        assert _states_equal(first, saved), f"child at step {k} did not start at parent@{k}"
    # the ordinary image recipe, with its own checkpoint at step 8 = 0.25 of 32 steps
    config = ImageTrainConfig(**{**vars(trainer.config), "checkpoints": (0.25,)})
    plan = ImageMemberPlan("ref", "seed", -1, 0, trainer.images, trainer.labels, "train_clean")
    out = spawned["folder"] / "reference"
    train_image_member(trainer.make_body, plan, config, out, base=trainer.base)
    ref8 = load_file(str(out / "checkpoints" / "ref@8.safetensors"))
    assert _states_equal(ref8, snap.first[1]), "parent@8 is not the recipe's step 8"
    final = load_file(str(out / "ref.safetensors"))
    assert _states_equal(final, load_file(str(runs.parent()))), "the parent is not the member"


@pytest.mark.parametrize("k", [0, 8])
def test_a_child_with_the_parents_seed_replays_the_parent(spawned, k) -> None:
    runs, trainer = spawned["runs"], spawned["trainer"]
    assert train_child(trainer, runs, k, seed=runs.seed, run_id=f"replay@{k}")
    replay = load_file(str(runs.folder / f"replay@{k}.safetensors"))
    assert _states_equal(replay, load_file(str(runs.parent())))


def test_siblings_differ_and_a_rerun_trains_nothing(spawned) -> None:
    runs, trainer = spawned["runs"], spawned["trainer"]
    assert spawned["trained"] == 1 + 2 * len(STEPS)
    a = load_file(str(runs.child(8, 0)))
    b = load_file(str(runs.child(8, 1)))
    assert not _states_equal(a, b)
    meta = json.loads(runs.child(8, 1).with_suffix(".json").read_text())
    assert (meta["spawn_step"], meta["data_seed"]) == (8, 2)
    parent = json.loads(runs.parent().with_suffix(".json").read_text())
    assert len(parent["losses"]) == trainer.total
    before = {p: p.stat().st_mtime_ns for p in runs.folder.rglob("*.safetensors")}
    assert train_spawn(trainer, runs, say=lambda _: None) == 0
    assert before == {p: p.stat().st_mtime_ns for p in runs.folder.rglob("*.safetensors")}


def test_displacement_cosine_by_hand() -> None:
    start = [np.array([1.0, 1.0]), np.array([[0.0]])]
    a = [np.array([2.0, 1.0]), np.array([[1.0]])]  # d₁ = (1, 0, 1)
    b = [np.array([1.0, 3.0]), np.array([[1.0]])]  # d₂ = (0, 2, 1)
    # d₁·d₂ = 0 + 0 + 1 = 1; ‖d₁‖ = √2, ‖d₂‖ = √5  →  cos = 1/√10
    assert displacement_cosine(start, a, b) == pytest.approx(1 / math.sqrt(10), abs=1e-15)
    assert displacement_norms(start, a, b) == pytest.approx((math.sqrt(2), math.sqrt(5)))
    assert displacement_cosine(start, a, a) == pytest.approx(1.0)
    assert math.isnan(displacement_cosine(start, start, b))  # one run did not move


# ------------------------------------------------------------------------ the analysis


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("spawn-study")
    path = _study(folder, curvature=3)
    said: list[str] = []
    result = StudyRunner(load_study(path), progress=False, say=said.append).run()
    return {"path": path, "result": result, "said": said}


def test_the_analysis_reads_every_spawn_step(analysed) -> None:
    value = analysed["result"].analyses["spawn"]
    assert value.steps["step"].tolist() == STEPS
    assert (value.steps["pairs"] == 1).all()
    assert np.isfinite(value.pairs[["barrier", "convexity_gap", "cosine", "f2_mid"]]).all().all()
    assert (value.pairs["convexity_gap"] >= value.pairs["barrier"] - 1e-12).all()
    assert value.parent["step"].tolist() == [*STEPS, 32]
    assert len(value.train_loss) == 32
    assert "spawn (siblings): k=0" in analysed["result"].summary()
    report = analysed["result"].report.read_text("utf-8")
    assert "Spawn time: the mountainside and the ridge" in report


def test_the_stored_angle_is_the_one_computed_by_hand(analysed) -> None:
    study = load_study(analysed["path"])
    folder = study.out_path() / "spawn" / "seed-0"
    start = load_file(str(folder / "checkpoints" / f"{PARENT}@8.safetensors"))
    a = load_file(str(folder / f"{child_id(8, 0)}.safetensors"))
    b = load_file(str(folder / f"{child_id(8, 1)}.safetensors"))
    params = [k for k in start if not k.endswith(("running_mean", "running_var", "tracked"))]
    d1 = torch.cat([(a[k].double() - start[k].double()).ravel() for k in params])
    d2 = torch.cat([(b[k].double() - start[k].double()).ravel() for k in params])
    cos = float(d1 @ d2 / (d1.norm() * d2.norm()))
    pairs = analysed["result"].analyses["spawn"].pairs
    assert pairs.set_index("step").loc[8, "cosine"] == pytest.approx(cos, rel=1e-12)


def test_a_rerun_trains_and_evaluates_nothing(analysed) -> None:
    said: list[str] = []
    runner = StudyRunner(load_study(analysed["path"]), progress=False, say=said.append)
    runner.measure()
    assert not [line for line in said if line.startswith("spawn")], said


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"steps": [0, 8, 40]}, ("spawn step 40", "32 steps", "analyses.spawn.steps")),
        ({"steps": [0, 32]}, ("spawn step 32", "32 steps")),
        ({"steps": [8, 0]}, ("strictly increasing", "8 then 0")),
        ({"steps": [8, 8]}, ("strictly increasing", "8 then 8")),
        ({"children": 1}, ("analyses.spawn.children", "at least 2", "got 1")),
        ({"curvature": 4}, ("analyses.spawn.curvature", "odd")),
        ({"split": "nope"}, ("analyses.spawn.split", "'nope'")),
    ],
)
def test_bad_spawn_settings_fail_before_anything_is_written(
    tmp_path: Path, capsys, change: dict[str, Any], names: tuple[str, ...]
) -> None:
    path = _study(tmp_path, **change)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in names), message
    assert main(["run", str(path), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_check_spawn_names_the_parents_length() -> None:
    with pytest.raises(ConfigError, match=r"spawn step 200 is beyond the parent's training \(187"):
        check_spawn([0, 200], 2, 187, where="analyses.spawn")
    check_spawn([0, 186], 2, 187, where="analyses.spawn")  # the last step that leaves one


# ------------------------------------------------------------------ the text recipe (HF)


def test_a_text_parent_is_the_fine_tuned_member_and_its_step0_child_replays_it(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    from conftest import tiny_study_dict

    from modeconn.pipeline import StudyRunner as Runner

    data = tiny_study_dict(tiny_model_dir, data_root, tmp_path / "out", members=1)
    data["train"]["arms"] = [{"name": "seed", "members": 1, "data": "mnli_train"}]
    data["analyses"] = {"spawn": {"steps": [0, 2], "split": "mnli", "points": 3}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    runner = Runner(study, progress=False)
    member = runner.train()[0]  # seed-00: head seed 0, data seed 0
    trainer = trainer_for(study, engine_spec(study).model, "mnli_train")
    runs = SpawnRuns(tmp_path / "runs", (0, 2), 2, seed=0)
    train_spawn(trainer, runs, say=lambda _: None)
    parent = load_file(str(runs.parent()))
    assert _states_equal(parent, load_file(str(member)))
    assert train_child(trainer, runs, 0, seed=0, run_id="replay@0")
    assert _states_equal(parent, load_file(str(runs.folder / "replay@0.safetensors")))
    assert not _states_equal(parent, load_file(str(runs.child(2, 0))))


@pytest.mark.parametrize("name", ["spawn-digits.yaml", "spawn-minilm.yaml"])
def test_the_example_studies_load(name: str) -> None:
    study = load_study(Path(__file__).resolve().parents[1] / "examples" / name)
    section = study.section("spawn")
    assert section.children == 2 and section.steps == sorted(section.steps)


def test_doctests() -> None:
    import doctest

    import modeconn.figures.spawn
    import modeconn.measures.displacement
    import modeconn.population.spawn

    for module in (
        modeconn.measures.displacement,
        modeconn.population.spawn,
        modeconn.figures.spawn,
    ):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
