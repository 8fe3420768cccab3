"""Curves beyond the line: the curve maths by hand, bend training, resuming, any model.

* the weights of a quadratic (and cubic) Bézier curve and of a polygonal chain at t = 0,
  ½, 1 and elsewhere (t, the curve's own parameter, is 0 at A), against hand arithmetic;
  their properties (convex weights, the straight line reproduced by bends on it) for
  every t;
* one α everywhere: along an evaluated curve α = 1 is member A and α = 0 member B, as on
  the sweep's lines; a straight curve (its bend at the line's midpoint) has the linear
  path's losses at the same α, and the line it is compared with *is* the sweep's;
* the step on a bend is the chain rule's: one plain SGD step equals −lr·cₖ(t)·∇L(θ(t)),
  with the gradient taken by autograd through the curve's formula, independently;
* on a small real problem (8×8 digits, an MLP and a copy of it with its hidden units
  permuted, the same function) the trained midpoint lowers the curve's maximum loss
  below the straight line's, for the Bézier curve and for the chain;
* the same code runs a tiny ``BertForSequenceClassification`` (dict inputs, built from a
  config, no download) and a CNN with BatchNorm, whose statistics are re-estimated at
  every α exactly as an independent copy of the model does it;
* a rerun loads the saved bends and trains nothing; other settings train anew;
* members of different architectures are refused with one line.
"""

from __future__ import annotations

import copy
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from tolerances import ATOL, FLOAT32_LOSS_ATOL
from torch import nn
from torch.func import functional_call

from modeconn.data.base import SampleInfo
from modeconn.data.tensors import TensorSplit, tensor_split
from modeconn.engine.curves import (
    BendConfig,
    bend_file,
    bend_fingerprint,
    check_same_architecture,
    ensure_bends,
    evaluate_curve,
    train_bends,
)
from modeconn.engine.evaluate import Evaluator
from modeconn.engine.paths import (
    ALPHA_AT_A,
    bend_gradient_scales,
    curve_coefficients,
    curve_point,
    curve_t,
    line_bends,
)
from modeconn.errors import ConfigError, PopulationError
from modeconn.measures.barriers import barrier_height
from modeconn.measures.sharpness import AscentBatches

CLASSES = tuple(str(d) for d in range(10))
ALPHAS = tuple(float(a) for a in np.linspace(0.0, 1.0, 11))


# --------------------------------------------------------------------------- the maths


@pytest.mark.parametrize(
    ("kind", "bends", "t", "expected"),
    [
        ("bezier", 1, 0.0, [1, 0, 0]),
        ("bezier", 1, 1.0, [0, 0, 1]),
        ("bezier", 1, 0.5, [0.25, 0.5, 0.25]),  # (½)², 2·½·½, (½)²
        ("bezier", 1, 0.3, [0.49, 0.42, 0.09]),  # 0.7², 2·0.3·0.7, 0.3²
        ("bezier", 2, 0.5, [1 / 8, 3 / 8, 3 / 8, 1 / 8]),  # cubic Bernstein at ½
        ("chain", 1, 0.0, [1, 0, 0]),
        ("chain", 1, 0.25, [0.5, 0.5, 0]),  # half way from A to the bend
        ("chain", 1, 0.8, [0, 0.4, 0.6]),  # t = 1.6: 0.6 of the way from the bend to B
        ("chain", 1, 1.0, [0, 0, 1]),
        ("chain", 2, 0.5, [0, 0.5, 0.5, 0]),  # t = 1.5, between the two bends
    ],
)
def test_curve_weights_by_hand(kind: str, bends: int, t: float, expected: list) -> None:
    got = curve_coefficients(kind, bends, t)
    np.testing.assert_allclose(got, expected, atol=ATOL)
    if t in (0.0, 1.0):
        assert got.tolist() == [float(x) for x in expected]  # exact at the ends


