"""The evaluation engine against an independent reference: a model copy per point."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeconn.evaluate import Evaluator
from modeconn.models import classifier_skeleton, load_tokenizer
from modeconn.paths import alpha_grid, segment
from modeconn.tasks.text import SplitSpec, prepare_split

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
    from modeconn.tasks.text import read_examples, sample_indices

    ref = copy.deepcopy(model)
    ref.load_state_dict(state)
    ref.eval()
    examples = read_examples(spec)
    chosen = [
        examples[i] for i in sample_indices(len(examples), spec.sample_size, spec.sample_seed)
    ]
    enc = tok(
        [e.text_a for e in chosen],
        [e.text_b for e in chosen],
        padding=True,
        truncation=True,
        max_length=128,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = ref(**enc).logits.double()
    two = torch.stack([logits[:, 0], torch.maximum(logits[:, 1], logits[:, 2])], dim=1)
    target = torch.tensor([0 if e.label == "entailment" else 1 for e in chosen])
    per = F.cross_entropy(two, target, reduction="none").numpy()
    return float(per.mean()), per


def test_interpolated_points_match_a_model_copy_per_point(setup) -> None:
    tok, spec, split, model = setup
    a, b = _perturbed(model, 1), _perturbed(model, 2)
    ev = Evaluator(model)
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
    ev = Evaluator(model)
    pa, pb = ev.as_point(a, name="a"), ev.as_point(b, name="b")
    assert ev.evaluate_lerp(pa, pb, 1.0, split).loss == pytest.approx(
        ev.evaluate_member(pa, split).loss, abs=1e-6
    )
    assert ev.evaluate_lerp(pa, pb, 0.0, split).loss == ev.evaluate_member(pb, split).loss


def test_segment_is_the_same_point_as_the_engine_writes(setup) -> None:
    _, _, _, model = setup
    a, b = _perturbed(model, 1), _perturbed(model, 2)
    ev = Evaluator(model)
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
