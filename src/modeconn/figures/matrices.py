"""N×N pictures: the distance heatmap sorted by an OOD metric (paper, Fig. 2) and the
correlation matrix of the members' metrics (Fig. 11)."""

from __future__ import annotations

from typing import Literal

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from modeconn.errors import ConfigError, DataError
from modeconn.figures.style import (
    COLUMN_WIDTH,
    FONT_SIZES,
    FULL_WIDTH,
    HEATMAP_CMAP,
    MAX_TICK_LABELS,
    NEUTRAL_COLOR,
    _as_series,
    _axes,
    _fmt,
    _name,
    _numeric,
    _numeric_frame,
    _require_members,
    _style_axes,
    literal,
)

DIVERGING_CMAP = "RdBu_r"  # correlations: blue negative, white 0, red positive
_CORRELATION_NAMES = {"pearson": "Pearson r", "spearman": "Spearman ρ", "kendall": "Kendall τ"}


# --- distance heatmap ----------------------------------------------------------------------


def distance_heatmap(
    matrix: pd.DataFrame,
    *,
    order_by: pd.Series | None = None,
    label: str = "convexity gap",
    mask_diagonal: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Draw a member × member distance matrix (e.g. convexity gaps) as a heatmap.

    Args:
        matrix: square DataFrame indexed and columned by the same member ids. NaN cells
            (pairs not evaluated) are drawn in light grey.
        order_by: optional value per member id (e.g. HANS-LO accuracy); members are then
            sorted by it, ascending, NaN last, and the sorted values are drawn as a thin
            bar strip above the heatmap, labelled with the Series name.
        label: what the matrix holds; the colourbar's label.
        mask_diagonal: draw the diagonal grey and scale the colours to the off-diagonal
            entries (for distances far from 0, e.g. Euclidean, whose zero diagonal would
            otherwise flatten every pair into one colour).
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The figure. ``ax.images[0]`` holds the matrix in the drawn (sorted) order, and tick
        labels name the members unless there are more than :data:`MAX_TICK_LABELS`.
    """
    if not isinstance(matrix, pd.DataFrame):
        raise DataError(f"`matrix` must be a square pandas DataFrame; got {type(matrix)}")
    n_rows, n_cols = matrix.shape
    if n_rows != n_cols or n_rows == 0:
        raise DataError(
            f"`matrix` must be square and non-empty (members × members); got shape {matrix.shape}"
        )
    if matrix.index.has_duplicates:
        dup = matrix.index[matrix.index.duplicated()][0]
        raise DataError(f"`matrix` lists member id {dup!r} twice in its index")
    if set(matrix.index) != set(matrix.columns):
        extra = [c for c in matrix.columns if c not in set(matrix.index)]
        raise DataError(
            f"`matrix` columns and index must name the same members; column {extra[0]!r} "
            f"is not in the index"
        )
    members = list(matrix.index)
    strip: pd.Series | None = None
    if order_by is not None:
        order_by = _as_series(order_by, "`order_by`")
        _require_members(members, order_by.index, "`order_by`")
        strip = _numeric(order_by.loc[members], "`order_by`")
        # Stable sort, so ties keep the matrix's own order.
        strip = strip.sort_values(kind="mergesort", na_position="last")
        members = list(strip.index)
    values = _numeric_frame(matrix.loc[members, members])  # (n, n)
    if mask_diagonal:
        values = values.astype(float)  # a copy
        np.fill_diagonal(values, np.nan)

    n = len(members)
    size = COLUMN_WIDTH if n <= 25 else FULL_WIDTH * 0.75
    fig, ax = _axes(ax, size, size * (0.95 if strip is None else 1.05))
    cmap = mpl.colormaps[HEATMAP_CMAP].with_extremes(bad="#D9D9D9")
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, interpolation="nearest", aspect="equal"
    )
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    colorbar.set_label(literal(label), fontsize=FONT_SIZES["label"])
    colorbar.ax.tick_params(labelsize=FONT_SIZES["tick"], length=2.5, width=0.6)
    colorbar.outline.set_linewidth(0.6)

    ticks = np.arange(n)
    if n <= MAX_TICK_LABELS:
        names = [literal(m) for m in members]
        ax.set_xticks(ticks, names, rotation=90)
        ax.set_yticks(ticks, names)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if n > MAX_TICK_LABELS:  # tick labels name the members otherwise
        ax.set_xlabel("member")
        ax.set_ylabel("member")
    _style_axes(ax, grid=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)

    if strip is not None:
        # The sorting metric as bars above the matrix, sharing its x positions.
        bar_ax = ax.inset_axes((0.0, 1.03, 1.0, 0.16), sharex=ax)
        heights = strip.to_numpy(float)
        bar_ax.bar(ticks, np.nan_to_num(heights, nan=0.0), width=0.85, color=NEUTRAL_COLOR)
        finite = heights[np.isfinite(heights)]
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
            pad = 0.08 * (high - low) if high > low else max(abs(high) * 0.1, 0.05)
            bar_ax.set_ylim(min(0.0, low - pad) if low >= 0 else low - pad, high + pad)
            span = f"{_fmt(low)} to {_fmt(high)}"
        else:
            span = "all NaN"
        _style_axes(bar_ax, grid=False)
        bar_ax.set_yticks([])
        bar_ax.tick_params(axis="x", bottom=False, labelbottom=False)
        for side in ("left", "bottom"):
            bar_ax.spines[side].set_visible(False)
        bar_ax.set_title(
            literal(f"{_name(strip)} ({span}), ascending"),
            loc="left",
            fontsize=FONT_SIZES["tick"],
            pad=2,
        )
    return fig


# --- correlation matrix --------------------------------------------------------------------


def correlation_matrix(
    frame: pd.DataFrame,
    *,
    method: Literal["pearson", "spearman", "kendall"] = "pearson",
    ax: Axes | None = None,
) -> Figure:
    """Annotated heatmap of the correlations between the columns of ``frame``.

    For how a population's metrics move together, e.g. MNLI dev accuracy and the six HANS
    subsets over the 100 BERTs of McCoy et al. 2020 (Juneja et al. 2023, Fig. 11). The
    colour map is diverging (:data:`DIVERGING_CMAP`) on the fixed range [−1, 1], so white is
    exactly 0; every cell is annotated with its value to two decimals.

    Args:
        frame: one row per member, one numeric column per metric (at least two columns);
            the column names label the axes. Pairs are correlated over the rows where both
            are present (pandas ``DataFrame.corr``).
        method: ``"pearson"``, ``"spearman"`` or ``"kendall"``.
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The figure. ``ax.images[0]`` holds the matrix, ``frame.corr(method)``; an
        undefined correlation (a constant column) is a grey cell annotated "n/a".

    >>> f = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 3.0, 2.0]})
    >>> float(correlation_matrix(f).axes[0].images[0].get_array()[0, 1])
    0.5
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"`frame` must be a pandas DataFrame (members × metrics); got {type(frame)}"
        )
    if method not in _CORRELATION_NAMES:
        raise ConfigError(f"method must be one of {sorted(_CORRELATION_NAMES)}; got {method!r}")
    if frame.shape[1] < 2:
        raise DataError(f"`frame` needs at least two columns to correlate; got {frame.shape[1]}")
    if frame.columns.has_duplicates:
        dup = frame.columns[frame.columns.duplicated()][0]
        raise DataError(f"`frame` has column {dup!r} twice; give each metric one column")
    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(f"`frame` columns must be numeric; {bad} are not")
    if frame.shape[0] < 3:
        raise DataError(
            f"`frame` needs at least 3 rows (members) to correlate; got {frame.shape[0]}"
        )
    corr = frame.corr(method=method).to_numpy(dtype=float)  # (k, k)

    k = corr.shape[0]
    names = [literal(c) for c in frame.columns]
    size = COLUMN_WIDTH if k <= 5 else min(FULL_WIDTH, 0.45 * k + 1.6)
    fig, ax = _axes(ax, size, 0.9 * size)
    cmap = mpl.colormaps[DIVERGING_CMAP].with_extremes(bad="#D9D9D9")
    image = ax.imshow(
        np.ma.masked_invalid(corr), cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest"
    )
    annotation = FONT_SIZES["tick"] if k <= 8 else max(4.0, FONT_SIZES["tick"] - (k - 8) * 0.4)
    for i in range(k):
        for j in range(k):
            v = corr[i, j]
            shown = 0.0 if abs(v) < 0.005 else v  # 0.00, never −0.00
            text = "n/a" if np.isnan(v) else f"{shown:.2f}".replace("-", "−")  # typographic minus
            # White on the dark ends of the map, black elsewhere.
            color = "white" if np.isfinite(v) and abs(v) > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=annotation)
    ticks = np.arange(k)
    ax.set_xticks(ticks, names, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, names)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    colorbar.set_label(_CORRELATION_NAMES[method], fontsize=FONT_SIZES["label"])
    colorbar.ax.tick_params(labelsize=FONT_SIZES["tick"], length=2.5, width=0.6)
    colorbar.outline.set_linewidth(0.6)
    _style_axes(ax, grid=False)
    ax.tick_params(length=0)
    for side in ax.spines:
        ax.spines[side].set_visible(False)
    return fig
