"""One seeded, class-stratified train/test partition, shared by the image splits
(:mod:`modeconn.data.digits`, :mod:`modeconn.data.dominoes`)."""

from __future__ import annotations

import numpy as np


def partition(
    labels: np.ndarray, *, test_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, class-stratified, disjoint (train, test) index arrays.

    Each class's indices are shuffled with one generator seeded by `seed` (classes in
    order 0–9); the first `test_per_class` go to test. Both arrays list the images
    class by class, each class in its shuffled order.

    >>> y = np.repeat(np.arange(3), 4)
    >>> tr, te = partition(y, test_per_class=1, seed=0)
    >>> len(tr), len(te), len(set(tr) & set(te))
    (9, 3, 0)
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return np.concatenate(train), np.concatenate(test)
