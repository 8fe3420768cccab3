"""Members along training (Fig. 7): in the final basins' embedding, and stage by stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from modeconn.figures.style import (
    BETWEEN_COLOR,
    COLUMN_WIDTH,
    NEUTRAL_COLOR,
    _axes,
    _legend_below,
    _require_columns,
    _style_axes,
    basin_colors,
)


def cluster_movement(trajectory: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """How members move between basins during training (the paper's Fig. 7).

    ``trajectory`` has one row per model (checkpoint or final member) with columns
    ``member``, ``step``, ``final``, ``score`` and ``basin``, as
    :func:`modeconn.analyses.trajectory_table` returns it. Each member is a chain of
    arrows from its first checkpoint to its final weights, drawn at its training step (x)
    and its basin score (y): ‖w − c₀‖ − ‖w − c₁‖ in the final population's spectral
    embedding, negative on basin 0's side and positive on basin 1's. The chain is
    coloured by the member's final basin; final members are the large dots. (The
    embedding's own coordinates are in the table; on a small population its first
    coordinate is nearly constant, so a plane of the two says less than the score.)

    >>> t = pd.DataFrame({"member": ["a", "a", "b", "b"], "step": [10, 20, 10, 20],
    ...     "final": [False, True, False, True], "score": [-0.1, -0.5, -0.2, 0.4],
    ...     "basin": [0, 0, 0, 1]})
    >>> len(cluster_movement(t).axes[0].texts)  # one arrow (an annotation) per member
    2
    """
    _require_columns(trajectory, ["member", "step", "final", "score", "basin"], "`trajectory`")
    finals = trajectory[trajectory["final"].astype(bool)]
    colors = basin_colors(pd.Series(finals["basin"].to_numpy(), index=finals["member"]))
    fig, ax = _axes(ax, COLUMN_WIDTH, 0.8 * COLUMN_WIDTH)
    ax.axhline(0.0, color=BETWEEN_COLOR, linewidth=0.8, linestyle="--")
    for _, g in trajectory.groupby("member", sort=True):
        g = g.sort_values(["final", "step"])  # checkpoints by step, the final member last
        xs, ys = g["step"].to_numpy(float), g["score"].to_numpy(float)
        _arrow_chain(ax, xs, ys, _final_color(g, colors))
    for basin in sorted(set(finals["basin"].astype(int))):
        g = finals[finals["basin"].astype(int) == basin]
        ax.scatter(
            g["step"], g["score"], s=36, color=colors[basin], label=f"final basin {basin}",
            edgecolors="white", linewidths=0.6, zorder=3,
        )  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("basin score  (< 0: basin 0 side)")
    ax.set_title("members along training")
    _legend_below(ax)
    _style_axes(ax)
    return fig


def stage_movement(stages: pd.DataFrame, *, ood: str, ax: Axes | None = None) -> Figure:
    """The paper's Fig. 7: each training stage clustered alone, score vs. OOD metric.

    ``stages`` has one row per checkpoint and final member with columns ``stage``,
    ``member``, ``score`` (from the clustering of that stage's checkpoints alone), ``final``
    and the OOD metric column ``ood``, as :func:`modeconn.analyses.trajectory.stage_table`
    returns it. Each member is a chain of arrows from its first stage to its final
    weights at (score at the stage, OOD metric at the stage), coloured by its final basin,
    as the paper's ``plot_quiver`` draws it; stages whose clustering gave no score are
    left out of the chain.

    >>> t = pd.DataFrame({"stage": [0, 1, 0, 1], "member": ["a", "a", "b", "b"],
    ...     "final": [False, True, False, True], "score": [-0.1, -0.5, -0.2, 0.4],
    ...     "basin": [0, 0, 0, 1], "hans.accuracy": [0.1, 0.2, 0.1, 0.6]})
    >>> len(stage_movement(t, ood="hans.accuracy").axes[0].texts)  # one arrow per member
    2
    """
    _require_columns(stages, ["stage", "member", "final", "score", "basin", ood], "`stages`")
    finals = stages[stages["final"].astype(bool)]
    colors = basin_colors(pd.Series(finals["basin"].to_numpy(), index=finals["member"]))
    fig, ax = _axes(ax, COLUMN_WIDTH, 0.8 * COLUMN_WIDTH)
    ax.axvline(0.0, color=BETWEEN_COLOR, linewidth=0.8, linestyle="--")
    for _, g in stages.groupby("member", sort=True):
        g = g.sort_values("stage").dropna(subset=["score", ood])
        xs, ys = g["score"].to_numpy(float), g[ood].to_numpy(float)
        _arrow_chain(ax, xs, ys, _final_color(g, colors))
    for basin in sorted(set(finals["basin"].astype(int))):
        g = finals[finals["basin"].astype(int) == basin]
        ax.scatter(
            g["score"], g[ood], s=36, color=colors[basin], label=f"final basin {basin}",
            edgecolors="white", linewidths=0.6, zorder=3,
        )  # fmt: skip
    ax.set_xlabel("basin score at each stage  (< 0: the stage's larger basin)")
    ax.set_ylabel(ood)
    ax.set_title("basins along training, stage by stage")
    _legend_below(ax)
    _style_axes(ax)
    return fig


def _final_color(member_rows: pd.DataFrame, colors: dict[int, str]) -> str:
    """The colour of a member's final basin (neutral if its final weights are absent)."""
    final = member_rows[member_rows["final"].astype(bool)]
    if not len(final):
        return NEUTRAL_COLOR
    return colors.get(int(final["basin"].iloc[0]), NEUTRAL_COLOR)


def _arrow_chain(ax: Axes, xs: np.ndarray, ys: np.ndarray, color: str) -> None:
    """Dots at every point but the last, and an arrow from each point to the next."""
    ax.plot(xs[:-1], ys[:-1], "o", color=color, markersize=3, alpha=0.7)
    for i in range(len(xs) - 1):
        ax.annotate(
            "",
            xy=(xs[i + 1], ys[i + 1]),
            xytext=(xs[i], ys[i]),
            arrowprops={"arrowstyle": "->", "color": color, "lw": 0.8, "alpha": 0.7},
        )
