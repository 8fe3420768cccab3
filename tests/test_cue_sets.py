"""The four counterfactual sets of Lubana et al. (2023) on the real packaged digits.

clean (``cue: none``), cue (``label``, p = 1), randomized cue (``random``) and randomized
image (``random_image``): each a ``digits`` split the engine evaluates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeconn.config.splits import DigitsSpec
from modeconn.data.digits import (
    BOX,
    CUE_SPOTS,
    MNIST_MEAN,
    MNIST_STD,
    build_split,
    digits_part,
    load_mnist_5k,
    normalise,
    partition,
    random_image_donors,
)

BRIGHT = (1.0 - MNIST_MEAN) / MNIST_STD


def _boxes(x: torch.Tensor) -> torch.Tensor:
    """(n, 10): whether a full bright box sits at each spot."""
    return torch.stack(
        [
            torch.isclose(x[:, 0, r : r + BOX, c : c + BOX], torch.tensor(BRIGHT))
            .flatten(1)
            .all(dim=1)
            for r, c in CUE_SPOTS
        ],
        dim=1,
    )


def _masked(x: torch.Tensor) -> torch.Tensor:
    """The images with every cue spot blanked (what is left is the digit)."""
    out = x.clone()
    for r, c in CUE_SPOTS:
        out[:, :, r : r + BOX, c : c + BOX] = 0.0
    return out


def test_the_cue_set_carries_every_label_box() -> None:
    x, y = digits_part(DigitsSpec("cue", cue="label", cue_fraction=1.0))
    assert bool(_boxes(x)[torch.arange(len(y)), y].all())


def test_the_clean_set_carries_no_box() -> None:
    x, _ = digits_part(DigitsSpec("clean"))
    assert float(_boxes(x).any(dim=1).float().mean()) < 0.02  # a stroke may fill a spot


def test_random_image_keeps_the_label_box_and_changes_the_digit() -> None:
    spec = DigitsSpec("ri", cue="random_image", cue_seed=3)
    x, y = digits_part(spec)
    _, y_clean = digits_part(DigitsSpec("clean"))
    assert torch.equal(y, y_clean)  # the label is kept
    assert bool(_boxes(x)[torch.arange(len(y)), y].all())  # with the label's box
    # the pixels off the spots are those of another test image, of another class
    images, labels = load_mnist_5k()
    _, test = partition(labels, test_per_class=spec.test_per_class, seed=spec.partition_seed)
    donors = random_image_donors(labels[test], spec.cue_seed)
    assert (labels[test][donors] != y.numpy()).all()
    assert torch.equal(_masked(x), _masked(normalise(images[test][donors])))
    # every other class is drawn (near uniformly)
    shift = (labels[test][donors] - y.numpy()) % 10
    counts = np.bincount(shift, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.5 * len(y) / 9


def test_random_image_is_seeded() -> None:
    a, _ = digits_part(DigitsSpec("ri", cue="random_image", cue_seed=0))
    b, _ = digits_part(DigitsSpec("ri", cue="random_image", cue_seed=0))
    c, _ = digits_part(DigitsSpec("ri", cue="random_image", cue_seed=1))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("cue", ["none", "label", "random", "random_image"])
def test_each_set_is_a_split_with_its_own_key(cue: str) -> None:
    split = build_split(DigitsSpec(cue, cue=cue, sample_size=50))
    assert split.n == 50 and split.key.startswith(f"{cue}#")
    others = {
        c: build_split(DigitsSpec(cue, cue=c, sample_size=50)).key
        for c in ("none", "label", "random", "random_image")
        if c != cue
    }
    assert split.key not in others.values()
