"""The BatchNorm policy at path points, against an independent computation.

Two small CNNs with BatchNorm, trained for a few steps from different seeds on real
handwritten digits (scikit-learn's 1,797 8×8 images, shipped in its wheel). For every α
the reference takes a fresh ``copy.deepcopy`` of a model, sets θα = α·θA + (1−α)·θB by
hand on every float state entry, and then either

* ``reestimate``: ``reset_running_stats()`` with ``momentum = None`` and forward passes in
  train mode over the same batches (as Lubana et al.'s ``reset_bn_stats``), or
* ``interpolate``: nothing more (the running statistics are the interpolated ones);

then evaluates in eval mode. The engine's loss must match it at every α.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tolerances import FLOAT32_LOSS_ATOL
from torch import nn

from modeconn.data.base import SampleInfo
from modeconn.data.tensors import TensorSplit, tensor_split
from modeconn.engine.evaluate import Evaluator, has_batchnorm
from modeconn.errors import ConfigError

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
CLASSES = tuple(str(d) for d in range(10))


class SmallCNN(nn.Module):
    """conv-BN-ReLU ×2, global average pool, linear head; ``forward(x)`` gives logits."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    return x, torch.tensor(d.target, dtype=torch.long)


def digits_split(name: str, rows: slice, batch_size: int = 100) -> TensorSplit:
    x, y = _digits()
    return tensor_split(
        SampleInfo(name=name, role="train" if name == "train" else "id"),
        {"x": x[rows]},
        y[rows],
        classes=CLASSES,
        batch_size=batch_size,
    )


@cache
def _member(seed: int) -> dict[str, torch.Tensor]:
    """A CNN trained for 40 SGD steps (batch 64) from `seed`: its state dict."""
    x, y = _digits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(40):
            idx = torch.randint(0, 1000, (64,), generator=g)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _model(state: dict[str, torch.Tensor]) -> SmallCNN:
    m = SmallCNN()
    m.load_state_dict(state)
    return m.eval()


def reference_loss(
    alpha: float,
    policy: str,
    train: TensorSplit,
    split: TensorSplit,
    *,
    batches: int | None = None,
) -> float:
    """The loss at θα computed by hand on a fresh model copy (see the module docstring)."""
    a, b = _member(0), _member(1)
    model = copy.deepcopy(_model(a))
    with torch.no_grad():
        state = {
            k: alpha * a[k] + (1.0 - alpha) * b[k] if a[k].is_floating_point() else a[k] for k in a
        }
        model.load_state_dict(state)
        if policy == "reestimate":
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = None
                    m.reset_running_stats()
            model.train()
            for batch in train.batches[:batches]:
                model(**batch)
        model.eval()
        logits = torch.cat([model(**batch) for batch in split.batches])
    return float(F.cross_entropy(logits.double(), split.labels))


@pytest.fixture(scope="module")
def splits() -> tuple[TensorSplit, TensorSplit]:
    return digits_split("train", slice(0, 1000)), digits_split("test", slice(1000, 1400))


def _engine(policy: str, train: TensorSplit, batches: int | None = None) -> Evaluator:
    return Evaluator(
        _model(_member(0)),
        batchnorm=policy,
        batchnorm_split=train if policy == "reestimate" else None,
        batchnorm_batches=batches,
    )


def test_members_learn_the_digits(splits: tuple[TensorSplit, TensorSplit]) -> None:
    train, test = splits
    ev = _engine("reestimate", train)
    for seed in (0, 1):
        res = ev.evaluate_member(ev.as_point(_member(seed), name=str(seed)), test)
        assert res.metrics["accuracy"] > 0.5  # chance is 0.1


@pytest.mark.parametrize(
    ("policy", "batches"), [("reestimate", None), ("reestimate", 3), ("interpolate", None)]
)
def test_path_losses_match_a_hand_built_copy_per_alpha(
    splits: tuple[TensorSplit, TensorSplit], policy: str, batches: int | None
) -> None:
    train, test = splits
    ev = _engine(policy, train, batches)
    pa = ev.as_point(_member(0), name="a")
    pb = ev.as_point(_member(1), name="b")
    for alpha in ALPHAS:
        got = ev.evaluate_lerp(pa, pb, alpha, test).loss
        want = reference_loss(alpha, policy, train, test, batches=batches)
        assert got == pytest.approx(want, abs=FLOAT32_LOSS_ATOL), (policy, alpha)
    # a member point is re-estimated too: it equals the path's α = 1 point
    member = ev.evaluate_member(pa, test).loss
    assert member == pytest.approx(reference_loss(1.0, policy, train, test, batches=batches))


def test_the_policy_matters_at_the_midpoint(splits: tuple[TensorSplit, TensorSplit]) -> None:
    train, test = splits
    re = reference_loss(0.5, "reestimate", train, test)
    inter = reference_loss(0.5, "interpolate", train, test)
    assert abs(re - inter) > 10 * FLOAT32_LOSS_ATOL


