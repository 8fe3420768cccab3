"""Dominoes pairs (compose: dominoes) and the box cue's position code (cue_spots)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeconn.config.splits import DigitsSpec, DigitsSplitConfig
from modeconn.data.digits import MNIST_MEAN, MNIST_STD, digits_part, partition
from modeconn.data.dominoes import EASY_TEST_PER_CLASS, load_easy_digits
from modeconn.errors import ConfigError

BLANK = float(torch.zeros(1).sub_(MNIST_MEAN).div_(MNIST_STD))  # as the split computes it


def _part(**kw) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_part(DigitsSpec(name="d", compose="dominoes", **kw))


def _top_classes(x: torch.Tensor, part: str) -> np.ndarray:
    """The class of the easy digit on top of each pair (−1 blank), found by lookup."""
    easy, labels = load_easy_digits()
    tr, te = partition(labels, test_per_class=EASY_TEST_PER_CLASS, seed=0)
    idx = tr if part == "train" else te
    pool = ((easy[idx] - MNIST_MEAN) / MNIST_STD).reshape(len(idx), -1)
    tops = x[:, 0, :28].reshape(len(x), -1)
    out = np.full(len(x), -1)
    for i, t in enumerate(tops):
        if torch.all(t == BLANK):
            continue
        hit = torch.nonzero(torch.all(torch.isclose(pool, t), dim=1)).flatten()
        assert len(hit) >= 1, "a cue half that is none of the part's easy digits"
        out[i] = labels[idx[int(hit[0])]]
    return out


def test_the_four_sets_put_the_right_half_on_top() -> None:
    clean_x, y = _part(cue="none")
    assert clean_x.shape == (1000, 1, 56, 28)
    assert torch.all(clean_x[:, :, :28] == BLANK)
    cue_x, cue_y = _part(cue="label")
    assert torch.equal(cue_y, y) and torch.equal(cue_x[:, :, 28:], clean_x[:, :, 28:])
    assert np.array_equal(_top_classes(cue_x, "test"), y.numpy())  # the label's own class
    rand_x, _ = _part(cue="random", cue_seed=1)
    agree = (_top_classes(rand_x, "test") == y.numpy()).mean()
    assert 0.03 < agree < 0.2  # drawn independently of the label: about 1 in 10
    ri_x, _ = _part(cue="random_image", cue_seed=2)
    assert torch.equal(ri_x[:, :, :28], cue_x[:, :, :28])  # the label's cue kept
    assert not torch.equal(ri_x[:, :, 28:], clean_x[:, :, 28:])  # another class's digit


def test_a_cue_fraction_cues_the_first_images_of_each_class() -> None:
    x, y = digits_part(DigitsSpec(name="d", compose="dominoes", part="train", cue="label",
                                  cue_fraction=0.6))  # fmt: skip
    tops = _top_classes(x, "train")
    for c in range(10):
        mine = tops[y.numpy() == c]
        k = int(len(mine) * 0.6)
        assert (mine[:k] == c).all() and (mine[k:] == -1).all()


def test_the_easy_digits_of_train_and_test_pairs_are_disjoint() -> None:
    _, labels = load_easy_digits()
    tr, te = partition(labels, test_per_class=EASY_TEST_PER_CLASS, seed=0)
    assert not set(tr) & set(te) and len(te) == 10 * EASY_TEST_PER_CLASS


def test_a_position_code_moves_the_box() -> None:
    spots = tuple((10, 2 * i) for i in range(10))
    x, y = digits_part(DigitsSpec(name="d", cue="label", cue_spots=spots))
    bright = (1.0 - MNIST_MEAN) / MNIST_STD
    for i in range(0, 1000, 97):
        r, c = spots[int(y[i])]
        assert torch.all(x[i, 0, r : r + 3, c : c + 3] == bright)


@pytest.mark.parametrize(
    ("spots", "match"),
    [
        ([[0, 0]] * 9, "one \\(row, column\\) per label, 10 in all; got 9"),
        ([[0, i] for i in range(9)] + [[26, 0]], "label 9's box at \\[26, 0\\], outside"),
        ([[0, 0]] * 10, "same spot"),
    ],
)
def test_a_position_code_that_does_not_fit_is_refused(spots, match) -> None:
    with pytest.raises(ValueError, match=match):
        DigitsSplitConfig(cue="label", cue_spots=spots)
    with pytest.raises(ConfigError, match=match):
        DigitsSpec(name="d", cue_spots=tuple(tuple(s) for s in spots))