def test_gradient_scales_by_hand() -> None:
    assert bend_gradient_scales("bezier", 1, 0.3)[0] == pytest.approx(2 * 0.3 * 0.7, abs=ATOL)
    assert bend_gradient_scales("bezier", 1, 0.5)[0] == pytest.approx(0.5, abs=ATOL)
    assert bend_gradient_scales("bezier", 1, 0.0)[0] == 0.0  # the ends never move a bend
    assert bend_gradient_scales("chain", 1, 0.3)[0] == pytest.approx(0.6, abs=ATOL)  # t = 0.6
    assert bend_gradient_scales("chain", 1, 0.5)[0] == 1.0  # at the bend: all of it
    np.testing.assert_allclose(bend_gradient_scales("chain", 2, 0.5), [0.5, 0.5], atol=ATOL)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["bezier", "chain"]),
    bends=st.integers(1, 5),
    t=st.floats(0.0, 1.0),
)
def test_weights_are_convex_and_reproduce_the_line(kind: str, bends: int, t: float) -> None:
    c = curve_coefficients(kind, bends, t)
    assert (c >= 0).all() and c.sum() == pytest.approx(1.0, abs=1e-12)
    # bends on the line at t = k / (bends + 1): the curve is the line, θ(t) = A + t(B − A)
    positions = np.array([0.0, *line_bends(bends), 1.0])
    assert float(c @ positions) == pytest.approx(t, abs=1e-12)


def test_the_curve_parameter_is_one_minus_alpha() -> None:
    """α (1 at A) is what results carry; t (0 at A) is the curve's maths: t = 1 − α, exact
    at the ends, so α = 1 gives exactly A's weights [1, 0, 0] and α = 0 exactly B's."""
    assert curve_t(1.0) == 0.0 and curve_t(0.0) == 1.0 and curve_t(0.25) == 0.75
    assert curve_coefficients("bezier", 1, curve_t(1.0)).tolist() == [1.0, 0.0, 0.0]
    assert curve_coefficients("chain", 2, curve_t(0.0)).tolist() == [0.0, 0.0, 0.0, 1.0]
    # the mechanistic paper's form in α: α²θA + 2α(1 − α)θ₁ + (1 − α)²θB
    np.testing.assert_allclose(
        curve_coefficients("bezier", 1, curve_t(0.3)), [0.09, 0.42, 0.49], atol=ATOL
    )
    assert ALPHA_AT_A == 1.0


def test_bad_curve_settings_are_named() -> None:
    with pytest.raises(ConfigError, match=r"analyses\.curves\.kind"):
        curve_coefficients("spline", 1, 0.5)
    with pytest.raises(ConfigError, match=r"analyses\.curves\.bends"):
        curve_coefficients("bezier", 0, 0.5)
    with pytest.raises(ConfigError, match=r"analyses\.curves\.steps"):
        BendConfig(steps=0)
    with pytest.raises(ConfigError, match=r"analyses\.curves\.lr"):
        BendConfig(lr=-1.0)


def test_point_on_the_curve() -> None:
    g = torch.Generator().manual_seed(0)
    a, m, b = ([torch.randn(3, 4, generator=g), torch.randn(5, generator=g)] for _ in range(3))
    for kind in ("bezier", "chain"):
        assert all(
            torch.equal(x, y) for x, y in zip(curve_point([a, m, b], kind, 0.0), a, strict=True)
        )
        assert all(
            torch.equal(x, y) for x, y in zip(curve_point([a, m, b], kind, 1.0), b, strict=True)
        )
    half = curve_point([a, m, b], "bezier", 0.5)
    for h, x, y, z in zip(half, a, m, b, strict=True):
        torch.testing.assert_close(h, 0.25 * x + 0.5 * y + 0.25 * z)
    assert all(
        torch.equal(h, y) for h, y in zip(curve_point([a, m, b], "chain", 0.5), m, strict=True)
    )


# --------------------------------------------------------------------------- a small problem