def test_rows_are_keyed_by_the_policy(splits: tuple[TensorSplit, TensorSplit]) -> None:
    train, test = splits
    re, inter = _engine("reestimate", train), _engine("interpolate", train)
    fewer = _engine("reestimate", train, batches=3)
    keys = {ev.keyed(test).key for ev in (re, inter, fewer)}
    assert len(keys) == 3
    assert all(k.startswith(test.key + "|bn=") for k in keys)
    assert re.keyed(test).key == f"{test.key}|bn=reestimate:{train.key}"
    assert fewer.keyed(test).key == f"{test.key}|bn=reestimate:{train.key}:3"
    assert inter.keyed(test).key == f"{test.key}|bn=interpolate"
    # the keyed split is the split in every other respect
    keyed = re.keyed(test)
    assert keyed.n == test.n and keyed.name == test.name and keyed.spec is test.spec


def test_a_model_without_batchnorm_ignores_the_policy(
    splits: tuple[TensorSplit, TensorSplit],
) -> None:
    _, test = splits
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert not has_batchnorm(model)

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    ev = Evaluator(Wrap())  # reestimate by default, and no split: fine without BatchNorm
    assert ev.batchnorm is None and ev.key_suffix == ""
    assert ev.keyed(test) is test


def test_reestimate_without_a_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"eval\.batchnorm_split"):
        Evaluator(_model(_member(0)), batchnorm="reestimate")


def test_engine_leaves_batchnorm_momenta_and_eval_mode(
    splits: tuple[TensorSplit, TensorSplit],
) -> None:
    train, test = splits
    ev = _engine("reestimate", train)
    ev.evaluate_member(ev.as_point(_member(0), name="a"), test)
    bns = [m for m in ev.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 and not m.training for m in bns)


# ---- through the engine spec and the sweep: registered kinds, keyed rows -------------


@dataclass(frozen=True)
class DigitsRecipe:
    name: str
    start: int
    stop: int
    kind: str = "test-digits"


def build_digits(recipe: DigitsRecipe, labels: object) -> TensorSplit:
    return digits_split(recipe.name, slice(recipe.start, recipe.stop))


def build_cnn(source: object) -> tuple[nn.Module, tuple[str, ...]]:
    return SmallCNN().eval(), CLASSES


def test_sweep_rows_of_a_batchnorm_model_match_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeconn.data import base
    from modeconn.engine.spec import BatchNormPolicy, EngineSpec, ModelSource, build_engine
    from modeconn.engine.sweep import MemberRef, plan_sweep, run_sweep
    from modeconn.models import MODEL_BUILDERS
    from modeconn.population.members import weights_hash
    from modeconn.store import Store

    monkeypatch.setitem(MODEL_BUILDERS, "test-cnn", "test_batchnorm:build_cnn")
    monkeypatch.setitem(base.SPLIT_BUILDERS, "test-digits", "test_batchnorm:build_digits")
    spec = EngineSpec(
        model=ModelSource("test-cnn", "", CLASSES),
        splits=(DigitsRecipe("test", 1000, 1400),),
        batchnorm=BatchNormPolicy("reestimate", DigitsRecipe("train", 0, 1000), batches=4),
    )
    ev, splits = build_engine(spec)
    train, test = digits_split("train", slice(0, 1000)), digits_split("test", slice(1000, 1400))
    assert splits["test"].key == f"{test.key}|bn=reestimate:{train.key}:4"
    states = {"a": _member(0), "b": _member(1)}
    refs = [MemberRef(m, weights_hash(states[m])) for m in ("a", "b")]
    with Store(tmp_path / "s.sqlite", study="bn") as store:
        plan = plan_sweep(
            refs, splits, path_splits=["test"], member_splits=[], points=5, store=store
        )
        run_sweep(plan, ev, lambda m: ev.as_point(states[m], name=m), splits, store, progress=False)
        rows = store.path_points()
        members = store.member_points()
    assert set(rows["split"]) == {splits["test"].key} == set(members["split"])
    for alpha, loss in zip(rows["alpha"], rows["loss"], strict=True):
        want = reference_loss(alpha, "reestimate", train, test, batches=4)
        assert loss == pytest.approx(want, abs=FLOAT32_LOSS_ATOL), alpha
    assert np.isfinite(rows["loss"]).all()


