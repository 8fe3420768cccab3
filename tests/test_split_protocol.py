"""Every kind of split follows the Split protocol the engine reads; TensorSplit's details."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modeconn.config.study import load_study
from modeconn.data.base import SampleInfo, Split, build_split, split_builder
from modeconn.data.tensors import tensor_split
from modeconn.engine.spec import KeyedSplit, engine_spec
from modeconn.errors import ConfigError, DataError


def _toy(**kw: object) -> Split:
    x = torch.arange(10 * 4, dtype=torch.float32).reshape(10, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    args: dict[str, object] = {"classes": ("a", "b", "c"), "batch_size": 4, **kw}
    return tensor_split(SampleInfo("toy", metric="mcc"), {"x": x}, y, **args)  # type: ignore[arg-type]


def test_text_tensor_and_keyed_splits_follow_the_protocol(tiny_study: Path) -> None:
    study = load_study(tiny_study)
    spec = engine_spec(study)
    text = build_split(spec.splits[0], spec.model.label_order)
    toy = _toy()
    for split in (text, toy, KeyedSplit(toy, "|bn=interpolate")):
        assert isinstance(split, Split)
        assert split.n == sum(len(b) for b in split.batch_labels()) == len(split.order)
        assert split.cost > 0 and split.cost_unit
        table = split.example_table()
        assert all(int(v.shape[0]) == split.n for v in table.inputs.values())
    assert text.cost_unit == "tok" and toy.cost_unit == "ex"


def test_tensor_split_batches_keys_and_scores() -> None:
    split = _toy()
    assert [int(b["x"].shape[0]) for b in split.batches] == [4, 4, 2]
    assert split.order.tolist() == list(range(10))
    assert split.key == _toy().key  # the same data, the same key
    # batches are part of the key: re-estimated BatchNorm statistics depend on them
    assert split.key != _toy(batch_size=5).key
    other = tensor_split(
        SampleInfo("toy", metric="mcc"),
        {"x": torch.zeros(10, 4)},
        split.labels,
        classes=("a", "b", "c"),
    )
    assert other.key != split.key  # other inputs, another key
    preds = split.labels.numpy().copy()
    scores = split.score(preds)
    assert scores == {"accuracy": 1.0, "mcc": pytest.approx(1.0)}
    assert split.example_table().lengths is None


def test_tensor_split_maps_logits_by_groups() -> None:
    split = _toy(groups=((0,), (1, 2)), classes=("a", "bc"))
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    np.testing.assert_array_equal(split.map_logits(logits).numpy(), [[3.0, 2.0], [0.0, 5.0]])


def test_tensor_split_refuses_mismatched_rows() -> None:
    with pytest.raises(DataError, match="one per label"):
        tensor_split(SampleInfo("bad"), {"x": torch.zeros(3, 2)}, torch.zeros(4), classes=("a",))


def test_an_unknown_kind_has_no_builder() -> None:
    with pytest.raises(ConfigError, match="split kind 'pics' has no builder"):
        split_builder("pics")
