"""The fine-tuning recipes of Lubana et al. (2023) as population recipes: CBFT's two
losses against hand computations on a tiny model; every recipe runs on real digits, is
deterministic in its seed and resumes; a study's `from` arms are checked and trained."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_vision_study import tiny_digits_study

from modeconn.config.splits import DigitsSpec
from modeconn.config.study import load_study
from modeconn.data.digits import digits_sample
from modeconn.errors import ConfigError
from modeconn.models.cnn import CNNConfig, build_cnn
from modeconn.pipeline import StudyRunner
from modeconn.population.recipes import RECIPES, get
from modeconn.population.recipes.base import FineTuneConfig, RecipePlan, train_recipe_member
from modeconn.population.recipes.cbft import barrier_loss, draw_t, invariance_loss
from modeconn.population.weights import weights_hash

ATOL = 1e-6


def _tiny(seed: int) -> torch.nn.Module:
    return build_cnn(CNNConfig(widths=(3, 4)), seed=seed)


def test_draw_t_stays_in_a_quarter_to_three_quarters() -> None:
    gen = torch.Generator().manual_seed(0)
    ts = [draw_t(gen) for _ in range(2000)]
    assert min(ts) == 0.25 and max(ts) == 0.75  # clipped at ±0.5 (|ε| > 0.5 often)
    assert 0.45 < sum(ts) / len(ts) < 0.55


def test_the_barrier_gradient_reaches_theta_through_one_minus_t() -> None:
    theta, anchor = _tiny(1), _tiny(2)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    t = 0.3
    # by hand: a model holding θ_t = t·θ_C + (1 − t)·θ, its loss |1 − CE| and gradient
    mixed = copy.deepcopy(theta)
    sa, st = anchor.state_dict(), theta.state_dict()
    mixed.load_state_dict(
        {k: t * sa[k] + (1 - t) * st[k] if st[k].is_floating_point() else st[k] for k in st}
    )
    mixed.train()
    ce = torch.nn.functional.cross_entropy(mixed(images=x), y)
    by_hand = (1.0 - ce).abs()
    by_hand.backward()
    theta.train()
    loss = barrier_loss(theta, sa, t, x, y, margin=1.0)
    loss.backward()
    assert abs(loss.item() - by_hand.item()) < ATOL
    grads = dict(mixed.named_parameters())
    for name, p in theta.named_parameters():
        assert torch.allclose(p.grad, (1 - t) * grads[name].grad, atol=ATOL), name
    # θ_C is a constant, and θ's own BatchNorm statistics are left alone
    assert all(v.grad is None for v in sa.values())
    assert torch.equal(theta.blocks[0].bn.running_mean, st["blocks.0.bn.running_mean"])


def test_the_invariance_loss_by_hand() -> None:
    # class 0: clean mean (1, 0) → n = (1, 0); cued mean (0, 2) → n = (0, 1): ‖·‖² = 2
    # class 1: clean mean (3, 4) → (0.6, 0.8); cued mean (3, 4): 0
    # class 2 only in the clean batch: skipped. K = 2 classes in both → (2 + 0) / 2 = 1
    z_clean = torch.tensor([[1.0, 0.0], [3.0, 4.0], [9.0, 9.0]])
    z_cue = torch.tensor([[0.0, 1.0], [0.0, 3.0], [3.0, 4.0]])
    loss = invariance_loss(z_clean, torch.tensor([0, 1, 2]), z_cue, torch.tensor([0, 0, 1]))
    assert abs(float(loss) - 1.0) < ATOL


def _plan(recipe: str, seed: int = 0) -> RecipePlan:
    start = build_cnn(CNNConfig(widths=(4, 8)), seed=5).state_dict()
    x, y = digits_sample(DigitsSpec("c", part="train", sample_size=40, sample_seed=1))
    xc, yc = digits_sample(DigitsSpec("q", part="train", cue="label", sample_size=40))
    return RecipePlan(
        member_id=f"{recipe}-00",
        arm=recipe,
        recipe=recipe,
        seed=seed,
        start_id="cue-00",
        start_hash=weights_hash(start),
        start=start,
        images=x,
        labels=y,
        config=FineTuneConfig(examples=60, batch_size=20, lr=0.01),
        cue_images=xc,
        cue_labels=yc,
        settings=(("probe_examples", 40), ("probe_lr", 0.1)) if recipe == "lp-ft" else (),
    )


def _train(recipe: str, out: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    path = train_recipe_member(
        lambda: build_cnn(CNNConfig(widths=(4, 8)), seed=0),
        get(recipe),
        _plan(recipe, seed),
        out,
        base="tiny",
    )
    return load_file(str(path))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_trains_deterministically_and_resumes(recipe: str, tmp_path: Path) -> None:
    a = _train(recipe, tmp_path / "a")
    b = _train(recipe, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights
    start = _plan(recipe).start
    moved = [k for k in a if not torch.equal(a[k], start[k])]
    assert moved  # it trained
    if recipe == "llrt":  # only the head moves
        assert {k.split(".")[0] for k in moved} == {"classifier"}
    weights = tmp_path / "a" / f"{recipe}-00.safetensors"
    stamp = weights.stat().st_mtime_ns
    _train(recipe, tmp_path / "a")  # the rerun finds it
    assert weights.stat().st_mtime_ns == stamp
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert meta["recipe_kind"] == recipe and meta["from"] == "cue-00"
    c = _train(recipe, tmp_path / "a", seed=1)  # another seed: a new fingerprint, retrained
    assert weights.stat().st_mtime_ns != stamp
    assert any(not torch.equal(a[k], c[k]) for k in a)


def _study(tmp_path: Path, arms: list[dict]) -> dict:
    data = tiny_digits_study(tmp_path / "out")
    data["splits"]["ft_clean"] = {
        "kind": "digits",
        "part": "train",
        "sample_size": 40,
        "role": "train",
    }
    data["train"]["examples"] = 256
    data["train"]["arms"] = [
        {"name": "cue", "members": 2, "data": "train_cue", "recipe": "cue", "vary": "data"},
        *arms,
    ]
    return data


def _load(tmp_path: Path, data: dict):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_study(path)


@pytest.mark.parametrize(
    ("arm", "match"),
    [
        ({"name": "f", "members": 1, "data": "ft_clean", "recipe": "cbft"}, r"from: <arm>"),
        (
            {"name": "f", "members": 1, "data": "ft_clean", "recipe": "ft-s", "from": "nope"},
            r"train\.arms\[f\]\.from names 'nope'",
        ),
        ({"name": "f", "members": 1, "data": "ft_clean", "recipe": "magic"}, r"recipe"),
        (
            {
                "name": "f",
                "members": 1,
                "data": "ft_clean",
                "recipe": "ft-m",
                "from": "cue",
                "cue_data": "train_cue",
            },
            r"cue_data is used only with `recipe: cbft`",
        ),
    ],
)
def test_bad_recipe_arms_are_named(tmp_path: Path, arm: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, _study(tmp_path, [arm]))


def test_a_study_trains_its_recipe_arms_from_the_cue_members(tmp_path: Path) -> None:
    arms = [
        {
            "name": "ft",
            "members": 2,
            "data": "ft_clean",
            "recipe": "ft-m",
            "from": "cue",
            "examples": 40,
            "seed_offset": 10,
        },
        {
            "name": "cb",
            "members": 2,
            "data": "ft_clean",
            "recipe": "cbft",
            "from": "cue",
            "examples": 40,
            "seed_offset": 20,
        },
    ]
    study = _load(tmp_path, _study(tmp_path, arms))
    paths = StudyRunner(study, progress=False).train()
    assert [p.stem for p in paths] == ["cue-00", "cue-01", "ft-00", "ft-01", "cb-00", "cb-01"]
    meta = json.loads((paths[5].with_suffix(".json")).read_text())
    assert meta["from"] == "cue-01" and meta["recipe_kind"] == "cbft"
    stamps = [p.stat().st_mtime_ns for p in paths]
    StudyRunner(study, progress=False).train()  # the rerun trains nothing
    assert [p.stat().st_mtime_ns for p in paths] == stamps