class MLP(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    return x, torch.tensor(d.target, dtype=torch.long)


def digits_split(name: str, rows: slice, batch_size: int = 200) -> TensorSplit:
    x, y = _digits()
    role = "train" if name == "train" else "id"
    return tensor_split(
        SampleInfo(name=name, role=role), {"x": x[rows]}, y[rows], classes=CLASSES,
        batch_size=batch_size,
    )  # fmt: skip


@cache
def _mlp_members() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A trained MLP, and the same function with its hidden units permuted."""
    x, y = _digits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x[:600]), y[:600]).backward()
        opt.step()
    a = {k: v.detach().clone() for k, v in model.state_dict().items()}
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    b = dict(a)
    b["fc1.weight"], b["fc1.bias"] = a["fc1.weight"][perm], a["fc1.bias"][perm]
    b["fc2.weight"] = a["fc2.weight"][:, perm]
    return a, b


def _engine() -> tuple[Evaluator, list[torch.Tensor], list[torch.Tensor]]:
    ev = Evaluator(MLP())
    a, b = _mlp_members()
    return ev, ev.as_point(a, name="a"), ev.as_point(b, name="b")


def test_set_weighted_writes_the_curve_point() -> None:
    ev, a, b = _engine()
    m = [torch.lerp(x, y, 0.3) + 0.1 for x, y in zip(a, b, strict=True)]
    ev.set_weighted([a, m, b], curve_coefficients("bezier", 1, 0.4).tolist())
    for got, want in zip(ev.point.values(), curve_point([a, m, b], "bezier", 0.4), strict=True):
        torch.testing.assert_close(got, want)
    ev.set_weighted([a, m, b], [0.0, 0.0, 1.0])
    assert all(torch.equal(x, y) for x, y in zip(ev.point.values(), b, strict=True))


def test_one_step_on_the_bend_is_the_chain_rule() -> None:
    """One SGD step (no momentum, lr at its start value) moves the midpoint by
    −lr · 2t(1 − t) · ∇L(θ(t)), the gradient here taken by autograd *through* the curve."""
    ev, a, b = _engine()
    split = digits_split("train", slice(0, 256))
    cfg = BendConfig(steps=1, lr=0.1, momentum=0.0, batch_size=256, seed=3)
    before = [p.clone() for p in ev.point.values()]
    got = train_bends(ev, a, b, split, cfg).bends[0]
    # the same t and batch the step drew (the batch is the whole split, shuffled)
    t = float(torch.rand((), generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    batch, labels = next(AscentBatches(split, ev.device, batch_size=256, examples=256, seed=3))
    mid = [torch.lerp(x, y, 0.5).requires_grad_(True) for x, y in zip(a, b, strict=True)]
    theta = {
        k: (1 - t) ** 2 * x + 2 * t * (1 - t) * m + t**2 * y
        for k, x, m, y in zip(ev.keys, a, mid, b, strict=True)
    }
    loss = F.cross_entropy(functional_call(MLP(), theta, kwargs=batch), labels)
    grads = torch.autograd.grad(loss, mid)
    for g, m, new in zip(grads, mid, got, strict=True):
        torch.testing.assert_close(new, m.detach() - 0.1 * g, rtol=1e-5, atol=1e-6)
    # the engine's resident point is as it was
    assert all(torch.equal(x, y) for x, y in zip(ev.point.values(), before, strict=True))


@pytest.mark.parametrize("kind", ["bezier", "chain"])
def test_a_trained_bend_lowers_the_maximum_loss(kind: str) -> None:
    ev, a, b = _engine()
    train = digits_split("train", slice(0, 1200))
    test = digits_split("test", slice(1200, None))
    cfg = BendConfig(kind=kind, steps=120, lr=0.05, batch_size=64, seed=0)
    trained = train_bends(ev, a, b, train, cfg)
    res = evaluate_curve(ev, [a, *trained.bends, b], test, ALPHAS, kind=kind)
    line = [r.loss for r in res.line]
    curve = [r.loss for r in res.curve]
    assert curve[0] == line[0] and curve[-1] == line[-1]  # the same ends
    assert barrier_height(line) > 0.5, "the permuted copy should sit behind a barrier"
    assert max(curve) < 0.5 * max(line), (max(curve), max(line))
    assert barrier_height(curve) < 0.2 * barrier_height(line)
    assert ev.counts[("curve", "test")] == 2 * len(ALPHAS) - 2  # ends evaluated once


def test_alpha_one_is_member_a_and_alpha_zero_member_b() -> None:
    """On a trained curve, α = 1 has member A's own loss and α = 0 member B's — exactly,
    the very numbers the engine gives each member — and α runs the same way on the line."""
    ev, a, b = _engine()
    train = digits_split("train", slice(0, 400))
    test = digits_split("test", slice(1200, 1500))
    trained = train_bends(ev, a, b, train, BendConfig(steps=5, batch_size=64, seed=0))
    loss_a = ev.evaluate_member(a, test).loss
    # A and B must differ for the test to tell the ends apart: B is A's permuted copy,
    # so scale B's output layer (sharper logits: a different function, a different loss)
    b = [p * 1.5 if k == "fc2.weight" else p for k, p in zip(ev.keys, b, strict=True)]
    loss_b = ev.evaluate_member(b, test).loss
    assert abs(loss_a - loss_b) > 1e-3
    for kind in ("bezier", "chain"):
        res = evaluate_curve(ev, [a, *trained.bends, b], test, (0.0, 0.5, 1.0), kind=kind)
        assert res.alphas == [0.0, 0.5, 1.0]
        assert res.curve[-1].loss == loss_a and res.line[-1].loss == loss_a  # α = 1: A
        assert res.curve[0].loss == loss_b and res.line[0].loss == loss_b  # α = 0: B


@pytest.mark.parametrize("kind", ["bezier", "chain"])
def test_a_straight_curve_is_the_linear_path_at_the_same_alpha(kind: str) -> None:
    """A curve whose bend sits at the midpoint of the line *is* the line: at every α its
    loss is the sweep's linear-path loss at that α (Evaluator.evaluate_lerp, the sweep's
    own call, α·θA + (1 − α)·θB), up to float32 rounding of the other order of sums; the
    line evaluate_curve compares with is the sweep's point, bit for bit. A and B are far
    apart (a barrier of > 0.5 between them) and the path is not symmetric, so a curve read
    backwards (α ↔ 1 − α) would miss by far more than the tolerance."""
    ev, a, b = _engine()
    b = [p * 1.5 if k == "fc2.weight" else p for k, p in zip(ev.keys, b, strict=True)]
    test = digits_split("test", slice(1200, 1500))
    mid = [torch.lerp(x, y, 0.5) for x, y in zip(a, b, strict=True)]
    res = evaluate_curve(ev, [a, mid, b], test, ALPHAS, kind=kind)
    sweep = [ev.evaluate_lerp(a, b, alpha, test).loss for alpha in ALPHAS]
    assert [r.loss for r in res.line] == sweep  # the same point, the same numbers
    np.testing.assert_allclose([r.loss for r in res.curve], sweep, atol=FLOAT32_LOSS_ATOL)
    backwards = sweep[::-1]
    assert max(abs(x - y) for x, y in zip(sweep, backwards, strict=True)) > 100 * FLOAT32_LOSS_ATOL


# --------------------------------------------------------------------------- resuming


def test_a_rerun_loads_the_bends_and_trains_nothing(tmp_path: Path) -> None:
    ev, a, b = _engine()
    train = digits_split("train", slice(0, 400))
    cfg = BendConfig(steps=5, batch_size=32)
    path = bend_file(tmp_path, "a" * 64, "b" * 64, bend_fingerprint(cfg, train.key, "float32"))
    first = ensure_bends(ev, a, b, train, cfg, path)
    assert first.trained and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    stamp = path.stat().st_mtime_ns
    again = ensure_bends(ev, a, b, train, cfg, path)
    assert not again.trained and path.stat().st_mtime_ns == stamp
    for x, y in zip(first.bends[0], again.bends[0], strict=True):
        assert torch.equal(x, y)
    assert again.losses == pytest.approx(first.losses)
    other = bend_fingerprint(BendConfig(steps=6, batch_size=32), train.key, "float32")
    assert other != bend_fingerprint(cfg, train.key, "float32")
    assert bend_fingerprint(cfg, "other#key", "float32") != bend_fingerprint(
        cfg, train.key, "float32"
    )


def test_training_is_seeded() -> None:
    ev, a, b = _engine()
    train = digits_split("train", slice(0, 400))
    cfg = BendConfig(steps=4, batch_size=32, seed=7)
    one, two = train_bends(ev, a, b, train, cfg), train_bends(ev, a, b, train, cfg)
    assert all(torch.equal(x, y) for x, y in zip(one.bends[0], two.bends[0], strict=True))


# --------------------------------------------------------------------------- any model


def test_a_tiny_bert_with_dict_inputs() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=3,
    )  # fmt: skip
    states = []
    for seed in (0, 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            states.append(BertForSequenceClassification(config).state_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        skeleton = BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    n, width = 48, 12
    inputs = {
        "input_ids": torch.randint(1, 50, (n, width), generator=g),
        "attention_mask": torch.ones(n, width, dtype=torch.long),
        "token_type_ids": torch.zeros(n, width, dtype=torch.long),
    }
    labels = torch.randint(0, 3, (n,), generator=g)
    split = tensor_split(SampleInfo("toks"), inputs, labels, classes=("e", "n", "c"), batch_size=16)
    ev = Evaluator(skeleton)
    a, b = ev.as_point(states[0], name="a"), ev.as_point(states[1], name="b")
    before = [p.clone() for p in ev.point.values()]
    trained = train_bends(ev, a, b, split, BendConfig(steps=4, batch_size=8, lr=0.1))
    assert all(torch.equal(x, y) for x, y in zip(ev.point.values(), before, strict=True))
    moved = [
        not torch.equal(m, torch.lerp(x, y, 0.5))
        for m, x, y in zip(trained.bends[0], a, b, strict=True)
    ]
    assert any(moved)
    res = evaluate_curve(ev, [a, *trained.bends, b], split, (0.0, 0.5, 1.0), kind="bezier")
    # α = 1 is A and α = 0 is B, as on the sweep's lines
    assert res.curve[-1].loss == pytest.approx(ev.evaluate_member(a, split).loss, abs=1e-6)
    assert res.curve[0].loss == pytest.approx(ev.evaluate_member(b, split).loss, abs=1e-6)
    assert all(math.isfinite(r.loss) for r in res.curve + res.line)


class BNNet(nn.Module):
    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _bn_member(seed: int) -> dict[str, torch.Tensor]:
    x, y = _digits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BNNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for i in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x[i * 50 : (i + 1) * 50]), y[i * 50 : (i + 1) * 50]).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_cnn_with_batchnorm_reestimates_at_every_alpha() -> None:
    bn = digits_split("train", slice(0, 300), batch_size=100)
    test = digits_split("test", slice(1500, 1700))
    ev = Evaluator(BNNet(), batchnorm="reestimate", batchnorm_split=bn)
    sa, sb = _bn_member(0), _bn_member(1)
    a, b = ev.as_point(sa, name="a"), ev.as_point(sb, name="b")
    before = [p.clone() for p in ev.point.values()]
    trained = train_bends(ev, a, b, bn, BendConfig(steps=10, batch_size=50, lr=0.05))
    assert all(
        torch.equal(x, y) for x, y in zip(ev.point.values(), before, strict=True)
    )  # stats too
    nodes = [a, *trained.bends, b]
    alphas = (0.0, 0.3, 0.5, 1.0)
    res = evaluate_curve(ev, nodes, test, alphas, kind="bezier")
    for alpha, got in zip(alphas, res.curve, strict=True):
        # independently: a fresh copy, the point by hand, statistics reset and re-estimated
        model = copy.deepcopy(BNNet())
        state = model.state_dict()
        point = curve_point(nodes, "bezier", curve_t(alpha))
        state.update({k: v for k, v in zip(ev.keys, point, strict=True)})
        model.load_state_dict(state)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
                m.reset_running_stats()
        model.train()
        with torch.no_grad():
            for batch in bn.batches:
                model(**batch)
            model.eval()
            want = F.cross_entropy(model(**test.batches[0]), test.labels).item()
        assert got.loss == pytest.approx(want, abs=FLOAT32_LOSS_ATOL), alpha


def test_members_of_different_architectures_are_refused() -> None:
    a = MLP().state_dict()
    b = MLP(hidden=16).state_dict()
    with pytest.raises(PopulationError) as err:
        check_same_architecture("seed-00", a, "wide-00", b)
    msg = str(err.value)
    assert "\n" not in msg
    assert "analyses.curves" in msg and "'seed-00'" in msg and "'wide-00'" in msg
    assert "fc1.bias" in msg and "(16,)" in msg and "(32,)" in msg


def test_the_interior_maximum_leaves_out_the_members_own_losses() -> None:
    """When a member's own loss is the path's highest, no bend can lower the maximum; the
    highest loss strictly between the members is what a trained bend changes."""
    from modeconn.analyses.curves import path_summary

    got = path_summary([0.0, 0.25, 0.5, 0.75, 1.0], [2.0, 1.5, 1.0, 0.7, 0.5])
    assert got["max_loss"] == 2.0
    assert got["interior_max_loss"] == 1.5
    assert got["mid_loss"] == 1.0
