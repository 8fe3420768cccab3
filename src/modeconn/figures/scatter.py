"""Per-member pictures: score vs. OOD metric (paper, Fig. 4), histograms per basin (Fig. 3),
Euclidean distance vs. convexity gap (Fig. 21), basin keeping, a metric's histogram."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from modeconn.errors import DataError
from modeconn.figures.style import (
    _GRID_COLOR,
    BASIN_PALETTE,
    BETWEEN_MEAN_COLOR,
    COLUMN_WIDTH,
    MAX_TICK_LABELS,
    NEUTRAL_COLOR,
    _as_labels,
    _as_series,
    _axes,
    _finite_values,
    _fmt,
    _legend,
    _legend_below,
    _numeric,
    _require_members,
    _style_axes,
    basin_colors,
    literal,
)

MEAN_COLOR = "#D55E00"  # vermillion (Okabe & Ito), against the blue bars


# --- basin score scatter -------------------------------------------------------------------


def score_scatter(
    scores: pd.Series,
    values: pd.Series,
    *,
    basins: pd.Series | None = None,
    xlabel: str = "basin score",
    ylabel: str = "HANS-LO accuracy",
    ax: Axes | None = None,
) -> Figure:
    """Scatter each member's score against a value, with a least-squares line and Pearson r.

    Args:
        scores: x value per member id (e.g. the basin score).
        values: y value per member id (e.g. OOD accuracy); must name the same members.
        basins: optional basin label per member id, to colour the points.
        xlabel, ylabel: axis labels.
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The figure. Members with NaN in either value are left out. The line
        (``gid`` ``"fit"``) is ``numpy.polyfit(x, y, 1)`` over the x range, drawn when at
        least two points with distinct x remain; its legend entry gives r and n.

    >>> s = pd.Series({"a": 0.0, "b": 1.0, "c": 2.0})
    >>> v = pd.Series({"a": 0.5, "b": 0.7, "c": 0.9})
    >>> fig = score_scatter(s, v)
    >>> fig.axes[0].get_legend().get_texts()[-1].get_text()
    'least squares (r = 1.00, n = 3)'
    """
    scores = _as_series(scores, "`scores`")
    values = _as_series(values, "`values`")
    _require_members(list(scores.index), values.index, "`values`")
    _require_members(list(values.index), scores.index, "`scores`")
    members = list(scores.index)
    x_all = _numeric(scores.loc[members], "`scores`")
    y_all = _numeric(values.loc[members], "`values`")
    keep = np.isfinite(x_all.to_numpy()) & np.isfinite(y_all.to_numpy())
    x, y = x_all.to_numpy()[keep], y_all.to_numpy()[keep]  # (n,)
    kept = [m for m, k in zip(members, keep, strict=True) if k]

    fig, ax = _axes(ax, COLUMN_WIDTH, 0.8 * COLUMN_WIDTH)
    style: dict[str, Any] = {"s": 18, "edgecolors": "white", "linewidths": 0.4, "zorder": 3}
    if basins is None:
        ax.scatter(x, y, color=NEUTRAL_COLOR, label=f"members (n={len(x)})", **style)
    else:
        basins = _as_labels(basins, members)
        colors = basin_colors(basins)
        labels = basins.loc[kept].astype(int).to_numpy()
        for lab, color in colors.items():
            mask = labels == lab
            if mask.any():
                ax.scatter(
                    x[mask], y[mask], color=color, label=f"basin {lab} (n={mask.sum()})", **style
                )

    if x.size >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        r = float(np.corrcoef(x, y)[0, 1]) if np.ptp(y) > 0 else float("nan")
        # Many vertices, not two: legend placement ("best") avoids vertices, not segments.
        xs = np.linspace(x.min(), x.max(), 50)
        (line,) = ax.plot(
            xs,
            slope * xs + intercept,
            color="#333333",
            linewidth=1.0,
            linestyle="--",
            label=f"least squares (r = {r:.2f}, n = {x.size})",
            zorder=2,
        )
        line.set_gid("fit")
    ax.set_xlabel(literal(xlabel))
    ax.set_ylabel(literal(ylabel))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    _style_axes(ax)
    _legend_below(ax)  # inside, it would hide points
    return fig


# --- histograms per basin ------------------------------------------------------------------


def basin_histograms(
    values: pd.Series,
    basins: pd.Series,
    *,
    xlabel: str,
    bins: int | Sequence[float] = 10,
    ax: Axes | None = None,
) -> Figure:
    """Overlaid histograms of ``values`` per basin, on shared bin edges.

    Args:
        values: value per member id (e.g. HANS-LO accuracy); NaN values are left out.
        basins: basin label per member id; must label every member of ``values``.
        xlabel: what the values are.
        bins: number of bins over the range of all finite values, or explicit edges.
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The figure, with one histogram (``ax.containers`` entry) per basin that has values.
    """
    values = _as_series(values, "`values`")
    basins = _as_labels(basins, list(values.index))
    numbers = _numeric(values, "`values`").dropna()
    if numbers.empty:
        raise DataError("`values` has no finite value to histogram; every value is NaN")
    if isinstance(bins, int | np.integer):
        if bins < 1:
            raise DataError(f"`bins` must be a positive number of bins; got {bins}")
        low, high = float(numbers.min()), float(numbers.max())
        if low == high:  # one value: give the bar a visible width
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise DataError("`bins` edges must be an increasing sequence of at least two numbers")

    fig, ax = _axes(ax, COLUMN_WIDTH, 0.7 * COLUMN_WIDTH)
    labels = basins.loc[numbers.index].astype(int)
    for lab, color in basin_colors(basins).items():
        group = numbers[labels == lab].to_numpy()
        if group.size == 0:
            continue
        ax.hist(
            group,
            bins=list(edges),
            histtype="stepfilled",
            color=color,
            alpha=0.35,
            edgecolor=color,
            linewidth=1.0,
            label=f"basin {lab} (n={group.size})",
        )
    ax.set_xlabel(literal(xlabel))
    ax.set_ylabel("members")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _style_axes(ax, grid_axis="y")
    _legend(ax, loc="best")
    return fig


# --- distance scatter ----------------------------------------------------------------------


def distance_scatter(
    x: pd.DataFrame,
    y: pd.DataFrame,
    *,
    basins: pd.Series,
    xlabel: str = "Euclidean distance",
    ylabel: str = "convexity gap",
    ax: Axes | None = None,
) -> Figure:
    """Two distances of every pair against each other, within vs. between basins (Fig. 21).

    Juneja et al. (2023, Fig. 21) ask whether basins are just weight-space neighbourhoods:
    a point per pair (x: one distance, y: another), coloured by whether the two members
    share a basin, with a least-squares line and Pearson r for each group.

    Args:
        x, y: N×N distance matrices indexed by member id (same members).
        basins: basin label per member id.
        xlabel, ylabel: axis labels.
        ax: axes to draw on; ``None`` makes a new figure.

    >>> ids = ["a", "b", "c", "d"]
    >>> e = pd.DataFrame(np.arange(16.0).reshape(4, 4), ids, ids); e = e + e.T
    >>> fig = distance_scatter(e, e ** 2, basins=pd.Series([0, 0, 1, 1], index=ids))
    >>> sorted(c.get_gid() for c in fig.axes[0].collections)
    ['between', 'within']
    """
    for name, m in (("x", x), ("y", y)):
        if not isinstance(m, pd.DataFrame) or list(m.index) != list(m.columns):
            raise DataError(f"`{name}` must be a square DataFrame indexed by member id")
    ids = list(x.index)
    _require_members(ids, y.index, "`y`")
    basins = _as_labels(basins, ids)
    within: list[tuple[float, float]] = []
    between: list[tuple[float, float]] = []
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            point = (float(x.loc[a, b]), float(y.loc[a, b]))
            (within if basins[a] == basins[b] else between).append(point)
    fig, ax = _axes(ax, COLUMN_WIDTH, 0.8 * COLUMN_WIDTH)
    for gid, pts, color, label in (
        ("within", within, BASIN_PALETTE[0], "same basin"),
        ("between", between, BETWEEN_MEAN_COLOR, "different basins"),
    ):
        if not pts:
            continue
        arr = np.asarray(pts, dtype=float)  # (n_pairs, 2)
        px, py = arr[:, 0], arr[:, 1]
        text = f"{label} (n={len(pts)})"
        if len(pts) >= 3 and np.ptp(px) > 0 and np.ptp(py) > 0:
            slope, intercept = np.polyfit(px, py, 1)
            xs = np.linspace(px.min(), px.max(), 2)
            ax.plot(xs, slope * xs + intercept, color=color, linewidth=1.2)
            text += f", r = {np.corrcoef(px, py)[0, 1]:.2f}"
        sc = ax.scatter(px, py, s=14, color=color, alpha=0.8, label=text, linewidths=0)
        sc.set_gid(gid)
    ax.set_xlabel(literal(xlabel))
    ax.set_ylabel(literal(ylabel))
    ax.set_title(literal(f"{ylabel} vs. {xlabel}, per pair"))
    _legend_below(ax)
    _style_axes(ax)
    return fig


def basin_keeping(
    kept: pd.Series, basins: pd.Series, *, draws: int | None = None, ax: Axes | None = None
) -> Figure:
    """How often each member stays in its basin when the evaluation sample is resampled.

    One bar per member (coloured by basin, sorted by basin then share), the share of
    bootstrap draws of the sample whose basins keep it where the full sample put it.
    """
    kept = _numeric(_as_series(kept, "`kept`"), "`kept`")
    basins = _as_labels(basins, list(kept.index))
    order = sorted(kept.index, key=lambda m: (basins[m], -kept[m], str(m)))
    colors = basin_colors(basins)
    fig, ax = _axes(ax, COLUMN_WIDTH, 0.7 * COLUMN_WIDTH)
    bars = ax.bar(
        range(len(order)),
        [kept[m] for m in order],
        color=[colors[int(basins[m])] for m in order],
        width=0.8,
    )
    for bar, m in zip(bars, order, strict=True):
        bar.set_gid(str(m))
    ax.set_ylim(0, 1.02)
    ax.axhline(1.0, color=_GRID_COLOR, linewidth=0.8)
    if len(order) <= MAX_TICK_LABELS:
        ax.set_xticks(range(len(order)), [literal(m) for m in order], rotation=90)
    else:
        ax.set_xticks([])
    ax.set_ylabel("share of draws in its basin")
    ax.set_title("basin kept under resampling" + (f" ({draws} draws)" if draws else ""))
    _style_axes(ax, grid_axis="y")
    return fig


# --- distribution of one metric over a population ------------------------------------------


def metric_histogram(
    values: Any,
    *,
    xlabel: str,
    bins: int | Sequence[float] = 20,
    ax: Axes | None = None,
) -> Figure:
    """Histogram of one metric over a population, with its median and mean marked.

    For a population's spread on one axis, e.g. HANS-LO non-entailed accuracy over the
    100 BERTs of McCoy et al. 2020, where runs alike on MNLI differ on HANS.

    Args:
        values: one value per member (Series or array-like); NaN values are left out.
        xlabel: what the values are.
        bins: number of equal bins over [min, max] of the values, or explicit increasing
            edges; either way the counts are ``numpy.histogram(values, bins)``'s.
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The figure. ``ax.containers[0]`` holds the bars (one per bin, heights = counts);
        the median and mean are vertical lines with ``gid`` ``"median"`` and ``"mean"``.

    >>> fig = metric_histogram([0.1, 0.2, 0.2, 0.9], xlabel="accuracy", bins=4)
    >>> [int(b.get_height()) for b in fig.axes[0].containers[0]]
    [3, 0, 0, 1]
    """
    numbers = _finite_values(values, "`values`")
    if numbers.size == 0:
        raise DataError("`values` has no value to histogram; it is empty or every value is NaN")
    if isinstance(bins, bool):
        raise DataError(f"`bins` must be a number of bins or a sequence of edges; got {bins!r}")
    if isinstance(bins, int | np.integer):
        if bins < 1:
            raise DataError(f"`bins` must be a positive number of bins; got {bins}")
        edges = np.histogram_bin_edges(numbers, bins=int(bins))
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise DataError("`bins` edges must be an increasing sequence of at least two numbers")
    counts, _ = np.histogram(numbers, bins=edges)  # (n_bins,)

    fig, ax = _axes(ax, COLUMN_WIDTH, 0.7 * COLUMN_WIDTH)
    # Bars from the counts (not ax.hist) so that they are exactly numpy's counts.
    ax.bar(
        edges[:-1],
        counts,
        width=np.diff(edges),
        align="edge",
        color=BASIN_PALETTE[0],
        alpha=0.8,
        edgecolor="white",
        linewidth=0.6,
        label=f"members (n={numbers.size})",
    )
    median, mean = float(np.median(numbers)), float(np.mean(numbers))
    for gid, x, color, style in (
        ("median", median, NEUTRAL_COLOR, "-"),
        ("mean", mean, MEAN_COLOR, "--"),
    ):
        line = ax.axvline(
            x, color=color, linestyle=style, linewidth=1.2, label=f"{gid} {_fmt(x)}", zorder=3
        )
        line.set_gid(gid)
    ax.set_xlabel(literal(xlabel))
    ax.set_ylabel("members")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _style_axes(ax, grid_axis="y")
    # One row under the x label: inside, the legend would hide bars or the two lines.
    _legend(
        ax,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        borderaxespad=3.4,  # clears the tick labels and the x label, as _legend_below
        ncol=3,
        columnspacing=1.2,
        frameon=False,
    )
    return fig
