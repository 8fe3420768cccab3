"""Layer-wise paths: blocks from parameter names, points in the resident weights, and every
loss checked against an independent computation (a fresh model copy per point); random
orders; per-block curvature and barrier forms against fresh float64 copies; a tiny digits
study with every part of ``analyses.layerwise`` (forms, random orders, along training)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from test_vision_study import tiny_digits_study
from tolerances import FLOAT32_LOSS_ATOL

from modeconn.analyses.layerwise import Layerwise, block_forms, path_barriers
from modeconn.analyses.layerwise_tables import forms_of
from modeconn.analyses.run import analyze_study
from modeconn.cli import main
from modeconn.config.study import load_study
from modeconn.data.base import SampleInfo
from modeconn.data.tensors import tensor_split
from modeconn.engine.evaluate import Evaluator
from modeconn.engine.layerwise import (
    block_of,
    blocks,
    layerwise_curves,
    random_orders,
    select_blocks,
)
from modeconn.errors import ConfigError, PopulationError
from modeconn.measures import barrier_forms as bf
from modeconn.measures.curvature import PathCurvature
from modeconn.models.cnn import build_cnn, cnn_config
from modeconn.pipeline import StudyRunner
from modeconn.store import Store

CLASSES = 4


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(16, 1, 8, 8, generator=gen)
    labels = torch.randint(0, CLASSES, (16,), generator=gen)
    split = tensor_split(
        SampleInfo("img", None),
        {"images": images},
        labels,
        classes=tuple(map(str, range(CLASSES))),
        batch_size=8,
    )
    config = cnn_config([3, 5], num_classes=CLASSES)
    ma, mb = build_cnn(config, seed=0), build_cnn(config, seed=1)
    # non-trivial BatchNorm statistics, so that buffers matter along the paths
    for m, shift in ((ma, 0.2), (mb, -0.3)):
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.fill_(shift)
                mod.running_var.fill_(1.0 + abs(shift))
    ev = Evaluator(copy.deepcopy(ma), batchnorm="interpolate")
    return ev, split, ma, mb, images, labels


def _reference_loss(model, state, images, labels) -> float:
    """A fresh copy per point, weights loaded by hand, eval mode, one mean cross-entropy."""
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        return float(F.cross_entropy(fresh(images=images).double(), labels))


def _hybrid(sa, sb, names, s):
    """A's state with the entries in `names` at (1 − s)·A + s·B."""
    return {
        k: ((1 - s) * v + s * sb[k]) if k in names and v.is_floating_point() else v.clone()
        for k, v in sa.items()
    }


def test_blocks_come_from_the_models_own_names(setup) -> None:
    ev = setup[0]
    found = blocks(list(ev.keys), 2)
    assert list(found) == ["blocks.0", "blocks.1", "classifier"]
    assert [ev.keys[i] for i in found["classifier"]] == ["classifier.weight", "classifier.bias"]
    assert "blocks.0.bn.running_mean" in [ev.keys[i] for i in found["blocks.0"]]
    assert list(blocks(list(ev.keys), 1)) == ["blocks", "classifier"]
    assert block_of("bert.encoder.layer.3.output.dense.weight", 4) == "bert.encoder.layer.3"


def test_an_unknown_block_is_one_line_listing_the_models_blocks(setup) -> None:
    found = blocks(list(setup[0].keys), 2)
    with pytest.raises(ConfigError, match=r"'blocks\.7'.*blocks\.0, blocks\.1, classifier") as e:
        select_blocks(found, ["blocks.7"])
    assert "\n" not in str(e.value)
    assert list(select_blocks(found, ["classifier", "blocks.0"])) == ["blocks.0", "classifier"]


