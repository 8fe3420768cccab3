"""Checks shared by the basin summaries and the inference on them: one value per member.

Private to :mod:`modeconn.stats`; each raises ``DataError``/``ConfigError`` naming what it
expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modeconn.errors import ConfigError, DataError

FloatArray = NDArray[np.float64]


def member_vector(v: ArrayLike, name: str) -> FloatArray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a 1-D array of real numbers ({exc})") from exc
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array (one value per member); got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{name} must be finite; got {a[i]} at index {i}")
    return a


def label_vector(labels: ArrayLike, name: str) -> NDArray[Any]:
    a = np.asarray(labels)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array (one label per member); got shape {a.shape}")
    return a


def two_clusters(
    lab: NDArray[Any], clusters: tuple[Any, Any]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Member masks of C1 and C2; each must have at least one member."""
    if len(clusters) != 2 or clusters[0] == clusters[1]:
        raise ConfigError(
            f"clusters must name two different basins (C1, C2), e.g. (0, 1); got {clusters!r}"
        )
    masks = (lab == clusters[0], lab == clusters[1])
    for name, basin, mask in zip(("C1", "C2"), clusters, masks, strict=True):
        if not mask.any():
            present = np.unique(lab).tolist()
            raise DataError(
                f"basin {basin!r} ({name}) has no members; the labels hold basins {present}. "
                "Pass the labels of find_basins(..., n_basins=2), or name two present basins "
                "with clusters=(c1, c2)."
            )
    return masks
