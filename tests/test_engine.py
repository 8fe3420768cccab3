"""The evaluation engine against an independent reference: a model copy per point."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import reference_sample, tiny_study_dict
from tolerances import COMPILE_LOSS_ATOL, HALF_LOSS_ATOL

from modeconn.config.study import parse_study
from modeconn.data.text import SplitSpec, prepare_split
from modeconn.engine.evaluate import Evaluator
from modeconn.engine.paths import alpha_grid, segment
from modeconn.errors import ConfigError
from modeconn.models.hf import classifier_skeleton, load_tokenizer

LABELS = ["entailment", "neutral", "contradiction"]


def _perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (v + 0.05 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, data_root: Path):
    tok = load_tokenizer(tiny_model_dir)
    spec = SplitSpec(
        "hans_lo",
        data_root / "hans/eval.tsv",
        "sentence1",
        "gold_label",
        "sentence2",
        where={"heuristic": ("lexical_overlap",)},
        classes={"entailment": ("entailment",), "non-entailment": ("neutral", "contradiction")},
        sample_size=48,
        sample_seed=3,
    )
    split = prepare_split(spec, tok, LABELS, max_tokens=300)
    model = classifier_skeleton(tiny_model_dir, LABELS)
    return tok, spec, split, model


def _reference_loss(model, state, tok, spec, split) -> tuple[float, np.ndarray]:
    """Plain recipe: a fresh copy, load_state_dict, tokenize in sample order, no bucketing."""
    ref = copy.deepcopy(model)
    ref.load_state_dict(state)
    ref.eval()
    chosen, enc = reference_sample(tok, spec)
    with torch.no_grad():
        logits = ref(**enc).logits.double()
    two = torch.stack([logits[:, 0], torch.maximum(logits[:, 1], logits[:, 2])], dim=1)
    target = torch.tensor([0 if e.label == "entailment" else 1 for e in chosen])
    per = F.cross_entropy(two, target, reduction="none").numpy()
    return float(per.mean()), per


def test_interpolated_points_match_a_model_copy_per_point(setup) -> None:
    tok, spec, split, model = setup
    a, b = _perturbed(model, 1), _perturbed(model, 2)
    ev = Evaluator(copy.deepcopy(model))  # the evaluator owns (and overwrites) its model
    pa, pb = ev.as_point(a, name="a"), ev.as_point(b, name="b")
    for alpha in alpha_grid(5):
        got = ev.evaluate_lerp(pa, pb, alpha, split, per_example=True)
        state = {
            k: (alpha * a[k] + (1 - alpha) * b[k]) if a[k].is_floating_point() else a[k] for k in a
        }
        want, per = _reference_loss(model, state, tok, spec, split)
        assert got.loss == pytest.approx(want, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(got.example_losses, per, rtol=1e-4, atol=1e-5)


def test_alpha_endpoints_are_the_members(setup) -> None:
    _, _, split, model = setup
    a, b = _perturbed(model, 1), _perturbed(model, 2)
    ev = Evaluator(copy.deepcopy(model))  # the evaluator owns (and overwrites) its model
    pa, pb = ev.as_point(a, name="a"), ev.as_point(b, name="b")
    assert ev.evaluate_lerp(pa, pb, 1.0, split).loss == pytest.approx(
        ev.evaluate_member(pa, split).loss, abs=1e-6
    )
    assert ev.evaluate_lerp(pa, pb, 0.0, split).loss == ev.evaluate_member(pb, split).loss


def test_segment_is_the_same_point_as_the_engine_writes(setup) -> None:
    _, _, _, model = setup
    a, b = _perturbed(model, 1), _perturbed(model, 2)
    ev = Evaluator(copy.deepcopy(model))  # the evaluator owns (and overwrites) its model
    pa, pb = ev.as_point(a, name="a"), ev.as_point(b, name="b")
    ev.set_lerp(pa, pb, 0.3)
    for got, want in zip(ev.point.values(), segment(pa, pb, 0.3), strict=True):
        torch.testing.assert_close(got, want)


def test_wrong_shape_member_is_named(setup) -> None:
    _, _, _, model = setup
    state = model.state_dict()
    state["classifier.weight"] = torch.zeros(2, 16)
    with pytest.raises(Exception, match=r"classifier\.weight.*\(2, 16\)"):
        Evaluator(model).as_point(state, name="m9")


# ---- engine options: dtype, device, compile ----------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_moves_the_loss_a_little(setup, dtype: str) -> None:
    _, _, split, model = setup
    a, b = _perturbed(model, 1), _perturbed(model, 2)
    want = Evaluator(copy.deepcopy(model))
    pa, pb = want.as_point(a, name="a"), want.as_point(b, name="b")
    half = Evaluator(copy.deepcopy(model), dtype=dtype)
    ha, hb = half.as_point(a, name="a"), half.as_point(b, name="b")
    assert {t.dtype for t in ha} == {getattr(torch, dtype)}  # member points are cast too
    for alpha in (0.0, 0.5, 1.0):
        full = want.evaluate_lerp(pa, pb, alpha, split, per_example=True)
        low = half.evaluate_lerp(ha, hb, alpha, split, per_example=True)
        # the option does change the arithmetic (the means can coincide by chance)
        assert not np.array_equal(low.example_losses, full.example_losses)
        # HALF_LOSS_ATOL: 8 significant bits in bfloat16, averaged over the sample
        assert low.loss == pytest.approx(full.loss, abs=HALF_LOSS_ATOL)
        assert low.example_losses is not None and low.example_losses.dtype == np.float32


def test_bad_dtype_is_a_config_error_naming_the_field(setup, tmp_path: Path) -> None:
    _, _, _, model = setup
    with pytest.raises(ConfigError, match=r"eval\.dtype.*float32, bfloat16, float16.*'fp8'"):
        Evaluator(copy.deepcopy(model), dtype="fp8")
    study = tiny_study_dict(tmp_path, tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"eval\.dtype: expected 'float32'.*got 'fp8'"):
        parse_study({**study, "eval": {"dtype": "fp8"}})
    with pytest.raises(ConfigError, match=r"eval\.device: expected 'cpu'.*got 'gpu'"):
        parse_study({**study, "eval": {"device": "gpu"}})
    ok = parse_study({**study, "eval": {"dtype": "bfloat16", "compile": True, "device": "cuda"}})
    assert (ok.eval.dtype, ok.eval.compile, ok.eval.device) == ("bfloat16", True, "cuda")


def test_cuda_without_cuda_is_a_config_error(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, _, model = setup
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"eval\.device is 'cuda'.*no CUDA device.*cpu"):
        Evaluator(copy.deepcopy(model), device="cuda")


def test_the_point_is_the_skeletons_weights_and_lerp_is_exact_at_the_ends(setup) -> None:
    _, _, split, model = setup
    a, b = _perturbed(model, 1), _perturbed(model, 2)
    ev = Evaluator(copy.deepcopy(model))
    pa, pb = ev.as_point(a, name="a"), ev.as_point(b, name="b")
    ev.set_lerp(pa, pb, 0.4)
    weights = dict(ev.model.named_parameters())
    assert all(ev.point[k].data_ptr() == p.data_ptr() for k, p in weights.items())
    for alpha, want in ((0.0, pb), (1.0, pa)):
        ev.set_lerp(pa, pb, alpha)
        assert all(torch.equal(got, w) for got, w in zip(ev.point.values(), want, strict=True))
    assert ev.prepared(split) is split  # CPU batches are used where they are


def test_a_store_keeps_one_dtype(tmp_path: Path) -> None:
    from modeconn.pipeline import _check_dtype
    from modeconn.store import Store

    base = tiny_study_dict(tmp_path, tmp_path, tmp_path / "out")
    fp32 = parse_study(base)
    bf16 = parse_study({**base, "eval": {"dtype": "bfloat16"}})
    with Store(tmp_path / "r.sqlite", study="tiny") as store:
        _check_dtype(store, bf16)  # a new store takes any dtype
        store.set_meta("study", fp32.model_dump_json(exclude={"base_dir"}))
        _check_dtype(store, fp32)
        with pytest.raises(ConfigError, match=r"eval\.dtype 'float32'.*asks for 'bfloat16'"):
            _check_dtype(store, bf16)


@pytest.mark.slow  # torch.compile takes ~30-60 s even for the tiny model
def test_compiled_engine_matches_and_sees_each_new_point(setup) -> None:
    _, _, split, model = setup
    a, b = _perturbed(model, 1), _perturbed(model, 2)
    eager = Evaluator(copy.deepcopy(model))
    compiled = Evaluator(copy.deepcopy(model), compile=True)
    pa, pb = eager.as_point(a, name="a"), eager.as_point(b, name="b")
    losses = []
    for alpha in (0.0, 0.5, 1.0):  # new weights per point: not baked into the graph
        want = eager.evaluate_lerp(pa, pb, alpha, split).loss
        got = compiled.evaluate_lerp(pa, pb, alpha, split).loss
        assert got == pytest.approx(want, abs=COMPILE_LOSS_ATOL)
        losses.append(got)
    assert len(set(losses)) == 3
