"""Layer-wise paths: blocks from parameter names, points in the resident weights, and every
loss checked against an independent computation (a fresh model copy per point)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tolerances import FLOAT32_LOSS_ATOL

from modeconn.analyses.layerwise import path_barriers
from modeconn.data.base import SampleInfo
from modeconn.data.tensors import tensor_split
from modeconn.engine.evaluate import Evaluator
from modeconn.engine.layerwise import block_of, blocks, layerwise_curves, select_blocks
from modeconn.errors import ConfigError, PopulationError
from modeconn.models.cnn import build_cnn, cnn_config

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