def test_every_layerwise_loss_matches_a_fresh_copy_per_point(setup) -> None:
    ev, split, ma, mb, images, labels = setup
    sa, sb = ma.state_dict(), mb.state_dict()
    a, b = ev.as_point(sa, name="a"), ev.as_point(sb, name="b")
    groups = blocks(list(ev.keys), 2)
    res = layerwise_curves(ev, a, b, split, groups=groups, points=3)
    names = {blk: {ev.keys[i] for i in idx} for blk, idx in groups.items()}
    order = list(groups)
    for blk in order:
        for j, s in enumerate(res.s):
            want_a = _reference_loss(ma, _hybrid(sa, sb, names[blk], s), images, labels)
            want_b = _reference_loss(ma, _hybrid(sb, sa, names[blk], s), images, labels)
            assert res.rest_a[blk][j] == pytest.approx(want_a, abs=FLOAT32_LOSS_ATOL)
            assert res.rest_b[blk][j] == pytest.approx(want_b, abs=FLOAT32_LOSS_ATOL)
    for k in range(1, len(order) + 1):
        first = set().union(*(names[n] for n in order[:k]))
        last = set().union(*(names[n] for n in order[len(order) - k :]))
        for j, s in enumerate(res.s):
            assert res.shallow[k - 1][j] == pytest.approx(
                _reference_loss(ma, _hybrid(sa, sb, first, s), images, labels),
                abs=FLOAT32_LOSS_ATOL,
            )
            assert res.deep[k - 1][j] == pytest.approx(
                _reference_loss(ma, _hybrid(sa, sb, last, s), images, labels),
                abs=FLOAT32_LOSS_ATOL,
            )
    # k = K interpolates everything: the full linear path, whose ends are the members
    assert res.shallow[-1][-1] == pytest.approx(res.loss_b, abs=FLOAT32_LOSS_ATOL)
    assert res.loss_a == pytest.approx(_reference_loss(ma, sa, images, labels), abs=1e-5)
    # 2 members + (2 variants + 2 orders) × 3 blocks × 2 interior-or-end points
    assert ev.counts[("layerwise", "img")] == 2 + 4 * 3 * 2


def test_set_blend_writes_in_place_and_refuses_bad_indices(setup) -> None:
    ev, _, ma, mb, *_ = setup
    a, b = ev.as_point(ma.state_dict(), name="a"), ev.as_point(mb.state_dict(), name="b")
    storage = [t.data_ptr() for t in ev.point.values()]
    ev.set_blend(a, b, 0.25, [0])
    assert torch.allclose(ev.point[ev.keys[0]], 0.75 * a[0] + 0.25 * b[0])
    assert torch.equal(ev.point[ev.keys[1]], a[1])
    assert [t.data_ptr() for t in ev.point.values()] == storage
    with pytest.raises(PopulationError, match="bad indices"):
        ev.set_blend(a, b, 0.5, [len(a)])


def test_path_barriers_by_hand() -> None:
    # chord 1 → 2; rises to 3 at s = ½: own = 3 − 1.5; lmc = 3 − ½(1 + 1)
    assert path_barriers([1.0, 3.0, 2.0], 1.0, 1.0) == {"own": 1.5, "lmc": 2.0}
    assert path_barriers([1.0, 1.0, 1.0], 2.0, 2.0) == {"own": 0.0, "lmc": -1.0}


# --------------------------------------------------------------------------- random orders


def test_random_orders_are_seeded_and_match_a_fresh_copy_per_point(setup) -> None:
    ev, split, ma, mb, images, labels = setup
    sa, sb = ma.state_dict(), mb.state_dict()
    a, b = ev.as_point(sa, name="a"), ev.as_point(sb, name="b")
    groups = blocks(list(ev.keys), 2)
    names = list(groups)
    orders = random_orders(names, 3, seed=7)
    assert orders == random_orders(names, 3, seed=7)  # the same draws for the same seed
    assert random_orders(names, 2, seed=7) == orders[:2]  # more draws keep the earlier ones
    assert all(sorted(o) == sorted(names) for o in orders)
    assert len({tuple(o) for o in random_orders(names, 12, seed=0)}) > 1
    before = ev.counts[("layerwise", "img")]
    res = layerwise_curves(ev, a, b, split, groups=groups, points=3, orders=orders)
    keys = {blk: {ev.keys[i] for i in idx} for blk, idx in groups.items()}
    for order, draw in zip(res.orders, res.random, strict=True):
        for k, curve in enumerate(draw, 1):
            chosen = set().union(*(keys[n] for n in order[:k]))
            for j, s in enumerate(res.s):
                want = _reference_loss(ma, _hybrid(sa, sb, chosen, s), images, labels)
                assert curve[j] == pytest.approx(want, abs=FLOAT32_LOSS_ATOL)
    # with 3 blocks every subset a random order reaches (one block, the first two or the
    # last two of the model's order, all three) was evaluated already, but {b0, cls}
    new = {frozenset(o[:2]) for o in orders} - {
        frozenset(names[:2]),
        frozenset(names[1:]),
    }
    base = 2 + 4 * 3 * 2  # members + (2 variants + 2 orders) × 3 blocks × 2 points
    assert ev.counts[("layerwise", "img")] - before == base + 2 * len(new)
    with pytest.raises(ConfigError, match="once each"):
        layerwise_curves(ev, a, b, split, groups=groups, points=3, orders=[names[:2]])


# --------------------------------------------------------------------------- the forms


