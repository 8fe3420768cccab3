"""Curves beyond the line: loss and a task metric along a trained curve and the straight line.

Garipov et al. (2018) and Juneja et al. (2023, Fig. 10) show that members a straight line
separates by a barrier can be joined by a curve of low loss; Lubana et al. (2023) ask the
same of members that use different mechanisms, on clean and counterfactual data.
:func:`curve_vs_line` draws, for every evaluated split (one column each, ID and OOD), the
loss (top row) and the metric (bottom row) along the trained curve (solid) and the line
(dashed) of every pair, one colour per pair; α = 1 is member A, α = 0 member B, the
convention of every path modeconn draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from modeconn.errors import DataError
from modeconn.figures.style import (
    BASIN_PALETTE,
    COLUMN_WIDTH,
    FONT_SIZES,
    FULL_WIDTH,
    _require_columns,
    _style_axes,
    literal,
)


def curve_vs_line(
    points: pd.DataFrame,
    *,
    metric: str | None = "accuracy",
    splits: Sequence[str] | None = None,
    roles: Mapping[str, str] | None = None,
) -> Figure:
    """Loss (and `metric`) along curve and line, one panel column per split.

    `points` is long: columns ``pair``, ``split``, ``path`` (``curve`` or ``line``),
    ``alpha`` (α = 1 at the pair's first member), ``loss`` and the metric's column.
    `roles` (``{split: "id" | "ood" …}``) labels each column's title.

    >>> rows = [{"pair": "a–b", "split": s, "path": p, "alpha": x, "loss": l, "accuracy": 0.9}
    ...         for s in ("clean", "cue") for p, bump in (("curve", 0.1), ("line", 1.0))
    ...         for x, l in ((0.0, 0.2), (0.5, 0.2 + bump), (1.0, 0.2))]
    >>> fig = curve_vs_line(pd.DataFrame(rows), roles={"clean": "id", "cue": "ood"})
    >>> len(fig.axes), fig.axes[0].get_title()
    (4, 'clean (id)')
    """
    cols = ["pair", "split", "path", "alpha", "loss"]
    if metric is not None:
        cols.append(metric)
    _require_columns(points, cols, "the curve table")
    if not len(points):
        raise DataError("the curve table is empty; measure the curves first (modeconn run)")
    names = list(splits) if splits is not None else list(dict.fromkeys(points["split"]))
    rows = 2 if metric is not None else 1
    width = min(FULL_WIDTH, max(COLUMN_WIDTH, 2.2 * len(names)))
    fig = Figure(figsize=(width, 1.9 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, len(names), squeeze=False, sharex=True)
    pairs = list(dict.fromkeys(points["pair"]))
    colour = {p: BASIN_PALETTE[i % len(BASIN_PALETTE)] for i, p in enumerate(pairs)}
    for j, split in enumerate(names):
        part = points[points["split"] == split]
        role = (roles or {}).get(split)
        for r, column in enumerate(["loss", metric][:rows]):
            ax = axes[r][j]
            assert column is not None
            for (pair, path), g in part.groupby(["pair", "path"], sort=False):
                g = g.sort_values("alpha")
                ax.plot(
                    g["alpha"],
                    g[column],
                    color=colour[pair],
                    linestyle="-" if path == "curve" else "--",
                    linewidth=1.2,
                    marker="o" if path == "curve" else None,
                    markersize=2.5,
                    label=literal(f"{pair}, {path}"),
                )
            if r == 0:
                ax.set_title(literal(f"{split} ({role})" if role else split))
            if j == 0:
                ax.set_ylabel("loss" if column == "loss" else literal(column))
            if r == rows - 1:
                ax.set_xlabel("α  (0 = member B, 1 = member A)")
            _style_axes(ax)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=2,
        fontsize=FONT_SIZES["legend"],
        frameon=False,
    )
    return fig
