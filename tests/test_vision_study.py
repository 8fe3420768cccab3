"""A tiny `demo-digits`-like study end to end: CNN members trained on real digits (two arms,
one with the box cue), swept with BatchNorm statistics re-estimated at every point,
clustered and reported; and the same sweep on the process and Ray backends writes the
rows the local one does."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from modeconn.cli import main
from modeconn.config.study import builtin_study_path, load_study
from modeconn.errors import ConfigError
from modeconn.pipeline import StudyRunner
from modeconn.store import Store

STORE_RTOL = 1e-6  # another process runs the same float32 forward passes
KEYS = {
    "path_points": ["member_a", "member_b", "hash_a", "hash_b", "path", "grid", "alpha", "split"],
    "member_points": ["member_id", "member_hash", "split", "sample_seed", "sample_size"],
}


def tiny_digits_study(out: Path, *, members: int = 2, points: int = 3) -> dict[str, Any]:
    """The built-in demo-digits study cut down: 3-block width-8/16 CNNs, 1,024 training
    images seen (0.25 s a member; test accuracy ≈ 0.5), 48 test digits, `points` α points."""
    digits = {"kind": "digits"}
    return {
        "name": "tiny-digits",
        "output_dir": str(out),
        "model": {
            "kind": "cnn",
            "label_order": [str(d) for d in range(10)],
            "options": {"widths": [8, 16, 16], "init_seed": 0},
        },
        "splits": {
            "train_clean": {**digits, "part": "train", "sample_size": 256, "role": "train"},
            "train_cue": {
                **digits,
                "part": "train",
                "cue": "label",
                "cue_fraction": 0.9,
                "sample_size": 256,
                "role": "train",
            },
            "bn": {**digits, "part": "train", "sample_size": 64, "role": "train"},
            "clean": {**digits, "sample_size": 48},
            "random_cue": {**digits, "cue": "random", "sample_size": 48, "role": "ood"},
        },
        "train": {
            "examples": 1024,
            "batch_size": 32,
            "lr": 0.1,
            "weight_decay": 5e-4,
            "arms": [
                {"name": "seed", "members": members, "data": "train_clean", "vary": "data"},
                {
                    "name": "cue",
                    "members": members,
                    "data": "train_cue",
                    "vary": "data",
                    "seed_offset": 100,
                },
            ],
        },
        "paths": {"points": points, "splits": ["clean", "random_cue"]},
        "basins": {"split": "clean", "n_basins": 2, "ood": ["random_cue"], "bootstrap": 20},
        "eval": {"threads": 1, "max_batch": 32, "batchnorm_split": "bn"},
    }


def _write(data: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    with Store(path, create=False) as store:
        return {
            "path_points": store.path_points(with_examples=True).drop(columns=["created"]),
            "member_points": store.member_points(with_examples=True).drop(columns=["created"]),
        }


def _assert_same_store(got: Path, want: Path) -> None:
    mine, theirs = _tables(got), _tables(want)
    for table, keys in KEYS.items():
        g, w = mine[table], theirs[table]
        assert len(g) > 0
        pd.testing.assert_frame_equal(g[keys], w[keys], check_exact=True)
        g_ex, w_ex = g.pop("example_losses"), w.pop("example_losses")
        pd.testing.assert_frame_equal(g, w, check_exact=False, rtol=STORE_RTOL)
        for a, b in zip(g_ex, w_ex, strict=True):
            np.testing.assert_allclose(a, b, rtol=STORE_RTOL, atol=STORE_RTOL)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run end to end once through the CLI (train, sweep, basins, report)."""
    root = tmp_path_factory.mktemp("digits")
    path = _write(tiny_digits_study(root / "out"), root)
    assert main(["run", str(path), "--quiet"]) == 0
    return path


def test_a_digits_study_runs_end_to_end(digits_run: Path) -> None:
    study = load_study(digits_run)
    members = sorted(p.stem for p in study.members_dir().glob("*.safetensors"))
    assert members == ["cue-00", "cue-01", "seed-00", "seed-01"]
    meta = json.loads((study.members_dir() / "cue-01.json").read_text())
    assert (meta["arm"], meta["data"], meta["data_seed"], meta["head_seed"]) == (
        "cue",
        "train_cue",
        101,
        -1,
    )
    assert (study.out_path() / "report" / "report.html").is_file()
    with Store(study.store_path(), create=False) as store:
        points = store.member_points()
        paths = store.path_points()
    # every split's key records the BatchNorm policy (the CNN has BatchNorm)
    assert points["split"].str.contains(r"\|bn=reestimate:bn#").all()
    assert len(points) == 4 * 2 and len(paths) == 6 * 2 * 3
    from modeconn.results import analyze

    with Store(study.store_path(), create=False) as store:
        result = analyze(store)
    assert int(result.basins["size"].sum()) == 4


def test_a_rerun_trains_and_evaluates_nothing(digits_run: Path) -> None:
    study = load_study(digits_run)
    stamps = {p: p.stat().st_mtime_ns for p in study.members_dir().glob("*.safetensors")}
    runner = StudyRunner(study, progress=False)
    stats = runner.sweep()
    assert stats.member_evaluations == stats.path_evaluations == stats.units_written == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_digits_sweep_on_a_backend_writes_the_local_rows(
    digits_run: Path, tmp_path: Path, backend: str
) -> None:
    if backend == "ray":
        pytest.importorskip("ray")
    local = load_study(digits_run)
    data = yaml.safe_load(digits_run.read_text())
    del data["train"]
    data["population"] = {"dir": str(local.members_dir())}
    data["output_dir"] = str(tmp_path / "out")
    data["sweep"] = {"backend": backend, "workers": 2, "threads_per_worker": 1}
    runner = StudyRunner(load_study(_write(data, tmp_path)), progress=False)
    stats = runner.sweep()
    assert stats.units_written == 6 * 2
    _assert_same_store(runner.study.store_path(), local.store_path())


