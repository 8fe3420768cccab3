"""Curvature along a path (HVPs, finite differences, trace, eigenvalues) and the barrier forms.

References: a full Hessian from ``torch.autograd.functional.hessian``, numpy's ``eigvalsh``
and exact traces; quadratics (where every barrier form is exact) in float64; the
engine's own CNN with BatchNorm and the tiny text model in float32.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modeconn.data.base import SampleInfo
from modeconn.data.tensors import tensor_split
from modeconn.engine.evaluate import Evaluator
from modeconn.errors import ConfigError, DataError
from modeconn.measures import barrier_forms as bf
from modeconn.measures.curvature import (
    PathCurvature,
    curvature_along,
    curvature_fd,
    directional_derivative,
    hessian_vector_product,
    hutchinson_trace,
    loss_value,
    top_eigenvalues,
)
from modeconn.models.cnn import build_cnn, cnn_config

# float32 HVP vs float32 finite differences (rounding ε·|f|/h² plus h²·f''''/12)
FD_RTOL = 3e-2
FORM_ATOL = 1e-6  # the acceptance: every form exact on a quadratic


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- a quadratic


def _quadratic(seed: int, n: int = 6):
    """L(θ) = ½θᵀAθ + bᵀθ + c with A symmetric and indefinite (a ridge between minima)."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = (m + m.T) / 2
    b = torch.randn(n, generator=gen, dtype=torch.float64)

    def terms(p):
        x = p[0]
        yield 0.5 * x @ a @ x + b @ x + 0.3

    ta = [torch.randn(n, generator=gen, dtype=torch.float64)]
    tb = [torch.randn(n, generator=gen, dtype=torch.float64)]
    return terms, a, ta, tb


@pytest.mark.parametrize("seed", range(4))
def test_every_form_is_exact_on_a_quadratic(seed: int) -> None:
    terms, _, ta, tb = _quadratic(seed)
    delta = [tb[0] - ta[0]]

    def f(s: float) -> float:
        return loss_value(terms, [ta[0] + s * delta[0]])

    measured = bf.measured_barrier(f(0.0), f(0.5), f(1.0))
    grid = bf.uniform_grid(3)
    f2 = [curvature_along(terms, ta, delta, float(s)) for s in grid]
    d0 = directional_derivative(terms, ta, delta)
    d1 = directional_derivative(terms, tb, delta)
    assert bf.exact_form(grid, f2) == pytest.approx(measured, abs=FORM_ATOL)
    assert bf.midpoint_form(f2[1]) == pytest.approx(measured, abs=FORM_ATOL)
    assert bf.endpoint_form(d0, d1, f2[0], f2[2]) == pytest.approx(measured, abs=FORM_ATOL)


def test_the_forms_by_hand_on_a_parabola() -> None:
    # f(s) = −4s² + 4s: f(0) = f(1) = 0, f(½) = 1, so B = 1; f' = −8s + 4, f'' = −8
    assert bf.measured_barrier(0.0, 1.0, 0.0) == 1.0
    assert bf.midpoint_form(-8.0) == 1.0  # −⅛·(−8)
    assert bf.endpoint_form(4.0, -4.0, -8.0, -8.0) == 1.0  # ¼·8 + (1/16)(−16)
    assert bf.exact_form([0, 0.5, 1], [-8.0, -8.0, -8.0]) == 1.0  # −½·(−8)·¼


def test_midpoint_and_endpoint_forms_are_exact_on_a_cubic_but_not_a_quartic() -> None:
    # cubic f = s³: B = ⅛ − ½ = −3/8; f'' = 6s, f' = 3s²
    assert bf.midpoint_form(6 * 0.5) == pytest.approx(-3 / 8)
    assert bf.endpoint_form(0.0, 3.0, 0.0, 6.0) == pytest.approx(-3 / 8)
    # quartic f = s⁴: B = 1/16 − ½ = −7/16; f'' = 12s², f' = 4s³
    assert bf.midpoint_form(12 * 0.25) == pytest.approx(-3 / 8)  # misses by f''''/384 = 1/16
    assert bf.endpoint_form(0.0, 4.0, 0.0, 12.0) == pytest.approx(-1 / 4)
    # the exact form converges at the rate its error bound states
    for points in (5, 9, 17, 33):
        s = bf.uniform_grid(points)
        err = abs(bf.exact_form(s, 12 * s**2) - (-7 / 16))
        assert err <= bf.exact_form_error(s, 12 * s**2) * (1 + 1e-9)


