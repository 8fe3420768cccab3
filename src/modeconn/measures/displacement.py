"""How two runs leave a common point: the angle between their displacements.

Two children spawned from one parent at step k (Frankle et al. 2020) both start at θk
and end at θ1, θ2. Their displacements d₁ = θ1 − θk and d₂ = θ2 − θk say whether they
went the same way (cos θ near 1: down one mountainside, Singh et al. 2024) or apart (cos
near 0 or below: the two sides of a ridge). With ‖d₁‖ = ‖d₂‖ = r and cos c, the distance
between the children is r·√(2 − 2c), so the angle and the displacement lengths together
give the children's separation.

Pure maths: arrays in, floats out, float64 accumulation, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from modeconn.errors import DataError


def _flat(parts: Sequence[ArrayLike]) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def displacements(
    start: Sequence[ArrayLike], a: Sequence[ArrayLike], b: Sequence[ArrayLike]
) -> tuple[np.ndarray, np.ndarray]:
    """(a − start, b − start), each flattened over every tensor, in float64."""
    if not len(start) == len(a) == len(b):
        raise DataError(
            f"displacements need three weight lists of one length; got {len(start)}, "
            f"{len(a)} and {len(b)} tensors"
        )
    for i, (s, x, y) in enumerate(zip(start, a, b, strict=True)):
        if np.shape(s) != np.shape(x) or np.shape(s) != np.shape(y):
            raise DataError(
                f"tensor {i} has shapes {np.shape(s)}, {np.shape(x)}, {np.shape(y)}; the "
                "three runs must share one architecture"
            )
    origin = _flat(start)
    return _flat(a) - origin, _flat(b) - origin


def displacement_cosine(
    start: Sequence[ArrayLike], a: Sequence[ArrayLike], b: Sequence[ArrayLike]
) -> float:
    """cos ∠(a − start, b − start); NaN when either run did not move.

    >>> displacement_cosine([[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]])  # 45°
    0.7071067811865475
    >>> displacement_cosine([[1.0, 1.0]], [[2.0, 1.0]], [[0.0, 1.0]])  # opposite ways
    -1.0
    """
    d1, d2 = displacements(start, a, b)
    n1, n2 = float(np.linalg.norm(d1)), float(np.linalg.norm(d2))
    if n1 == 0.0 or n2 == 0.0:
        return math.nan
    return float(np.clip(d1 @ d2 / (n1 * n2), -1.0, 1.0))


def displacement_norms(
    start: Sequence[ArrayLike], a: Sequence[ArrayLike], b: Sequence[ArrayLike]
) -> tuple[float, float]:
    """(‖a − start‖, ‖b − start‖).

    >>> displacement_norms([[0.0, 0.0]], [[3.0, 4.0]], [[0.0, 1.0]])
    (5.0, 1.0)
    """
    d1, d2 = displacements(start, a, b)
    return float(np.linalg.norm(d1)), float(np.linalg.norm(d2))