def _float64_loss(model, sa, sb, names, s, images, labels) -> float:
    """A fresh copy in float64, the hybrid formed in float64 too (the reference for
    derivatives by finite differences: a float32 blend would round at ~1e-8, which a
    step of 1e-3 turns into a 1 % error in f'')."""
    fresh = copy.deepcopy(model).double()
    da = {k: v.double() if v.is_floating_point() else v for k, v in sa.items()}
    db = {k: v.double() if v.is_floating_point() else v for k, v in sb.items()}
    fresh.load_state_dict(_hybrid(da, db, names, s))
    fresh.eval()
    with torch.no_grad():
        return float(F.cross_entropy(fresh(images=images.double()), labels))


@pytest.fixture(scope="module")
def live_pair(setup):
    """Two CNNs whose features are alive (BatchNorm statistics drawn around the batch's own,
    so the head sees non-zero features from both), with their own evaluator."""
    _, split, *_, images, labels = setup
    config = cnn_config([3, 5], num_classes=CLASSES)
    gen = torch.Generator().manual_seed(11)
    models = [build_cnn(config, seed=s) for s in (3, 4)]
    for m in models:
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(0.1 * torch.randn(mod.num_features, generator=gen))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=gen))
    ev = Evaluator(copy.deepcopy(models[0]), batchnorm="interpolate")
    return ev, split, *models, images, labels


@pytest.mark.parametrize("variant", ["rest_a", "rest_b"])
def test_block_curvature_and_forms_match_a_fresh_float64_copy(live_pair, variant) -> None:
    """On the classifier block the path is smooth (a linear head under a cross-entropy; the
    BatchNorm buffers, outside the block, stay put), so f'' by HVP on the block's path
    equals a float64 finite difference of fresh copies, and the exact form equals the
    barrier measured on fresh copies within its quadrature bound."""
    ev, split, ma, mb, images, labels = live_pair
    sa, sb = ma.state_dict(), mb.state_dict()
    if variant == "rest_b":
        sa, sb = sb, sa
    a, b = ev.as_point(sa, name="a"), ev.as_point(sb, name="b")
    groups = blocks(list(ev.keys), 2)
    head = {ev.keys[i] for i in groups["classifier"]}

    def ref(s: float) -> float:
        return _float64_loss(ma, sa, sb, head, s, images, labels)

    with PathCurvature(ev, a, b, split, indices=groups["classifier"]) as pc:
        h = 1e-3
        for s in (0.0, 0.5, 1.0):
            fd = (ref(s - h) - 2 * ref(s) + ref(s + h)) / h**2
            assert pc.second(s) == pytest.approx(fd, rel=1e-4, abs=1e-6)
            assert pc.loss(s) == pytest.approx(ref(s), abs=FLOAT32_LOSS_ATOL)
        slope = (ref(h) - ref(-h)) / (2 * h)
        assert pc.first(0.0) == pytest.approx(slope, rel=1e-4, abs=1e-6)
        assert abs(pc.second(0.5)) > 1e-3  # a live head: the check means something
    rec = block_forms(ev, a, b, split, groups={"classifier": groups["classifier"]}, points=9)
    forms = forms_of(rec["rest_a"]["classifier"], rec["s"])
    measured = bf.measured_barrier(ref(0.0), ref(0.5), ref(1.0))
    assert abs(forms["exact"] - measured) <= 2 * forms["exact_error"] + 1e-5
    assert forms["frozen"] == pytest.approx(measured, abs=FLOAT32_LOSS_ATOL)


def test_block_forms_of_the_whole_model_are_the_path_forms(setup) -> None:
    """Δ restricted to every entry is Δ: the block path is the full linear path."""
    ev, split, ma, mb, *_ = setup
    a, b = ev.as_point(ma.state_dict(), name="a"), ev.as_point(mb.state_dict(), name="b")
    every = list(range(len(ev.keys)))
    with PathCurvature(ev, a, b, split) as full:
        want = [full.second(s) for s in (0.0, 0.5, 1.0)]
    with PathCurvature(ev, a, b, split, indices=every) as block:
        got = [block.second(s) for s in (0.0, 0.5, 1.0)]
    assert got == pytest.approx(want, rel=1e-6)


# --------------------------------------------------------------------------- a study


LAYERWISE = {
    "split": "clean",
    "points": 3,
    "random_orders": 2,
    "seed": 3,
    "predict": True,
    "training": True,
    "bootstrap": 50,
    "pairs": [["seed-00", "cue-00"], ["seed-00", "seed-01"], ["seed-01", "cue-00"]],
}