def test_the_forms_refuse_bad_grids_and_values() -> None:
    with pytest.raises(DataError, match="odd number"):
        bf.uniform_grid(4)
    with pytest.raises(DataError, match="uniform"):
        bf.exact_form([0.0, 0.4, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(DataError, match="finite"):
        bf.midpoint_form(math.nan)


def test_trace_and_eigenvalues_of_a_quadratic() -> None:
    terms, a, ta, _ = _quadratic(7, n=12)
    eig = np.linalg.eigvalsh(a.numpy())
    top = top_eigenvalues(terms, ta, k=3, seed=0, tol=1e-10)
    np.testing.assert_allclose(top, eig[::-1][:3], rtol=1e-8)
    est = hutchinson_trace(terms, ta, samples=400, seed=3)
    assert est.low <= float(torch.trace(a)) <= est.high
    assert est.samples == 400 and est.to_dict()["seed"] == 3
    with pytest.raises(ConfigError, match="1 ≤ k < 12"):
        top_eigenvalues(terms, ta, k=12)


# --------------------------------------------------------------------------- HVP vs Hessian


class _TinyNet(nn.Module):
    """3 → 4 → 3 with tanh: small enough for a full Hessian (31 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def _tensor_split(x: torch.Tensor, y: torch.Tensor, classes: int, batch_size: int = 8):
    info = SampleInfo(name="toy", sample_size=None)
    return tensor_split(
        info, {"x": x}, y, classes=tuple(f"c{i}" for i in range(classes)), batch_size=batch_size
    )


def _tiny_engine(seed: int = 0):
    torch.manual_seed(seed)  # the tests' own module init; the library never seeds
    net = _TinyNet()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 3, generator=gen)
    y = torch.randint(0, 3, (20,), generator=gen)
    split = _tensor_split(x, y, 3)
    ev = Evaluator(copy.deepcopy(net))
    state = net.state_dict()
    a = ev.as_point(state, name="a")
    b = ev.as_point(
        {k: v + 0.7 * torch.randn(v.shape, generator=gen) for k, v in state.items()}, name="b"
    )
    return net, ev, split, a, b, x, y


def test_hvp_equals_a_full_hessian_on_a_tiny_model() -> None:
    net, ev, split, a, b, x, y = _tiny_engine()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    sizes = [math.prod(s) for s in shapes]

    def flat_loss(theta: torch.Tensor) -> torch.Tensor:
        parts = dict(
            zip(
                names,
                (t.reshape(s) for t, s in zip(theta.split(sizes), shapes, strict=True)),
                strict=True,
            )
        )
        logits = torch.func.functional_call(net, parts, (x.double(),))
        return nn.functional.cross_entropy(logits, y)

    with PathCurvature(ev, a, b, split) as pc:
        for s in (0.0, 0.3, 1.0):
            point = pc.point(s)
            theta = torch.cat([p.reshape(-1) for p in point]).double()
            net_d = net.double()
            hess = torch.autograd.functional.hessian(flat_loss, theta)
            net.float()
            delta = torch.cat([d.reshape(-1) for d in pc.delta]).double()
            v = torch.randn(
                theta.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64
            )
            parts = [t.reshape(sh).float() for t, sh in zip(v.split(sizes), shapes, strict=True)]
            hv = torch.cat(
                [h.reshape(-1) for h in hessian_vector_product(pc.terms, point, parts)]
            ).double()
            np.testing.assert_allclose(hv.numpy(), (hess @ v).numpy(), rtol=1e-3, atol=1e-5)
            assert pc.second(s) == pytest.approx(float(delta @ hess @ delta), rel=1e-4)
            assert net_d is net


def test_the_exact_form_matches_the_measured_barrier_within_the_quadrature_error() -> None:
    _, ev, split, a, b, *_ = _tiny_engine(seed=2)
    with PathCurvature(ev, a, b, split) as pc:
        measured = bf.measured_barrier(pc.loss(0.0), pc.loss(0.5), pc.loss(1.0))
        grid = bf.uniform_grid(17)
        f2 = np.array([pc.second(float(s)) for s in grid])
        bound = bf.exact_form_error(grid, f2)
        exact = bf.exact_form(grid, f2)
    # the bound estimates max|g''| from the grid: allow it twice, plus float32 rounding
    assert abs(exact - measured) <= 2 * bound + 1e-5, (exact, measured, bound)
    assert bound < 0.05 * abs(measured) + 1e-4  # and the grid is fine enough to mean it


def test_the_evaluator_is_left_as_found() -> None:
    _, ev, split, a, b, *_ = _tiny_engine()
    ev.set_point(a)
    before = [t.clone() for t in ev.point.values()]
    flags = [p.requires_grad for p in ev.model.parameters()]
    loss = ev.evaluate(split).loss
    with PathCurvature(ev, a, b, split) as pc:
        pc.second(0.5)
        pc.trace(0.5, samples=2)
    for t, u in zip(ev.point.values(), before, strict=True):
        assert torch.equal(t, u)
    assert [p.requires_grad for p in ev.model.parameters()] == flags
    assert ev.evaluate(split).loss == loss
    with pytest.raises(RuntimeError, match="context manager"):
        PathCurvature(ev, a, b, split).point(0.0)


# --------------------------------------------------------------------------- engine models


def test_hvp_equals_a_full_hessian_on_a_cnn_with_batchnorm() -> None:
    """BatchNorm statistics are θ(s)'s re-estimated ones, frozen (eval mode) in the HVP.

    No finite-difference check here: ReLU and max-pool make the loss piecewise smooth, and
    a second difference of step h picks up the kinks crossed within ±h (a term the HVP,
    with ReLU'' = 0, does not see; docs/method.md). The text model (GELU) checks that.
    """
    classes = 4
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(24, 1, 12, 12, generator=gen)
    labels = torch.randint(0, classes, (24,), generator=gen)
    split = tensor_split(
        SampleInfo("img", None),
        {"images": images},
        labels,
        classes=tuple(map(str, range(classes))),
        batch_size=12,
    )
    config = cnn_config([4, 6], num_classes=classes)
    ma, mb = build_cnn(config, seed=0), build_cnn(config, seed=1)
    ev = Evaluator(copy.deepcopy(ma), batchnorm="reestimate", batchnorm_split=split)
    a, b = ev.as_point(ma.state_dict(), name="a"), ev.as_point(mb.state_dict(), name="b")
    with PathCurvature(ev, a, b, split) as pc:
        point = pc.point(0.5)
        # an independent model: a deep copy in float64 with θ(½)'s statistics, eval mode
        ref = copy.deepcopy(ev.model).double().eval()
        names = list(pc.names)
        shapes = [p.shape for p in point]
        sizes = [p.numel() for p in point]

        def flat_loss(theta: torch.Tensor) -> torch.Tensor:
            parts = dict(
                zip(
                    names,
                    (t.reshape(sh) for t, sh in zip(theta.split(sizes), shapes, strict=True)),
                    strict=True,
                )
            )
            logits = torch.func.functional_call(ref, parts, (), {"images": images.double()})
            return nn.functional.cross_entropy(logits, labels)

        theta = torch.cat([p.reshape(-1) for p in point]).double()
        hess = torch.autograd.functional.hessian(flat_loss, theta)
        delta = torch.cat([d.reshape(-1) for d in pc.delta]).double()
        assert pc.second(0.5) == pytest.approx(float(delta @ hess @ delta), rel=1e-3)
        running = ev.model.blocks[0].bn.running_mean.clone()
    ev.set_lerp(b, a, 0.5)
    ev.refresh_batchnorm()
    assert torch.allclose(ev.model.blocks[0].bn.running_mean, running)


def test_hvp_equals_finite_differences_on_a_text_transformer(
    tiny_model_dir: Path, data_root: Path
) -> None:
    from modeconn.data.text import SplitSpec, prepare_split
    from modeconn.models.hf import classifier_skeleton, load_tokenizer

    labels = ("entailment", "neutral", "contradiction")
    tok = load_tokenizer(tiny_model_dir)
    spec = SplitSpec(
        "mnli",
        data_root / "mnli/dev_matched.tsv",
        "premise",
        "gold_label",
        "hypothesis",
        sample_size=12,
        sample_seed=1,
    )
    split = prepare_split(spec, tok, labels, max_tokens=300)
    model = classifier_skeleton(tiny_model_dir, labels)
    gen = torch.Generator().manual_seed(0)
    state = model.state_dict()
    other = {
        k: (v + 0.05 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
        for k, v in state.items()
    }
    ev = Evaluator(copy.deepcopy(model))
    a, b = ev.as_point(state, name="a"), ev.as_point(other, name="b")
    with PathCurvature(ev, a, b, split) as pc:
        hvp, fd = pc.second(0.5), pc.second_fd(0.5, h=5e-2)
        assert hvp == pytest.approx(fd, rel=FD_RTOL, abs=1e-3)
        # the engine's loss at a point is the frozen-statistics loss (no BatchNorm here)
        ev.set_lerp(b, a, 0.5)
        assert pc.loss(0.5) == pytest.approx(ev.evaluate(split).loss, abs=1e-5)


def test_finite_difference_step_must_be_positive() -> None:
    terms, _, ta, tb = _quadratic(0)
    with pytest.raises(ConfigError, match="h must be > 0"):
        curvature_fd(terms, ta, [tb[0] - ta[0]], 0.5, h=0.0)
    assert curvature_fd(terms, ta, [tb[0] - ta[0]], 0.5, h=1e-3) == pytest.approx(
        curvature_along(terms, ta, [tb[0] - ta[0]], 0.5), rel=1e-5
    )


def test_the_toy_double_well_by_hand(tmp_path) -> None:
    import importlib.util

    from modeconn.figures.landscape import toy_barrier

    toy = bf.double_well(101)
    assert (toy["measured"], toy["midpoint"], toy["endpoint"]) == (1.0, 2.0, 4.0)
    assert abs(toy["exact"] - 1.0) <= toy["exact_error"]
    fig = toy_barrier(toy)
    assert {c.get_gid() for c in fig.axes[0].collections} >= {"exact", "midpoint"}
    path = Path(__file__).resolve().parents[1] / "examples" / "toy_barrier.py"
    spec = importlib.util.spec_from_file_location("toy_barrier", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path / "toy.png"), "--points", "21"]) == 0
    assert (tmp_path / "toy.png").stat().st_size > 0


# --------------------------------------------------------------------------- batch-statistics BN


def _trained_cnn_pair(steps: int = 5):
    """Two differently initialised tiny BatchNorm CNNs, each trained a few SGD steps."""
    classes = 3
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(32, 1, 8, 8, generator=gen)
    labels = torch.randint(0, classes, (32,), generator=gen)
    split = tensor_split(
        SampleInfo("img", None),
        {"images": images},
        labels,
        classes=tuple(map(str, range(classes))),
        batch_size=16,
    )
    config = cnn_config([4, 4], num_classes=classes)
    nets = []
    for seed in (0, 1):
        net = build_cnn(config, seed=seed)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        net.train()
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(net(images=images), labels).backward()
            opt.step()
        nets.append(net.eval())
    ev = Evaluator(copy.deepcopy(nets[0]), batchnorm="reestimate", batchnorm_split=split)
    a = ev.as_point(nets[0].state_dict(), name="a")
    b = ev.as_point(nets[1].state_dict(), name="b")
    return ev, split, a, b


def test_batch_mode_hvp_equals_a_central_difference_of_the_slope() -> None:
    ev, split, a, b = _trained_cnn_pair()
    buffers = {k: v.clone() for k, v in ev.model.named_buffers()}
    # ReLU and max-pool make f piecewise smooth: a step of 1e-4 straddles no kink here
    # (1e-3 does at s = ¼), and float32 rounding of f' stays ~1e-3 of f''
    h = 1e-4
    with PathCurvature(ev, a, b, split, batchnorm="batch") as pc:
        for s in (0.25, 0.5):
            hvp = pc.second(s)
            fd = (pc.first(s + h) - pc.first(s - h)) / (2 * h)
            assert hvp == pytest.approx(fd, rel=2e-2, abs=1e-3), (s, hvp, fd)
    for k, v in ev.model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert not any(m.training for m in ev.model.modules())


def test_batch_mode_exact_form_matches_the_batch_mode_barrier() -> None:
    """At initialisation (two random nets; barrier ≈ −0.04) the forms and the batch-mode
    measurement see one f. After training, ReLU/max-pool kinks crossed along the path add
    curvature the HVP (ReLU'' = 0) does not see, and the exact form falls short of the
    measured barrier (docs/method.md), so this checks the untrained pair."""
    ev, split, a, b = _trained_cnn_pair(steps=0)
    buffers = {k: v.clone() for k, v in ev.model.named_buffers()}
    with PathCurvature(ev, a, b, split, batchnorm="batch") as pc:
        measured = bf.measured_barrier(pc.loss(0.0), pc.loss(0.5), pc.loss(1.0))
        grid = bf.uniform_grid(9)
        f2 = np.array([pc.second(float(s)) for s in grid])
        bound = bf.exact_form_error(grid, f2)
        exact = bf.exact_form(grid, f2)
    assert abs(measured) > 1e-2, measured  # a path with a clear barrier
    assert abs(exact - measured) <= 2 * bound + 1e-4, (exact, measured, bound)
    for k, v in ev.model.named_buffers():
        assert torch.equal(v, buffers[k]), k


def test_batch_mode_is_validated() -> None:
    ev, split, a, b = _trained_cnn_pair(steps=0)
    with pytest.raises(ConfigError, match="batchnorm"):
        PathCurvature(ev, a, b, split, batchnorm="train")


def test_the_section_keys_batch_mode_apart_and_keeps_frozen_keys() -> None:
    from pydantic import ValidationError

    from modeconn.analyses.curvature import CurvatureSection, curvature_key

    frozen = CurvatureSection(split="dev")
    assert "batchnorm" not in frozen.settings()  # records written before the option stay valid
    assert CurvatureSection(split="dev", batchnorm="frozen").settings() == frozen.settings()
    batch = CurvatureSection(split="dev", batchnorm="batch")
    assert batch.settings()["batchnorm"] == "batch"
    assert curvature_key("a", "b", "k", batch) != curvature_key("a", "b", "k", frozen)
    with pytest.raises(ValidationError, match="batchnorm"):
        CurvatureSection(split="dev", batchnorm="train")
