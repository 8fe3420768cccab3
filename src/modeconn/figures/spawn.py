"""Spawn time on one figure (Frankle et al. 2020; Singh et al. 2024, "mountainside and ridge").

:func:`spawn_figure` draws three panels from the spawn analysis's tables
(:mod:`modeconn.analyses.spawn`):

1. the barrier (and convexity gap) between sibling children vs. the step they were spawned
   at — Frankle et al.'s instability; it falls to 0 once children stay in one basin;
2. the cosine of the angle between the siblings' displacements from their spawn point;
3. the parent's loss along its trajectory (training loss per step, and the engine's loss
   at each spawn step), with f''(½) along the sibling paths on a second axis: a negative
   f''(½) is a ridge crossed halfway.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from modeconn.errors import DataError
from modeconn.figures.style import (
    BASIN_PALETTE,
    FONT_SIZES,
    FULL_WIDTH,
    _require_columns,
    _style_axes,
)


def _mean_line(
    ax: Axes, pairs: pd.DataFrame, column: str, color: str, label: str, style: str = "-"
) -> None:
    x = pairs["step"].to_numpy(dtype=float)
    y = pairs[column].to_numpy(dtype=float)
    ax.scatter(x, y, s=10, color=color, alpha=0.5, zorder=2)
    mean = pairs.groupby("step")[column].mean()
    line = ax.plot(
        mean.index.to_numpy(dtype=float),
        mean.to_numpy(dtype=float),
        marker="o",
        markersize=3,
        color=color,
        label=label,
        zorder=3,
    )
    line[0].set_gid(column)


def spawn_figure(
    pairs: pd.DataFrame, parent: pd.DataFrame, train_loss: Sequence[float] = ()
) -> Figure:
    """Barrier, angle and parent loss + curvature vs. spawn step, one row of three panels.

    `pairs` has one row per sibling pair: ``step``, ``barrier``, ``convexity_gap``,
    ``cosine``, ``f2_mid``; `parent` has ``step`` and ``loss`` (the engine's, at each spawn
    step and at the end); `train_loss` is the parent's training loss at steps 1, 2, ….

    >>> pairs = pd.DataFrame({"step": [0, 0, 10], "barrier": [0.5, 0.4, 0.0],
    ...     "convexity_gap": [0.5, 0.4, 0.0], "cosine": [0.1, 0.2, 0.9],
    ...     "f2_mid": [-2.0, -1.0, 0.5]})
    >>> fig = spawn_figure(pairs, pd.DataFrame({"step": [0, 10, 20], "loss": [2.3, 0.5, 0.2]}))
    >>> len(fig.axes), sorted(l.get_gid() for l in fig.axes[0].lines)
    (4, ['barrier', 'convexity_gap'])
    """
    _require_columns(pairs, ["step", "barrier", "convexity_gap", "cosine", "f2_mid"], "pairs")
    _require_columns(parent, ["step", "loss"], "the parent's loss table")
    if not len(pairs):
        raise DataError("the spawn table has no sibling pair; spawn at least 2 children")
    fig = Figure(figsize=(FULL_WIDTH, 0.36 * FULL_WIDTH), layout="constrained")
    ax_b, ax_c, ax_l = fig.subplots(1, 3)
    _mean_line(ax_b, pairs, "barrier", BASIN_PALETTE[0], "barrier")
    _mean_line(ax_b, pairs, "convexity_gap", BASIN_PALETTE[1], "convexity gap", "--")
    ax_b.set_xlabel("spawn step k")
    ax_b.set_ylabel("between siblings (loss)")
    ax_b.set_title("instability vs. spawn step")
    ax_b.legend(fontsize="small", frameon=False)
    _mean_line(ax_c, pairs, "cosine", BASIN_PALETTE[2], "cos")
    ax_c.axhline(0.0, color="0.6", linewidth=0.6)
    ax_c.set_xlabel("spawn step k")
    ax_c.set_ylabel("cos ∠(θc1 − θk, θc2 − θk)")
    ax_c.set_title("angle of the displacements")
    if len(train_loss):
        steps = np.arange(1, len(train_loss) + 1)
        ax_l.plot(
            steps,
            np.asarray(train_loss, dtype=float),
            color="0.7",
            linewidth=0.7,
            label="training loss (batch)",
        )
    ax_l.plot(
        parent["step"].to_numpy(dtype=float),
        parent["loss"].to_numpy(dtype=float),
        marker="o",
        markersize=3,
        color="0.2",
        label="loss on the split",
    )
    ax_l.set_xlabel("parent step")
    ax_l.set_ylabel("parent loss")
    ax_l.set_title("parent and curvature")
    twin = ax_l.twinx()
    f2 = pairs.groupby("step")["f2_mid"].mean()
    if np.isfinite(f2.to_numpy(dtype=float)).any():
        twin.plot(
            f2.index.to_numpy(dtype=float),
            f2.to_numpy(dtype=float),
            marker="s",
            markersize=3,
            color=BASIN_PALETTE[3],
            label="f''(½) siblings",
        )
        twin.axhline(0.0, color=BASIN_PALETTE[3], linewidth=0.5, linestyle=":")
    twin.set_ylabel("f''(½) along sibling paths", color=BASIN_PALETTE[3])
    twin.tick_params(labelsize=FONT_SIZES["tick"], length=2.5, width=0.6, pad=2)
    twin.yaxis.label.set_fontsize(FONT_SIZES["label"])
    twin.spines["top"].set_visible(False)
    handles = ax_l.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax_l.legend(handles[0] + more[0], handles[1] + more[1], fontsize="x-small", frameon=False)
    for ax in (ax_b, ax_c, ax_l):
        _style_axes(ax)
    return fig
