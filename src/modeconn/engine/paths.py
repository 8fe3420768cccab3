"""Parameter points as functions of path coordinates.

The linear segment between members A and B is θα = α·θA + (1−α)·θB (Juneja et al. 2023,
following Frankle et al. 2020), evaluated on a uniform α grid; α = 0 is B and α = 1 is A.
The grid identifier (e.g. ``"linear:11"``) is part of every stored row's key, so results
on different grids never mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from modeconn.errors import ConfigError


def alpha_grid(points: int = 11) -> tuple[float, ...]:
    """α = 0, 1/(n−1), …, 1, rounded to 12 decimals so values are exact store keys.

    >>> alpha_grid(5)
    (0.0, 0.25, 0.5, 0.75, 1.0)
    """
    if points < 2:
        raise ConfigError(f"an α grid needs at least 2 points; got {points}")
    return tuple(round(float(a), 12) for a in np.linspace(0.0, 1.0, points))


def grid_id(path: str, points: int) -> str:
    return f"{path}:{points}"


def segment(
    point_a: Sequence[torch.Tensor], point_b: Sequence[torch.Tensor], alpha: float
) -> list[torch.Tensor]:
    """θα = α·θA + (1−α)·θB as new tensors (the engine writes the same in place)."""
    return list(torch._foreach_lerp(list(point_b), list(point_a), float(alpha)))
