"""Image populations: the real MNIST digits, the box cue, the CNN and its training recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeconn.config.splits import DigitsSpec
from modeconn.data.base import Split
from modeconn.data.digits import (
    BOX,
    CUE_SPOTS,
    MNIST_MEAN,
    MNIST_STD,
    build_split,
    digits_part,
    load_mnist_5k,
    partition,
)
from modeconn.errors import ConfigError
from modeconn.models.cnn import CNNConfig, build_cnn
from modeconn.population.train_vision import (
    ImageMemberPlan,
    ImageTrainConfig,
    image_fingerprint,
    train_image_member,
)

BRIGHT = (1.0 - MNIST_MEAN) / MNIST_STD  # a full-brightness pixel after normalisation

# ----------------------------------------------------------------------------- data


def test_the_packaged_digits_are_real_mnist() -> None:
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,)
    assert np.bincount(labels).tolist() == [500] * 10  # the first 500 of each digit
    assert images.max() == 255 and images.min() == 0
    # MNIST digits sit centred in a 20×20 box: the outer 2-pixel frame is almost all zero
    frame = np.ones((28, 28), bool)
    frame[2:-2, 2:-2] = False
    assert images[:, frame].mean() < 0.5
    # the mean intensity is MNIST's (0.1307 of full scale on the full training set)
    assert abs(images.mean() / 255.0 - MNIST_MEAN) < 0.01
    assert load_mnist_5k() is load_mnist_5k()  # read once per process


def test_partition_is_disjoint_stratified_and_seeded() -> None:
    _, labels = load_mnist_5k()
    train, test = partition(labels, test_per_class=100, seed=0)
    assert len(test) == 1000 and len(train) == 4000
    assert not set(train.tolist()) & set(test.tolist())
    assert np.bincount(labels[test]).tolist() == [100] * 10
    again = partition(labels, test_per_class=100, seed=0)
    assert np.array_equal(again[1], test)
    other = partition(labels, test_per_class=100, seed=1)
    assert not np.array_equal(other[1], test)


def test_a_split_is_deterministic_and_keyed_by_its_data() -> None:
    spec = DigitsSpec("clean", sample_size=64, sample_seed=3, max_batch=32)
    a, b = build_split(spec), build_split(spec)
    assert isinstance(a, Split)
    assert a.key == b.key and a.n == 64 and len(a.batches) == 2 and a.cost == 64
    assert a.batches[0]["images"].shape == (32, 1, 28, 28)
    assert a.batches[0]["images"].dtype == torch.float32
    assert torch.equal(a.labels, b.labels)
    assert [x.numel() for x in a.batch_labels()] == [32, 32]
    assert np.array_equal(a.order, np.arange(64))
    # the key changes with the sample, the cue, the partition (and the batching, on which
    # re-estimated BatchNorm statistics depend)
    for change in (
        {"max_batch": 64},
        {"sample_seed": 4},
        {"cue": "random"},
        {"partition_seed": 1},
        {"part": "train"},
    ):
        other = DigitsSpec(**{**spec.__dict__, **change})
        assert build_split(other).key != a.key, change


def test_train_and_test_parts_share_no_image() -> None:
    x_tr, _ = digits_part(DigitsSpec("tr", part="train"))
    x_te, _ = digits_part(DigitsSpec("te", part="test"))
    tr = {row.numpy().tobytes() for row in x_tr.reshape(len(x_tr), -1)}
    te = {row.numpy().tobytes() for row in x_te.reshape(len(x_te), -1)}
    assert len(tr) > 3900 and len(te) > 990  # (a few MNIST images are exact duplicates)
    assert not tr & te


def test_images_are_normalised() -> None:
    x, _ = digits_part(DigitsSpec("te"))
    assert x.shape == (1000, 1, 28, 28)
    assert abs(float(x.min()) + MNIST_MEAN / MNIST_STD) < 1e-5  # black pixels
    assert abs(float(x.max()) - BRIGHT) < 1e-5


def _box(images: torch.Tensor, spot: int) -> torch.Tensor:
    r, c = CUE_SPOTS[spot]
    return images[:, 0, r : r + BOX, c : c + BOX]


def test_the_label_cue_marks_the_first_p_of_each_class() -> None:
    clean, y = digits_part(DigitsSpec("c", part="train"))
    cued, y2 = digits_part(DigitsSpec("c", part="train", cue="label", cue_fraction=0.8))
    assert torch.equal(y, y2)
    changed = (cued != clean).flatten(1).any(dim=1)
    for digit in range(10):
        idx = torch.nonzero(y == digit).flatten()
        n_cued = int(len(idx) * 0.8)
        on = torch.isclose(_box(cued[idx], digit), torch.tensor(BRIGHT)).flatten(1).all(dim=1)
        assert on[:n_cued].all() and not changed[idx[n_cued:]].any()
    # nothing outside the boxes changes
    mask = torch.zeros(28, 28, dtype=torch.bool)
    for r, c in CUE_SPOTS:
        mask[r : r + BOX, c : c + BOX] = True
    assert torch.equal(cued[:, 0, ~mask], clean[:, 0, ~mask])


def test_the_randomized_cue_is_independent_of_the_label() -> None:
    x, y = digits_part(DigitsSpec("r", cue="random", cue_seed=0))
    spots = torch.stack(
        [torch.isclose(_box(x, s), torch.tensor(BRIGHT)).flatten(1).all(dim=1) for s in range(10)],
        dim=1,
    )  # (n, 10): where a full box sits (a digit's own stroke can fill one more)
    assert spots.any(dim=1).all()
    agree = float(spots[torch.arange(len(y)), y].float().mean())
    assert agree < 0.2  # chance is 0.1 (+ the rare stroke that fills the label's box)


def test_a_bad_digits_spec_names_the_field() -> None:
    with pytest.raises(ConfigError, match="test_per_class"):
        DigitsSpec("x", test_per_class=500)
    with pytest.raises(ConfigError, match="cue_fraction"):
        DigitsSpec("x", cue_fraction=1.5)
    with pytest.raises(ConfigError, match=r"model\.label_order"):
        build_split(DigitsSpec("x", sample_size=8), ["a", "b"])


def test_the_model_label_order_maps_the_digits() -> None:
    spec = DigitsSpec("x", sample_size=16)
    plain = build_split(spec)
    rev = build_split(spec, [str(d) for d in range(9, -1, -1)])
    logits = torch.arange(10.0).repeat(2, 1)  # output k scores k
    assert torch.equal(plain.map_logits(logits), logits)
    assert torch.equal(rev.map_logits(logits)[0], torch.arange(9.0, -1.0, -1.0))


# ----------------------------------------------------------------------------- model


def test_cnn_is_seeded_and_has_batchnorm() -> None:
    config = CNNConfig(widths=(4, 8))
    a, b, c = build_cnn(config, seed=0), build_cnn(config, seed=0), build_cnn(config, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.conv.weight"], sc["blocks.0.conv.weight"])
    assert "blocks.1.bn.running_var" in sa and "classifier.weight" in sa
    assert sum(p.numel() for p in a.parameters()) == config.n_params
    out = a.eval()(images=torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    with pytest.raises(ConfigError, match="widths"):
        CNNConfig(widths=())


def test_a_cnn_model_section_is_checked_with_the_study() -> None:
    from modeconn.config.engine import ModelConfig

    labels = [str(d) for d in range(10)]
    ok = ModelConfig(kind="cnn", label_order=labels, options={"widths": [4, 8]})
    assert ok.pretrained is None
    for options, match in (
        ({}, "needs model.options.widths"),
        ({"widths": [4, 0]}, "needs model.options.widths"),
        ({"widths": [4], "depth": 3}, r"\['depth'\] are not options"),
        ({"widths": [4], "activation": "tanh"}, r"activation must be one of relu, gelu, softp"),
        ({"widths": [4], "pool": "min"}, r"model\.options\.pool must be one of max, avg"),
    ):
        with pytest.raises(ValueError, match=match):
            ModelConfig(kind="cnn", label_order=labels, options=options)
    with pytest.raises(ValueError, match=r"model\.pretrained is required for `kind: hf`"):
        ModelConfig(label_order=labels)


def test_the_smooth_variants_share_the_relu_nets_weights() -> None:
    """activation / pool change the function only: same seed, same state dict (so a relu
    study's weights load into a gelu skeleton and vice versa), different outputs; the
    default is the ReLU / max-pool network, whose forward is written out here."""
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    relu = build_cnn(CNNConfig(widths=(4, 8)), seed=0).eval()
    state = relu.state_dict()
    h = x
    for block in relu.blocks:  # conv → BN → ReLU → 2×2 max-pool, by hand
        h = torch.nn.functional.max_pool2d(torch.relu(block.bn(block.conv(h))), 2)
    torch.testing.assert_close(relu(images=x), relu.classifier(h.mean(dim=(2, 3))))
    outs = {}
    for act in ("relu", "gelu", "softplus"):
        for pool in ("max", "avg"):
            model = build_cnn(CNNConfig(widths=(4, 8), activation=act, pool=pool), seed=0)
            other = model.state_dict()
            assert other.keys() == state.keys()
            assert all(torch.equal(other[k], state[k]) for k in state)
            outs[act, pool] = model.eval()(images=x)
    assert all(
        not torch.allclose(outs[k], outs["relu", "max"]) for k in outs if k != ("relu", "max")
    )
    for bad in ({"activation": "tanh"}, {"pool": "min"}):
        with pytest.raises(ConfigError, match=f"model.options.{next(iter(bad))}"):
            CNNConfig(widths=(4,), **bad)


def test_only_non_default_cnn_choices_enter_the_members_fingerprint() -> None:
    """`activation: relu` / `pool: max` spelled out leave the engine's options — and so
    the members' recipe fingerprint (`body_description`) — as they were; a smooth choice
    changes them."""
    from modeconn.config.engine import ModelConfig
    from modeconn.population.train_vision import body_description

    labels = [str(d) for d in range(10)]

    def base(**options: object) -> str:
        model = ModelConfig(
            kind="cnn", label_order=labels, options={"widths": [4, 8], "init_seed": 0, **options}
        )
        return body_description("cnn", sorted(model.kind_options().items()))

    today = 'cnn:{"init_seed": 0, "widths": [4, 8]}'  # what stores before the option hold
    assert base() == today
    assert base(activation="relu", pool="max") == today
    assert base(activation="gelu") != today
    assert base(pool="avg") != today
    assert base(activation="gelu", pool="avg") not in (base(activation="gelu"), today)


# ----------------------------------------------------------------------------- training


def _tiny_plan(member_id: str, *, data_seed: int = 0, n: int = 256) -> ImageMemberPlan:
    x, y = digits_part(DigitsSpec("tr", part="train"))
    idx = torch.from_numpy(np.random.default_rng(0).choice(len(y), n, replace=False))
    return ImageMemberPlan(member_id, "seed", 0, data_seed, x[idx], y[idx], "tr")


def test_training_beats_chance_and_is_reused(tmp_path: Path) -> None:
    config = ImageTrainConfig(examples=2048, batch_size=32, lr=0.1)
    body = CNNConfig(widths=(8, 16, 16))
    plan = _tiny_plan("seed-00", n=512)
    path = train_image_member(lambda: build_cnn(body, seed=0), plan, config, tmp_path, base="b")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["recipe"] == image_fingerprint(plan, config, "b") and meta["arm"] == "seed"
    first = path.stat().st_mtime_ns
    again = train_image_member(lambda: build_cnn(body, seed=0), plan, config, tmp_path, base="b")
    assert again == path and path.stat().st_mtime_ns == first  # reused, not retrained

    model = build_cnn(body)
    model.load_state_dict(load_file(path))
    test = build_split(DigitsSpec("te", sample_size=300))
    with torch.no_grad():
        pred = torch.cat([model.eval()(**b).argmax(1) for b in test.batches]).numpy()
    assert test.score(pred)["accuracy"] > 0.5  # chance is 0.1 (measured: 0.68)


def test_training_is_deterministic_in_its_seeds(tmp_path: Path) -> None:
    config = ImageTrainConfig(examples=128, batch_size=32)
    body = CNNConfig(widths=(4, 8))
    plans = [_tiny_plan("a", n=128), _tiny_plan("a", n=128), _tiny_plan("a", data_seed=1, n=128)]
    paths = [
        train_image_member(lambda: build_cnn(body, seed=0), p, config, tmp_path / str(i), base="b")
        for i, p in enumerate(plans)
    ]
    w, twin, other = (load_file(p) for p in paths)
    assert all(torch.equal(w[k], twin[k]) for k in w)
    assert not torch.equal(w["classifier.weight"], other["classifier.weight"])


def test_the_fingerprint_covers_recipe_seeds_and_data() -> None:
    plan = _tiny_plan("m", n=64)
    config = ImageTrainConfig(examples=64, batch_size=32)
    base = image_fingerprint(plan, config, "b")
    assert (
        image_fingerprint(
            plan, ImageTrainConfig(examples=64, batch_size=32, checkpoints=(0.5,)), "b"
        )
        == base
    )
    assert (
        image_fingerprint(plan, ImageTrainConfig(examples=64, batch_size=32, lr=0.1), "b") != base
    )
    assert image_fingerprint(plan, config, "c") != base
    assert image_fingerprint(_tiny_plan("m", data_seed=1, n=64), config, "b") != base
    cued = ImageMemberPlan("m", "seed", 0, 0, plan.images.clone(), plan.labels, "tr")
    cued.images[0, 0, 0, 0] += 1.0
    assert image_fingerprint(cued, config, "b") != base