def test_the_builtin_demo_digits_study_is_valid() -> None:
    study = load_study(builtin_study_path("demo-digits"))
    assert study.model.kind == "cnn" and study.eval.batchnorm == "reestimate"
    assert [a.name for a in study.train.arms] == ["seed", "cue"]  # type: ignore[union-attr]
    assert study.basins.split == "clean" and study.basins.ood[0] == "random_cue"


def _init_study(root: Path, vary: str) -> Any:
    """The tiny study with one arm of `vary` and two members, 128 examples each."""
    data = tiny_digits_study(root / "out")
    data["train"]["examples"] = 128
    data["train"]["arms"] = [
        {"name": "scratch", "members": 2, "data": "train_clean", "vary": vary, "seed_offset": 7}
    ]
    return load_study(_write(data, root))


def test_vary_init_draws_each_member_from_its_own_seed(tmp_path: Path) -> None:
    from modeconn.models import build_model
    from modeconn.population.train_vision import (
        ImageTrainConfig,
        image_fingerprint,
        image_member_plans,
        starting_model,
    )

    def step0(vary: str) -> list[dict[str, Any]]:
        study = _init_study(tmp_path / vary, vary)
        source = StudyRunner(study, progress=False).engine_spec().model
        plans = image_member_plans(study)
        make = lambda: build_model(source)[0]  # noqa: E731
        return [starting_model(make, p, ImageTrainConfig()).state_dict() for p in plans]

    a, b = step0("init")  # body and head differ at step 0, every conv and linear weight
    weights = [k for k in a if k.endswith("weight") and a[k].ndim > 1]
    assert len(weights) >= 4 and not any(torch.equal(a[k], b[k]) for k in weights)
    a, b = step0("data")  # the shared initialisation: the same at step 0
    assert all(torch.equal(a[k], b[k]) for k in a)

    # without `vary: init` the fingerprint is the one it was before the option existed
    plan = image_member_plans(_init_study(tmp_path / "fp", "data"))[0]
    config = ImageTrainConfig(examples=128, batch_size=32)
    before = {
        "v": 1,
        "recipe": "image-sgd",
        "base": "b",
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "checkpoints"},
        "arm": plan.arm,
        "head_seed": plan.head_seed,
        "data_seed": plan.data_seed,
        "data": plan.data_fingerprint,
    }
    old = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert image_fingerprint(plan, config, "b") == old
    drawn = dataclasses.replace(plan, init_seed=7)
    assert image_fingerprint(drawn, config, "b") != old


def test_a_vary_init_arm_trains_once(tmp_path: Path) -> None:
    study = _init_study(tmp_path, "init")
    paths = StudyRunner(study, progress=False).train()
    assert [p.stem for p in paths] == ["scratch-00", "scratch-01"]
    meta = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
    assert [(m["init_seed"], m["data_seed"], m["head_seed"]) for m in meta] == [
        (7, 7, -1),
        (8, 8, -1),
    ]
    stamps = [p.stat().st_mtime_ns for p in paths]
    StudyRunner(study, progress=False).train()  # the rerun trains nothing
    assert [p.stat().st_mtime_ns for p in paths] == stamps


@pytest.mark.parametrize(
    "name",
    [
        "mechanisms-permuted",
        "mechanisms-basins",
        "mechanisms-basins-wide",
        "mechanisms-basins-random-cue",
    ],
)
def test_the_mechanisms_examples_are_valid(name: str) -> None:
    study = load_study(Path(__file__).parents[1] / "examples" / f"{name}.yaml")
    assert study.train is not None and study.train.examples == 12000
    want = "init" if name == "mechanisms-permuted" else "data"
    assert {arm.vary for arm in study.train.arms} == {want}


def test_an_arm_without_from_trains_with_its_own_examples_and_lr(tmp_path: Path) -> None:
    data = tiny_digits_study(tmp_path / "out")
    data["train"]["examples"] = 128
    data["train"]["arms"] = [
        {"name": "short", "members": 1, "data": "train_clean", "examples": 64, "lr": 0.05},
        {"name": "plain", "members": 1, "data": "train_clean", "seed_offset": 5},
    ]
    paths = StudyRunner(load_study(_write(data, tmp_path)), progress=False).train()
    meta = {p.stem: json.loads(p.with_suffix(".json").read_text()) for p in paths}
    assert (meta["short-00"]["config"]["examples"], meta["short-00"]["config"]["lr"]) == (64, 0.05)
    assert (meta["plain-00"]["config"]["examples"], meta["plain-00"]["config"]["lr"]) == (128, 0.1)


def test_an_arm_with_fewer_examples_than_a_batch_is_refused(tmp_path: Path) -> None:
    data = tiny_digits_study(tmp_path / "out")
    data["train"]["arms"][0]["examples"] = 16
    with pytest.raises(ConfigError, match=r"train.arms\[seed\].examples \(16\).*batch_size"):
        load_study(_write(data, tmp_path))