def test_sweep_workers_build_the_same_batchnorm_engine_from_the_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker builds its engine from the runner's spec: same keys, same rows."""
    import pickle

    from safetensors.torch import save_file
    from test_backends import InlinePool

    from modeconn.data import base
    from modeconn.engine.backends import MemberSource, WorkerSpec, drive
    from modeconn.engine.spec import BatchNormPolicy, EngineSpec, ModelSource, build_engine
    from modeconn.engine.sweep import MemberRef, plan_sweep, run_sweep
    from modeconn.models import MODEL_BUILDERS
    from modeconn.population.members import weights_hash
    from modeconn.store import Store

    monkeypatch.setitem(MODEL_BUILDERS, "test-cnn", "test_batchnorm:build_cnn")
    monkeypatch.setitem(base.SPLIT_BUILDERS, "test-digits", "test_batchnorm:build_digits")
    spec = EngineSpec(
        model=ModelSource("test-cnn", "", CLASSES),
        splits=(DigitsRecipe("test", 1000, 1200), DigitsRecipe("ood", 1400, 1600)),
        batchnorm=BatchNormPolicy("reestimate", DigitsRecipe("train", 0, 1000), batches=2),
    )
    states = {"a": _member(0), "b": _member(1), "c": _member(2)}
    sources = []
    for m, state in states.items():
        save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / f"{m}.safetensors")
        sources.append(MemberSource(m, str(tmp_path / f"{m}.safetensors"), weights_hash(state)))
    refs = [MemberRef(s.id, s.hash) for s in sources]

    def sweep(store: Store, parallel: bool) -> None:
        ev, splits = build_engine(spec)
        plan = plan_sweep(
            refs, splits, path_splits=["test"], member_splits=["ood"], points=4, store=store
        )
        if not parallel:
            run_sweep(
                plan, ev, lambda m: ev.as_point(states[m], name=m), splits, store, progress=False
            )
            return
        worker = WorkerSpec.build(
            spec,
            keys=tuple((n, s.key) for n, s in splits.items()),
            members=tuple(sources),
            alphas=plan.alphas,
            threads=1,
        )
        assert pickle.loads(pickle.dumps(worker)) == worker
        drive(plan, InlinePool(worker), splits, store, workers=2, progress=False)

    frames = []
    for parallel in (False, True):
        with Store(tmp_path / f"{parallel}.sqlite", study="bn") as store:
            sweep(store, parallel)
            frames.append(
                (
                    store.path_points(with_examples=True).drop(columns=["created"]),
                    store.member_points(with_examples=True).drop(columns=["created"]),
                )
            )
    (paths_local, members_local), (paths_par, members_par) = frames
    assert len(paths_local) == 3 * 4 and len(members_local) == 3 * 2
    assert all("|bn=reestimate:train#" in k for k in set(paths_local["split"]))
    for got, want in ((paths_par, paths_local), (members_par, members_local)):
        assert got.drop(columns=["example_losses"]).equals(want.drop(columns=["example_losses"]))
        for g, w in zip(got["example_losses"], want["example_losses"], strict=True):
            np.testing.assert_array_equal(g, w)


# ---- a whole study of another kind: registered split and model kinds ------------------


@pytest.fixture
def digits_kinds(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`kind: test-digits` splits and a `kind: test-cnn` model, registered for one test."""
    from typing import Literal

    from modeconn.config.splits import SPLIT_KINDS, SplitEntry
    from modeconn.config.study import refresh_split_kinds
    from modeconn.data import base
    from modeconn.data.base import register_split_kind
    from modeconn.models import MODEL_BUILDERS

    class DigitsEntry(SplitEntry):
        kind: Literal["test-digits"] = "test-digits"
        start: int
        stop: int

        def recipe(self, name: str, study: object) -> DigitsRecipe:
            return DigitsRecipe(name, self.start, self.stop)

    monkeypatch.setitem(MODEL_BUILDERS, "test-cnn", "test_batchnorm:build_cnn")
    register_split_kind("test-digits", DigitsEntry, "test_batchnorm:build_digits")
    yield
    del SPLIT_KINDS["test-digits"], base.SPLIT_BUILDERS["test-digits"]
    refresh_split_kinds()


def test_a_study_of_another_kind_runs_through_the_pipeline(
    digits_kinds: None, tmp_path: Path
) -> None:
    """No text in the runner: splits, engine, sweep, record, basins and report."""
    import yaml
    from safetensors.torch import save_file

    from modeconn.config.study import load_study
    from modeconn.pipeline import StudyRunner
    from modeconn.store import Store

    members = tmp_path / "members"
    members.mkdir()
    for seed in range(4):
        state = {k: v.contiguous() for k, v in _member(seed).items()}
        save_file(state, members / f"cnn-{seed}.safetensors")
    study = {
        "name": "digits",
        "output_dir": str(tmp_path / "out"),
        "model": {"kind": "test-cnn", "pretrained": "none", "label_order": list(CLASSES)},
        "population": {"dir": str(members)},
        "splits": {
            "train": {"kind": "test-digits", "start": 0, "stop": 1000, "role": "train"},
            "test": {"kind": "test-digits", "start": 1000, "stop": 1300},
            "ood": {"kind": "test-digits", "start": 1300, "stop": 1500, "role": "ood"},
        },
        "paths": {"points": 4, "splits": ["test"]},
        "basins": {"split": "test", "ood": ["ood"], "bootstrap": 20},
        "eval": {"batchnorm_split": "train", "batchnorm_batches": 3},
    }
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(study))
    runner = StudyRunner(load_study(path), progress=False)
    result = runner.run()
    with Store(runner.study.store_path(), create=False) as store:
        paths = store.path_points()
        recorded = store.get_meta("splits")
    assert len(paths) == 6 * 4  # 4 members: 6 pairs × 4 points
    assert all("|bn=reestimate:train#" in k and k.endswith(":3") for k in set(paths["split"]))
    assert recorded is not None and '"sample_size": 300' in recorded
    assert result.distance.shape == (4, 4)
    assert result.report is not None and result.report.is_file()
    assert runner.study.splits["test"].kind == "test-digits"
