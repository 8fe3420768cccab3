"""ε-sharpness against hand arithmetic and an independent autograd reference."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import reference_sample

from modeconn.data.text import (
    PreparedSplit,
    SplitSpec,
    prepare_split,
)
from modeconn.engine.evaluate import Evaluator
from modeconn.errors import ConfigError, DataError, PopulationError
from modeconn.measures.sharpness import (
    AscentBatches,
    SharpnessConfig,
    SharpnessResult,
    ascent_perturbation,
    box_radius,
    epsilon_sharpness,
    sharpness_value,
)
from modeconn.models.hf import classifier_skeleton, load_tokenizer

LABELS = ["entailment", "neutral", "contradiction"]
N = 32  # examples per split: every test here is a few forward/backward passes

# A box of ε = 1e-2 with lr = 2000: on the perturbed tiny model below, the per-entry ratio
# |g| / (|x| + 1) has median ≈ 4e-6, so one step lr·g crosses the box edge ε(|x| + 1) for
# roughly half the entries with a gradient: the clamp is exercised on both sides.
EPS = 1e-2
LR = 2000.0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine a second thread mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, data_root: Path):
    tok = load_tokenizer(tiny_model_dir)
    pair = {"text_a": "premise", "label": "gold_label", "text_b": "hypothesis"}
    mnli = SplitSpec(
        "mnli", data_root / "mnli/dev_matched.tsv", **pair, sample_size=N, sample_seed=1
    )
    hans = SplitSpec(
        "hans_lo",
        data_root / "hans/eval.tsv",
        "sentence1",
        "gold_label",
        "sentence2",
        where={"heuristic": ("lexical_overlap",)},
        classes={"entailment": ("entailment",), "non-entailment": ("neutral", "contradiction")},
        sample_size=N,
        sample_seed=2,
    )
    # a small token budget gives several length-sorted batches of different widths
    splits = {s.name: (s, prepare_split(s, tok, LABELS, max_tokens=300)) for s in (mnli, hans)}
    model = classifier_skeleton(tiny_model_dir, LABELS)
    return tok, splits, model


def _member(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A member: the skeleton's weights plus seeded noise, so the loss has a slope."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (v + 0.05 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }


def _evaluator(model: torch.nn.Module, state: dict[str, torch.Tensor]):
    ev = Evaluator(copy.deepcopy(model))  # the evaluator owns (and overwrites) its model
    return ev, ev.as_point(state, name="m")


# ---- the formula -------------------------------------------------------------------------


def test_sharpness_value_by_hand() -> None:
    # 100 · (0.8 − 0.5) / (1 + 0.5) = 30 / 1.5 = 20
    assert sharpness_value(0.5, 0.8) == pytest.approx(20.0, rel=1e-12)
    # 100 · (0.1 − 0) / (1 + 0) = 10
    assert sharpness_value(0.0, 0.1) == pytest.approx(10.0, rel=1e-12)
    # 100 · (3 − 1) / (1 + 1) = 100
    assert sharpness_value(1.0, 3.0) == 100.0
    # a failed ascent is reported as it is: 100 · (1 − 2) / (1 + 2) = −33.33…
    assert sharpness_value(2.0, 1.0) == pytest.approx(-100.0 / 3.0, rel=1e-12)
    assert isinstance(sharpness_value(np.float32(0.5), np.float64(0.5)), float)


@pytest.mark.parametrize(("loss", "top"), [(math.nan, 1.0), (1.0, math.inf), (-0.5, 1.0)])
def test_sharpness_value_refuses_impossible_losses(loss: float, top: float) -> None:
    with pytest.raises(DataError, match="ε-sharpness needs"):
        sharpness_value(loss, top)


def test_box_radius_by_hand() -> None:
    # ε(|x| + 1) with ε = 0.1: |−3|+1 = 4 → 0.4; 0+1 → 0.1; 0.5+1 → 0.15; 2+1 → 0.3
    got = box_radius([torch.tensor([-3.0, 0.0, 0.5]), torch.tensor([[2.0]])], 0.1)
    torch.testing.assert_close(got[0], torch.tensor([0.4, 0.1, 0.15]))
    torch.testing.assert_close(got[1], torch.tensor([[0.3]]))


# ---- an independent reference: one step, whole sample, plain autograd --------------------


def _reference(model, state, tok, spec, *, epsilon: float, lr: float):
    """One ascent step by hand in float64: a fresh model copy, the sample in file order."""
    ref = copy.deepcopy(model).double().eval()
    ref.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    chosen, enc = reference_sample(tok, spec)
    if spec.classes:  # HANS: entailment logit, and max(neutral, contradiction)
        target = torch.tensor([0 if e.label == "entailment" else 1 for e in chosen])
    else:
        target = torch.tensor([LABELS.index(e.label) for e in chosen])

    def loss_fn() -> torch.Tensor:
        logits = ref(**enc).logits
        if spec.classes:
            logits = torch.stack([logits[:, 0], logits[:, 1:].amax(dim=1)], dim=1)
        return F.cross_entropy(logits, target)

    params = list(ref.parameters())
    for p in params:
        p.requires_grad_(True)
    loss0 = loss_fn()
    grads = torch.autograd.grad(loss0, params)
    x = [p.detach().clone() for p in params]
    y = []
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            r = epsilon * (p.abs() + 1)
            step = torch.minimum(torch.maximum(lr * g, -r), r)  # clamp(lr·g, −r, r)
            y.append(step)
            p.add_(step)
        loss1 = loss_fn()
    names = [n for n, _ in ref.named_parameters()]
    phi = 100 * (loss1.item() - loss0.item()) / (1 + loss0.item())
    return {
        "phi": phi,
        "loss": loss0.item(),
        "max_loss": loss1.item(),
        "y": dict(zip(names, y, strict=True)),
        "x": dict(zip(names, x, strict=True)),
        "g": dict(zip(names, grads, strict=True)),
    }


def _one_step(**kw) -> SharpnessConfig:
    # batch_size and examples above the sample: the one batch is the whole sample
    return SharpnessConfig(steps=1, accumulate=1, batch_size=4 * N, examples=4 * N, **kw)


@pytest.mark.parametrize("split_name", ["mnli", "hans_lo"])
def test_one_step_matches_an_autograd_reference(setup, split_name: str) -> None:
    tok, splits, model = setup
    spec, split = splits[split_name]
    state = _member(model, 1)
    want = _reference(model, state, tok, spec, epsilon=EPS, lr=LR)
    ev, point = _evaluator(model, state)
    config = _one_step(epsilon=EPS, lr=LR)

    got = epsilon_sharpness(ev, point, split, config=config)
    # float32 engine vs float64 reference: the losses agree to ~1e-8 and φ (a difference
    # of ~2 % of 1 + L) to ~1e-6 of itself; the tolerances leave a margin of 100
    assert got.loss == pytest.approx(want["loss"], rel=1e-6)
    assert got.max_loss == pytest.approx(want["max_loss"], rel=1e-6)
    assert got.value == pytest.approx(want["phi"], rel=1e-4)
    assert got.value > 0.1  # the step really climbed
    assert got.n_examples == N and got.ascent_examples == N and got.split == split.key

    # the perturbation itself, entry by entry
    y = dict(zip(ev.keys, ascent_perturbation(ev, point, split, config=config), strict=True))
    clamped = free = 0
    for name, want_y in want["y"].items():
        r = EPS * (want["x"][name].abs() + 1)
        torch.testing.assert_close(y[name].double(), want_y, rtol=1e-3, atol=1e-4 * r.min().item())
        moving = want["g"][name] != 0
        on_edge = (want_y.abs() >= r * (1 - 1e-9)) & moving
        clamped += int(on_edge.sum())
        free += int((moving & ~on_edge).sum())
    # both sides of the clamp were exercised, or the test would not check it
    assert clamped > 1000 and free > 1000


def test_gradients_of_accumulated_batches_add_up(setup) -> None:
    # accumulate = 2 with the whole sample as each batch sums two equal gradients: the
    # same step as accumulate = 1 at twice the learning rate (the paper's code sums them)
    _, splits, model = setup
    _, split = splits["mnli"]
    state = _member(model, 1)
    ev, point = _evaluator(model, state)
    two = SharpnessConfig(
        steps=1, accumulate=2, batch_size=4 * N, examples=4 * N, epsilon=EPS, lr=LR / 2
    )
    summed = epsilon_sharpness(ev, point, split, config=two)
    single = epsilon_sharpness(ev, point, split, config=_one_step(epsilon=EPS, lr=LR))
    assert summed.value == pytest.approx(single.value, rel=1e-4)


def test_tiny_epsilon_gives_the_first_order_value(setup) -> None:
    # With ε → 0 one saturating step sets y = sign(g)·ε(|x| + 1), and
    # L(x + y) − L(x) ≈ ε·Σ|g|(|x| + 1): φ → 0 linearly in ε. With lr = 1000 the step
    # lr·|g| passes the edge for all entries with |g|/(|x|+1) > 1e-9 (~all that move).
    tok, splits, model = setup
    spec, split = splits["mnli"]
    state = _member(model, 1)
    eps = 1e-6
    want = _reference(model, state, tok, spec, epsilon=eps, lr=1000.0)
    slope = sum(
        float((want["g"][n].abs() * (want["x"][n].abs() + 1)).sum()) for n in want["g"]
    )  # Σ|g|(|x| + 1) ≈ 3.5 here
    first_order = 100 * eps * slope / (1 + want["loss"])  # ≈ 1.7e-4
    ev, point = _evaluator(model, state)
    got = epsilon_sharpness(ev, point, split, config=_one_step(epsilon=eps, lr=1000.0))
    assert 0 < got.value < 1e-3
    # float32 weights resolve x + y to ~6 % per entry at this ε, and the second-order
    # term is ~ε² smaller; the total lands within ~0.5 % of the first-order value
    assert got.value == pytest.approx(first_order, rel=0.02)


# ---- the box, φ ≥ 0, determinism, the evaluator left as found ---------------------------


def test_many_steps_stay_inside_the_box_and_climb(setup) -> None:
    _, splits, model = setup
    _, split = splits["hans_lo"]
    state = _member(model, 2)
    ev, point = _evaluator(model, state)
    config = SharpnessConfig(
        epsilon=EPS, lr=LR, steps=4, accumulate=2, batch_size=8, examples=24, seed=5
    )
    y = ascent_perturbation(ev, point, split, config=config)
    on_edge = inside = 0
    for key, x, yk in zip(ev.keys, point, y, strict=True):
        r = EPS * (state[key].double().abs() + 1)  # the box, from the member's own weights
        over = yk.double().abs() - r
        assert float(over.max()) <= 1e-6 * float(r.max()), key  # float32 rounding of r only
        on_edge += int((over > -1e-9).sum())
        inside += int(((yk != 0) & (over <= -1e-9)).sum())
        assert yk.shape == x.shape
    assert on_edge > 1000 and inside > 100  # many entries pushed to the edge, some not
    result = epsilon_sharpness(ev, point, split, config=config)
    # y = 0 is in the box, so max L(x + y) ≥ L(x); four steps of ascent did climb
    assert result.value > 0 and result.max_loss > result.loss


def test_same_seed_same_value_and_the_evaluator_is_left_as_found(setup) -> None:
    _, splits, model = setup
    _, split = splits["mnli"]
    ev, point = _evaluator(model, _member(model, 1))
    other = ev.as_point(_member(model, 3), name="other")
    ev.set_point(other)  # the evaluator holds a different point when the call starts
    before = ev.evaluate(split).loss
    config = SharpnessConfig(
        epsilon=EPS, lr=LR, steps=3, accumulate=1, batch_size=8, examples=24, seed=7
    )

    first = epsilon_sharpness(ev, point, split, config=config)
    for got, want in zip(ev.point.values(), other, strict=True):
        assert torch.equal(got, want)
    assert all(not p.requires_grad and p.grad is None for p in ev.model.parameters())
    assert not ev.model.training
    assert ev.evaluate(split).loss == before
    assert ev.counts[("sharpness", "mnli")] == 2  # L(x) and L(x + y), through the engine
    assert first.loss == ev.evaluate_member(point, split).loss  # the engine's own loss

    again = epsilon_sharpness(ev, point, split, config=config)
    assert again.value == first.value and again.max_loss == first.max_loss
    reseeded = SharpnessConfig(**{**config.to_dict(), "seed": 8})
    assert epsilon_sharpness(ev, point, split, config=reseeded).value != first.value


def test_a_point_aliasing_the_resident_weights_is_not_corrupted(setup) -> None:
    _, splits, model = setup
    _, split = splits["mnli"]
    ev, point = _evaluator(model, _member(model, 1))
    config = SharpnessConfig(epsilon=EPS, lr=LR, steps=2, accumulate=1, batch_size=16)
    want = epsilon_sharpness(ev, point, split, config=config)
    ev.set_point(point)
    resident = list(ev.point.values())  # the engine's own tensors, handed back as the point
    got = epsilon_sharpness(ev, resident, split, config=config)
    assert got.value == want.value
    for r, p in zip(resident, point, strict=True):
        assert torch.equal(r, p)


def test_inference_mode_splits_and_callers_are_handled(setup) -> None:
    # an engine on a GPU moves the split inside inference mode: its tensors cannot be
    # saved for backward, so the ascent must build its own batches
    _, splits, model = setup
    _, split = splits["mnli"]
    ev, point = _evaluator(model, _member(model, 1))
    config = _one_step(epsilon=EPS, lr=LR)
    want = epsilon_sharpness(ev, point, split, config=config)
    with torch.inference_mode():
        frozen = PreparedSplit(
            split.spec,
            split.classes,
            split.groups,
            [{k: v.clone() for k, v in b.items()} for b in split.batches],
            split.labels.clone(),
            split.order,
            split.n_tokens,
            split.n_padded,
            split.fingerprint,
        )
        assert frozen.labels.is_inference()
        got = epsilon_sharpness(ev, point, frozen, config=config)
    assert got.value == pytest.approx(want.value, rel=1e-6)


@pytest.mark.parametrize("bucket", [1, 4])
def test_each_epoch_uses_every_pool_example_once(setup, bucket: int) -> None:
    _, splits, _ = setup
    _, split = splits["mnli"]
    lengths = torch.cat([b["attention_mask"].sum(dim=1) for b in split.batches])  # batch order
    tokens = [row for b in split.batches for row in b["input_ids"].tolist()]
    key = {tuple(row[: int(n)]): i for i, (row, n) in enumerate(zip(tokens, lengths, strict=True))}
    assert len(key) == N  # the rows are distinct: a row's tokens name its example

    def epochs(examples: int) -> list[list[list[int]]]:
        sampler = AscentBatches(
            split, torch.device("cpu"), batch_size=8, examples=examples, seed=3, bucket=bucket
        )
        per_epoch = examples // 8
        out: list[list[list[int]]] = []
        for _ in range(2):
            epoch = []
            for _ in range(per_epoch):
                batch, labels = next(sampler)
                rows = [
                    key[tuple(r[: int(m.sum())])]
                    for r, m in zip(
                        batch["input_ids"].tolist(), batch["attention_mask"], strict=True
                    )
                ]
                # trimmed to the longest row, labels follow their rows
                assert batch["input_ids"].shape[1] == int(lengths[rows].max())
                assert labels.tolist() == split.labels[rows].tolist()
                epoch.append(rows)
            out.append(epoch)
        return out

    whole = epochs(N)
    for epoch in whole:
        assert sorted(i for b in epoch for i in b) == list(range(N))
    assert whole[0] != whole[1]  # a fresh permutation per epoch
    if bucket == 4:  # the whole pool is one chunk: batches are consecutive length ranges
        spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in whole[0])
        assert all(hi <= lo for (_, hi), (lo, _) in itertools.pairwise(spans))
    sub = epochs(24)  # a seeded subset of 24 is the pool: the same 24 in every epoch
    assert len({i for b in sub[0] for i in b}) == 24
    assert {i for b in sub[0] for i in b} == {i for b in sub[1] for i in b}


# ---- configuration and records -----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epsilon", 0.0),
        ("epsilon", -1e-5),
        ("epsilon", math.nan),
        ("epsilon", "1e-5"),
        ("lr", 0.0),
        ("lr", math.inf),
        ("steps", 0),
        ("steps", 2.5),
        ("steps", True),
        ("batch_size", 0),
        ("accumulate", -1),
        ("examples", 0),
        ("seed", -1),
        ("bucket", 0),
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"analyses\.sharpness\.{field} must be"):
        SharpnessConfig(**{field: value})


def test_config_defaults_records_and_fingerprint() -> None:
    config = SharpnessConfig()
    # the paper's values (Juneja et al. 2023, App. F.4)
    assert (config.epsilon, config.steps, config.lr) == (1e-5, 8192, 8e-5)
    assert (config.batch_size, config.accumulate, config.examples) == (32, 4, 32768)
    assert SharpnessConfig.from_dict(config.to_dict()) == config
    assert SharpnessConfig.from_dict({"steps": 20}) == SharpnessConfig(steps=20)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['step'\]"):
        SharpnessConfig.from_dict({"step": 20})
    assert SharpnessConfig(lr=1).fingerprint() == SharpnessConfig(lr=1.0).fingerprint()
    prints = {config.fingerprint()}
    for changed in (
        {"epsilon": 2e-5},
        {"steps": 1},
        {"lr": 1e-4},
        {"batch_size": 16},
        {"accumulate": 1},
        {"examples": 256},
        {"seed": 1},
        {"bucket": 8},
    ):
        prints.add(SharpnessConfig(**changed).fingerprint())
    assert len(prints) == 9  # every field is in the key

    result = SharpnessResult(
        value=1.5,
        loss=0.3,
        max_loss=0.32,
        steps=20,
        epsilon=1e-5,
        n_examples=256,
        seconds=2.0,
        split="mnli#abc",
        ascent_examples=256,
    )
    assert SharpnessResult.from_dict(result.to_dict()) == result
    with pytest.raises(DataError, match=r"missing keys \['max_loss'\]"):
        SharpnessResult.from_dict({k: v for k, v in result.to_dict().items() if k != "max_loss"})


def test_engine_options_that_cannot_hold_the_box_are_refused(setup) -> None:
    _, splits, model = setup
    _, split = splits["mnli"]
    state = _member(model, 1)
    half = Evaluator(copy.deepcopy(model), dtype="bfloat16")
    with pytest.raises(ConfigError, match=r"eval\.dtype float32; got bfloat16"):
        epsilon_sharpness(half, half.as_point(state, name="m"), split, config=SharpnessConfig())
    ev, point = _evaluator(model, state)
    with pytest.raises(ConfigError, match=r"analyses\.sharpness\.epsilon = 1e-08"):
        epsilon_sharpness(ev, point, split, config=SharpnessConfig(epsilon=1e-8))
    with pytest.raises(PopulationError, match=r"has 3 tensors.*Evaluator\.as_point"):
        epsilon_sharpness(ev, point[:3], split, config=SharpnessConfig())