@pytest.fixture(scope="module")
def digits_layerwise(tmp_path_factory: pytest.TempPathFactory):
    """The tiny digits study (4 CNNs, one checkpoint each at half of training) with every
    part of analyses.layerwise, run through the CLI."""
    root = tmp_path_factory.mktemp("layerwise-study")
    data = tiny_digits_study(root / "out")
    data["train"]["checkpoints"] = [0.5]
    data["analyses"] = {"layerwise": LAYERWISE}
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--quiet"]) == 0
    study = load_study(path)
    with Store(study.store_path(), create=False) as store:
        result = analyze_study(store, study)
    return path, study, result


@pytest.mark.slow
def test_a_study_measures_every_part_of_the_layerwise_analysis(digits_layerwise) -> None:
    _, study, result = digits_layerwise
    value = result.analyses["layerwise"]
    blocks_ = ["blocks.0", "blocks.1", "blocks.2", "classifier"]
    assert list(value.per_block["block"].unique()) == blocks_
    # cumulative: shallow, deep and the random orders' mean inside their range; at k = K
    # every order interpolates the whole model (the full linear path)
    cum = value.cumulative
    assert (cum["random_min"] <= cum["random"] + 1e-12).all()
    assert (cum["random"] <= cum["random_max"] + 1e-12).all()
    full = cum[cum["k"] == 4]
    assert np.allclose(full["random"], full["shallow"]) and np.allclose(
        full["deep"], full["shallow"]
    )
    # the forms: 3 pairs × 4 blocks × 2 variants; pooled and per-block correlations
    forms = value.forms
    assert len(forms) == 3 * 4 * 2 and set(forms["variant"]) == {"rest_a", "rest_b"}
    assert {"measured", "exact", "midpoint", "endpoint", "frozen"} <= set(forms.columns)
    # 3 points: the trapezoid on (0, ½, 1) is −⅛ f''(½), the midpoint form
    assert np.allclose(forms["exact"], forms["midpoint"])
    corr = value.correlations
    assert set(corr["block"]) == {"all", *blocks_} and set(corr["form"]) == set(bf.FORMS)
    assert (corr.loc[corr["block"] == "all", "n"] == 24).all()
    # the measured barrier is the midpoint one of the same per-block curve
    row = forms[(forms["pair"] == "seed-00–cue-00") & (forms["block"] == "classifier")]
    assert (row["barrier"] >= row["measured"] - 1e-12).all()
    # along training: the checkpoint step, then the final members (the per-block table)
    tr = value.training
    assert list(tr["step"].unique())[-1] == "final" and tr["stage"].nunique() == 2
    last = tr[tr["step"] == "final"].set_index("block")
    first = value.per_block[value.per_block["pair"] == "seed-00–cue-00"].set_index("block")
    assert np.allclose(last.loc[blocks_, "rest_a"], first.loc[blocks_, "rest_a"])
    titles = [s.title for s in Layerwise().sections(result, value)]
    assert titles == [
        "Layer-wise linear connectivity",
        "Layer-wise barrier prediction",
        "Layer-wise barriers along training",
    ]
    html = (study.out_path() / "report" / "report.html").read_text(encoding="utf-8")
    assert all(f">{t}<" in html for t in titles)
    assert any("layer-wise barrier prediction" in ln for ln in result.summary().splitlines())


@pytest.mark.slow
def test_a_rerun_of_the_layerwise_study_measures_nothing(digits_layerwise) -> None:
    path, study, _ = digits_layerwise
    with Store(study.store_path(), create=False) as store:
        before = store.counts()
    runner = StudyRunner(load_study(path), progress=False)
    runner.sweep()
    runner.measure()
    with Store(study.store_path(), create=False) as store:
        assert store.counts() == before


def test_an_unknown_block_stops_a_training_study_before_it_trains(tmp_path, capsys) -> None:
    data = tiny_digits_study(tmp_path / "out")
    data["analyses"] = {"layerwise": {"split": "clean", "blocks": ["blocks.0", "blocks.9"]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'blocks.9'" in err[0]
    assert "blocks.0, blocks.1, blocks.2, classifier" in err[0]
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    # a pair naming a member the arms will not produce: refused as the study is read
    data["analyses"] = {"layerwise": {"split": "clean", "pairs": [["seed-00", "seed-05"]]}}
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--quiet"]) == 2
    assert "'seed-05'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_builtin_demo_landscape_study_is_valid() -> None:
    from modeconn.analyses.registry import enabled
    from modeconn.config.study import builtin_study_path

    study = load_study(builtin_study_path("demo-landscape"))
    assert {"curvature", "layerwise"} <= {a.key for a in enabled(study)}
    lw = study.section("layerwise")
    assert lw.predict and lw.training and lw.random_orders > 0 and lw.points % 2 == 1
    assert study.train is not None and study.train.checkpoints
    assert 0.5 in [round(i / (study.paths.points - 1), 9) for i in range(study.paths.points)]
