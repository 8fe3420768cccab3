"""Paper-style figures of linear mode connectivity, drawn from results, never from models.

Juneja et al., "Linear Connectivity Reveals Generalization Strategies" (ICLR 2023), read a
population of fine-tuned models through four pictures, and this module draws each of them:

* :func:`interpolation_curves` - loss (or accuracy) along the linear path
  ``θα = α·θA + (1 − α)·θB`` for every evaluated pair, so ``α = 1`` is ``member_a``.
  Pairs inside one basin stay flat; pairs across basins show a barrier (paper, Fig. 1).
* :func:`distance_heatmap` - the convexity-gap (CG) matrix with members sorted by an OOD
  metric, so that basins show up as blocks lined up with generalization (paper, Fig. 2).
* :func:`score_scatter` - each member's basin score against its OOD accuracy (e.g. HANS
  lexical-overlap), with a least-squares line and Pearson's r (paper, Fig. 4).
* :func:`basin_histograms` - the distribution of a metric per basin (paper, Fig. 3).

Every plot function takes ``ax=None`` (``None`` makes a new column-wide figure), returns the
:class:`~matplotlib.figure.Figure` it drew on, never calls ``plt.show()`` and never touches
pyplot's global state: figures are :class:`matplotlib.figure.Figure` objects that
:func:`save` writes as PNG. Inputs are validated up front; a missing column or member id
raises :class:`~modeconn.errors.DataError` naming it. NaN values are dropped, not drawn.

One house style throughout: :data:`COLUMN_WIDTH` / :data:`FULL_WIDTH` inches, the font
sizes in :data:`FONT_SIZES`, :data:`HEATMAP_CMAP` for every heatmap, and the colour-blind
safe :data:`BASIN_PALETTE` (Okabe & Ito) for basins, with :data:`BETWEEN_COLOR` for pairs
that cross basins. :func:`house_style` applies the same settings to figures of your own.

>>> import pandas as pd
>>> m = pd.DataFrame([[0.0, 0.4], [0.4, 0.0]], index=["a", "b"], columns=["a", "b"])
>>> fig = distance_heatmap(m, order_by=pd.Series({"a": 0.9, "b": 0.1}, name="HANS-LO"))
>>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
['b', 'a']
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import MaxNLocator

from modeconn._atomic import open_atomic
from modeconn.errors import ConfigError, DataError

__all__ = [
    "BASIN_PALETTE",
    "BETWEEN_COLOR",
    "BETWEEN_MEAN_COLOR",
    "COLUMN_WIDTH",
    "DPI",
    "FONT_SIZES",
    "FULL_WIDTH",
    "HEATMAP_CMAP",
    "MAX_TICK_LABELS",
    "basin_colors",
    "basin_histograms",
    "basin_keeping",
    "best_worst_curves",
    "cluster_movement",
    "distance_heatmap",
    "distance_scatter",
    "house_style",
    "interpolation_curves",
    "save",
    "score_scatter",
]

# --- house style ---------------------------------------------------------------------------

COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
FULL_WIDTH = 7.0  # inches: both columns
DPI = 150  # of saved PNGs
FONT_SIZES = {"base": 8.0, "title": 9.0, "label": 8.0, "tick": 7.0, "legend": 7.0}
HEATMAP_CMAP = "viridis"
# Okabe & Ito (2008), colour-blind safe; yellow last because it is faint on white.
BASIN_PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#D55E00",  # vermillion
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
BETWEEN_COLOR = "#8C8C8C"  # pairs whose ends lie in different basins
BETWEEN_MEAN_COLOR = "#4D4D4D"  # their mean curve, darker to stand out of the bundle
NEUTRAL_COLOR = "#404040"  # when there are no basins to colour by
MAX_TICK_LABELS = 40  # above this many members, heatmap tick labels are hidden
_GRID_COLOR = "#E6E6E6"

_RC: dict[str, Any] = {
    "font.size": FONT_SIZES["base"],
    "axes.titlesize": FONT_SIZES["title"],
    "axes.labelsize": FONT_SIZES["label"],
    "xtick.labelsize": FONT_SIZES["tick"],
    "ytick.labelsize": FONT_SIZES["tick"],
    "legend.fontsize": FONT_SIZES["legend"],
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": _GRID_COLOR,
    "grid.linewidth": 0.6,
    "image.cmap": HEATMAP_CMAP,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
}


@contextlib.contextmanager
def house_style() -> Iterator[None]:
    """Apply the house style to matplotlib inside a ``with`` block, and restore it after.

    The plot functions here style their own axes explicitly, so they look the same with or
    without this context; use it for figures of your own that should match them.
    """
    with mpl.rc_context(_RC):  # type: ignore[arg-type]  # keys are checked at runtime
        yield


def basin_colors(basins: pd.Series) -> dict[int, str]:
    """Colour of each basin label: sorted labels take :data:`BASIN_PALETTE` in turn.

    The colours depend only on the set of labels, so one ``basins`` Series colours every
    figure of a report the same way.

    >>> basin_colors(pd.Series({"m0": 1, "m1": 0, "m2": 1}))
    {0: '#0072B2', 1: '#E69F00'}
    """
    labels = sorted({int(v) for v in basins.dropna().to_numpy()})
    return {lab: BASIN_PALETTE[i % len(BASIN_PALETTE)] for i, lab in enumerate(labels)}


# --- helpers -------------------------------------------------------------------------------


def _axes(ax: Axes | None, width: float, height: float) -> tuple[Figure, Axes]:
    """The axes to draw on and its root figure; a new column-wide figure when ``ax`` is None."""
    if ax is None:
        fig = Figure(figsize=(width, height), layout="constrained")
        return fig, fig.add_subplot()
    parent: Any = ax.get_figure()
    while isinstance(parent, SubFigure):  # a subfigure's parent may itself be a subfigure
        parent = parent.get_figure()
    if not isinstance(parent, Figure):
        raise ConfigError("`ax` is not attached to a matplotlib Figure; pass axes from a figure")
    return parent, ax


def _style_axes(
    ax: Axes, *, grid: bool = True, grid_axis: Literal["both", "x", "y"] = "both"
) -> None:
    # Tick labels and grid lines are created lazily at draw time, after any rc_context has
    # been left, so the house style is set on the axes themselves rather than via rcParams.
    ax.tick_params(labelsize=FONT_SIZES["tick"], length=2.5, width=0.6, pad=2)
    ax.xaxis.label.set_fontsize(FONT_SIZES["label"])
    ax.yaxis.label.set_fontsize(FONT_SIZES["label"])
    ax.title.set_fontsize(FONT_SIZES["title"])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_linewidth(0.6)
    if grid:
        ax.grid(False)
        ax.grid(True, axis=grid_axis, color=_GRID_COLOR, linewidth=0.6)
        ax.set_axisbelow(True)
    else:
        ax.grid(False)


def _legend(ax: Axes, **kwargs: Any) -> None:
    # A borderless white box: where the legend must sit on data, the data fades behind it.
    style: dict[str, Any] = {"frameon": True, "framealpha": 0.85, "edgecolor": "none"}
    ax.legend(fontsize=FONT_SIZES["legend"], handlelength=1.5, **{**style, **kwargs})


def _legend_below(ax: Axes) -> None:
    """A two-column legend under the x label, outside the data."""
    _legend(
        ax,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        borderaxespad=3.4,  # in legend font sizes: clears the tick labels and the x label
        ncol=2,
        columnspacing=1.2,
        frameon=False,
    )


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{what} has no column {', '.join(repr(c) for c in missing)}; "
            f"it has {list(map(str, df.columns))}. Pass the results table with these columns."
        )


def _require_members(ids: Sequence[Any], index: pd.Index, what: str) -> None:
    known = set(index)
    missing = [i for i in dict.fromkeys(ids) if i not in known]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(
            f"{what} has no entry for member id {shown}{more}; "
            f"give it one value per member (index = member id)."
        )


def _as_series(values: Any, what: str) -> pd.Series:
    if not isinstance(values, pd.Series):
        raise DataError(f"{what} must be a pandas Series indexed by member id; got {type(values)}")
    if values.index.has_duplicates:
        dup = values.index[values.index.duplicated()][0]
        raise DataError(f"{what} lists member id {dup!r} more than once; keep one value per id")
    return values


def _as_labels(basins: Any, members: Sequence[Any]) -> pd.Series:
    basins = _as_series(basins, "`basins`")
    _require_members(members, basins.index, "`basins`")
    sub = basins.loc[list(members)]
    if sub.isna().any():
        bad = sub.index[sub.isna()][0]
        raise DataError(f"`basins` has no label (NaN) for member id {bad!r}; label every member")
    return basins


def _numeric(series: pd.Series, what: str) -> pd.Series:
    try:
        return pd.to_numeric(series, errors="raise").astype(float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be numeric; {exc}") from exc


# --- interpolation curves ------------------------------------------------------------------


def interpolation_curves(
    points: pd.DataFrame,
    *,
    split: str,
    metric: str = "loss",
    basins: pd.Series | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw ``metric`` against α along the linear path of every pair, on one split.

    Args:
        points: path points, one row per (member_a, member_b, split, alpha) evaluation, with
            columns ``member_a``, ``member_b``, ``split``, ``alpha`` and ``metric``. Rows
            repeated at one α (several sample seeds or grids) are averaged; NaN values are
            dropped, and a pair with none left is not drawn.
        split: which evaluation split to draw (rows of other splits are ignored).
        metric: the column on the y axis, e.g. ``"loss"`` or ``"accuracy"``.
        basins: optional basin label per member id. Each pair is then coloured as
            "within basin k" or "between basins", and each group also gets its mean
            curve with a ±1 sd band (the band needs at least two pairs).
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The figure. ``ax.lines`` holds one line per drawn pair (``gid`` ``"A|B"``), then one
        mean line per group when ``basins`` is given (``gid`` ``"mean:<group>"``).

    >>> pts = pd.DataFrame({"member_a": "a", "member_b": "b", "split": "val",
    ...                     "alpha": [0.0, 0.5, 1.0], "loss": [0.3, 0.9, 0.2]})
    >>> len(interpolation_curves(pts, split="val").axes[0].lines)
    1
    """
    if not isinstance(points, pd.DataFrame):
        raise DataError(f"`points` must be a pandas DataFrame of path points; got {type(points)}")
    _require_columns(points, ["member_a", "member_b", "split", "alpha", metric], "`points`")
    rows = points.loc[points["split"] == split, ["member_a", "member_b", "alpha", metric]]
    if rows.empty:
        splits = sorted(map(str, points["split"].dropna().unique()))
        raise DataError(f"`points` has no rows for split {split!r}; its splits are {splits}")
    rows = rows.assign(
        alpha=_numeric(rows["alpha"], "column 'alpha'"),
        **{metric: _numeric(rows[metric], f"column {metric!r}")},
    )
    pairs = list(dict.fromkeys(zip(rows["member_a"], rows["member_b"], strict=True)))
    members = list(dict.fromkeys(m for pair in pairs for m in pair))
    colors: dict[int, str] = {}
    if basins is not None:
        basins = _as_labels(basins, members)
        colors = basin_colors(basins)

    # (pair) -> curve on its own α grid; repeated α averaged, NaN dropped.
    curves = (
        rows.dropna(subset=["alpha", metric])
        .groupby(["member_a", "member_b", "alpha"], sort=True)[metric]
        .mean()
    )

    fig, ax = _axes(ax, COLUMN_WIDTH, 0.75 * COLUMN_WIDTH)
    drawn = {(a, b) for a, b, _ in curves.index}
    # group key: (0, k) within basin k, (1, -1) between basins; sorts within-groups first.
    groups: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for a, b in pairs:
        if (a, b) not in drawn:
            continue  # every value NaN: nothing to draw
        curve = curves.loc[(a, b)]
        x, y = curve.index.to_numpy(float), curve.to_numpy(float)  # (n_alphas,)
        if basins is None:
            key, color = (0, -1), NEUTRAL_COLOR
        elif basins[a] == basins[b]:
            key = (0, int(basins[a]))
            color = colors[key[1]]
        else:
            key, color = (1, -1), BETWEEN_COLOR
        groups.setdefault(key, []).append((x, y))
        (line,) = ax.plot(x, y, color=color, linewidth=0.7, alpha=0.45, label="_nolegend_")
        line.set_gid(f"{a}|{b}")

    if basins is not None:
        for key in sorted(groups):
            name = "between basins" if key[0] else f"within basin {key[1]}"
            color = BETWEEN_COLOR if key[0] else colors[key[1]]
            mean_color = BETWEEN_MEAN_COLOR if key[0] else color
            x_mean, mean, sd = _mean_curve(groups[key])
            n = len(groups[key])
            (line,) = ax.plot(
                x_mean,
                mean,
                color=mean_color,
                linewidth=1.8,
                label=f"{name} (n={n})",
                zorder=3,
                # a white halo keeps the mean readable on top of its own bundle of pairs
                path_effects=[patheffects.withStroke(linewidth=3.2, foreground="white")],
            )
            line.set_gid(f"mean:{name}")
            if n >= 2:
                ax.fill_between(
                    x_mean, mean - sd, mean + sd, color=color, alpha=0.18, linewidth=0, zorder=2
                )
        if groups:
            _legend_below(ax)  # inside, any corner may hide a barrier

    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("α  (0 = member B, 1 = member A)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} along linear paths · split {split}")
    _style_axes(ax)
    return fig


def _mean_curve(
    curves: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and sample sd of several curves on the union of their α grids.

    A curve contributes at an α only where it was evaluated there, so pairs with
    different grids do not need interpolating.
    """
    grid = np.unique(np.concatenate([x for x, _ in curves]))  # (n_alphas,)
    table = np.full((len(curves), grid.size), np.nan)  # (n_pairs, n_alphas)
    for i, (x, y) in enumerate(curves):
        table[i, np.searchsorted(grid, x)] = y
    counts = np.sum(~np.isnan(table), axis=0)
    mean = np.nanmean(table, axis=0)
    sd = np.zeros(grid.size)
    several = counts >= 2
    sd[several] = np.nanstd(table[:, several], axis=0, ddof=1)
    return grid, mean, sd


def best_worst_curves(
    points: pd.DataFrame,
    *,
    split: str,
    ood: pd.Series,
    k: int | None = None,
    metric: str = "loss",
    ood_label: str = "OOD metric",
    ax: Axes | None = None,
) -> Figure:
    """Mean curves among the k best and among the k worst members by an OOD metric (Fig. 1).

    Juneja et al. (2023, Fig. 1) show that paths among the models that generalize best
    (e.g. highest HANS-LO accuracy) stay flat, paths among the worst too, and paths
    between the two groups rise. Pairs fall into three groups — both ends among the k
    best, both among the k worst, one end in each — and each group is drawn as its mean
    curve with a ±1 sd band. A best ↔ worst path is turned so that α = 1 is its better
    member, so the group's mean compares like with like.

    Args:
        points: path points as for :func:`interpolation_curves`.
        split: which evaluation split to draw.
        ood: the OOD metric per member id, which ranks the members.
        k: group size; default a third of the members (at least 2).
        metric: the column on the y axis.
        ood_label: how the legend names ``ood``.
        ax: axes to draw on; ``None`` makes a new figure.

    >>> pts = pd.DataFrame({"member_a": ["a", "a", "a", "b", "b", "c"] * 3,
    ...     "member_b": ["b", "c", "d", "c", "d", "d"] * 3, "split": "s",
    ...     "alpha": [0.0] * 6 + [0.5] * 6 + [1.0] * 6,
    ...     "loss": [1.0] * 6 + [1.1, 2, 2, 2, 2, 1.1] + [1.0] * 6})
    >>> fig = best_worst_curves(pts, split="s", ood=pd.Series({"a": .9, "b": .8, "c": .2, "d": .1}))
    >>> sorted(line.get_gid() for line in fig.axes[0].lines)
    ['best-best', 'best-worst', 'worst-worst']
    """
    if not isinstance(points, pd.DataFrame):
        raise DataError(f"`points` must be a pandas DataFrame of path points; got {type(points)}")
    _require_columns(points, ["member_a", "member_b", "split", "alpha", metric], "`points`")
    ood = _numeric(_as_series(ood, "`ood`"), "`ood`").dropna()
    n = len(ood)
    k = max(2, n // 3) if k is None else int(k)
    if not 2 <= k <= n // 2:
        raise ConfigError(
            f"k must lie in [2, {n // 2}] for {n} members with an OOD value (two disjoint "
            f"groups of at least 2); got {k}"
        )
    ranked = ood.sort_values(ascending=False)
    best, worst = set(ranked.index[:k]), set(ranked.index[-k:])
    rows = points.loc[points["split"] == split]
    if rows.empty:
        raise DataError(f"`points` has no rows for split {split!r}")
    curves = rows.groupby(["member_a", "member_b", "alpha"], sort=True)[metric].mean()
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for pair, curve in curves.groupby(level=[0, 1]):
        a, b = pair  # type: ignore[misc,str-unpack]  # a two-level group key
        if {a, b} <= best:
            key = "best-best"
        elif {a, b} <= worst:
            key = "worst-worst"
        elif (a in best and b in worst) or (a in worst and b in best):
            key = "best-worst"
        else:
            continue
        x = curve.index.get_level_values("alpha").to_numpy(float)
        y = curve.to_numpy(float)
        if key == "best-worst" and a in worst:
            x, y = (1.0 - x)[::-1], y[::-1]  # α = 1 at the better member, for every pair
        groups.setdefault(key, []).append((x, y))
    fig, ax = _axes(ax, COLUMN_WIDTH, 0.75 * COLUMN_WIDTH)
    names = {
        "best-best": (f"among the {k} best by {ood_label}", BASIN_PALETTE[2]),
        "worst-worst": (f"among the {k} worst", BASIN_PALETTE[4]),
        "best-worst": ("best ↔ worst", BETWEEN_MEAN_COLOR),
    }
    for key in ("best-best", "worst-worst", "best-worst"):
        if key not in groups:
            continue
        label, color = names[key]
        x, mean, sd = _mean_curve(groups[key])
        (line,) = ax.plot(
            x, mean, color=color, linewidth=1.8, label=f"{label} (n={len(groups[key])})"
        )
        line.set_gid(key)
        if len(groups[key]) >= 2:
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.18, linewidth=0)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("α  (best ↔ worst: 1 = the better member)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} along linear paths · split {split}")
    _legend_below(ax)
    _style_axes(ax)
    return fig


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
    colorbar.set_label(label, fontsize=FONT_SIZES["label"])
    colorbar.ax.tick_params(labelsize=FONT_SIZES["tick"], length=2.5, width=0.6)
    colorbar.outline.set_linewidth(0.6)

    ticks = np.arange(n)
    if n <= MAX_TICK_LABELS:
        names = [str(m) for m in members]
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
            f"{_name(strip)} ({span}), ascending",
            loc="left",
            fontsize=FONT_SIZES["tick"],
            pad=2,
        )
    return fig


def _numeric_frame(frame: pd.DataFrame) -> np.ndarray:
    try:
        return frame.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"`matrix` must hold numbers; {exc}") from exc


def _name(series: pd.Series) -> str:
    return str(series.name) if series.name is not None else "order"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


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
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel("members")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _style_axes(ax, grid_axis="y")
    _legend(ax, loc="best")
    return fig


# --- saving --------------------------------------------------------------------------------


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
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} vs. {xlabel}, per pair")
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
        ax.set_xticks(range(len(order)), [str(m) for m in order], rotation=90)
    else:
        ax.set_xticks([])
    ax.set_ylabel("share of draws in its basin")
    ax.set_title("basin kept under resampling" + (f" ({draws} draws)" if draws else ""))
    _style_axes(ax, grid_axis="y")
    return fig


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
        final = g[g["final"].astype(bool)]
        color = NEUTRAL_COLOR
        if len(final):
            color = colors.get(int(final["basin"].iloc[0]), NEUTRAL_COLOR)
        ax.plot(xs[:-1], ys[:-1], "o", color=color, markersize=3, alpha=0.7)
        for i in range(len(xs) - 1):
            ax.annotate(
                "",
                xy=(xs[i + 1], ys[i + 1]),
                xytext=(xs[i], ys[i]),
                arrowprops={"arrowstyle": "->", "color": color, "lw": 0.8, "alpha": 0.7},
            )
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


def save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG (:data:`DPI` dpi, tight bounding box); return the path.

    Parent directories are created, and the file is replaced atomically, so a reader never
    sees half a PNG.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"figures are saved as PNG; give a path ending in .png, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_atomic(path) as handle:
        fig.savefig(handle, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


# --- distribution of one metric over a population ------------------------------------------

DIVERGING_CMAP = "RdBu_r"  # correlations: blue negative, white 0, red positive
MEAN_COLOR = "#D55E00"  # vermillion (Okabe & Ito), against the blue bars
_CORRELATION_NAMES = {"pearson": "Pearson r", "spearman": "Spearman ρ", "kendall": "Kendall τ"}


def _finite_values(values: Any, what: str) -> np.ndarray:
    """1-D float array of the non-NaN entries of ``values`` (a Series or array-like)."""
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be numbers; {exc}") from exc
    if a.ndim != 1:
        raise DataError(f"{what} must be 1-D (one value per member); got shape {a.shape}")
    if np.isinf(a).any():
        i = int(np.flatnonzero(np.isinf(a))[0])
        raise DataError(f"{what} must be finite or NaN; got {a[i]} at position {i}")
    return a[~np.isnan(a)]


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
    ax.set_xlabel(xlabel)
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
    names = [str(c) for c in frame.columns]
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


__all__ += ["DIVERGING_CMAP", "correlation_matrix", "metric_histogram"]


# --- loss plane ----------------------------------------------------------------------------

from collections.abc import Mapping  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from matplotlib.colors import BoundaryNorm  # noqa: E402

if TYPE_CHECKING:
    from modeconn.engine.planes import PlaneResult

PLANE_BANDS = 10  # filled bands of loss_plane's "auto" levels
_PLANE_FIRST_STEP = 0.01  # first auto band: 1 % of the range above the best value
_ROLES = ("θ₀", "θ₁", "θ₂")


def _level_format(edges: np.ndarray) -> str:
    """The fewest fixed decimals (up to 6) that tell every level apart on a colour bar.

    >>> _level_format(np.array([0.40, 0.42, 0.91, 2.74]))
    '%.2f'
    """
    for decimals in range(7):
        if len({f"{e:.{decimals}f}" for e in edges}) == len(edges):
            return f"%.{decimals}f"
    return "%.3g"


def _plane_levels(z: np.ndarray, levels: Any, *, low_is_best: bool) -> np.ndarray:
    """Contour levels for a plane grid ``z`` (finite values only)."""
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        raise DataError("the plane's grid has no finite value to draw")
    lo, hi = float(finite.min()), float(finite.max())
    if isinstance(levels, str):
        if levels != "auto":
            raise ConfigError(
                f"levels must be 'auto', a number of bands or a sequence; got {levels!r}"
            )
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):  # a flat plane: one band around its value
            return np.array([lo - 0.5, lo + 0.5]) if lo == hi else np.array([lo, hi])
        # Geometric steps away from the best value (Garipov et al. 2018 space their levels
        # the same way): the low-loss valleys around the members get most of the bands.
        steps = np.concatenate([[0.0], np.geomspace(_PLANE_FIRST_STEP, 1.0, PLANE_BANDS)])
        return lo + (hi - lo) * steps if low_is_best else (hi - (hi - lo) * steps)[::-1]
    if isinstance(levels, bool):
        raise ConfigError(f"levels must be 'auto', a number of bands or a sequence; got {levels!r}")
    if isinstance(levels, int | np.integer):
        if levels < 1:
            raise ConfigError(f"levels must be a positive number of bands; got {levels}")
        if lo == hi:
            return np.array([lo - 0.5, lo + 0.5])
        return np.linspace(lo, hi, int(levels) + 1)
    edges = np.asarray(levels, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ConfigError("levels given as a sequence must increase and hold at least two values")
    return edges


def loss_plane(
    result: PlaneResult | Mapping[str, Any],
    *,
    ax: Axes | None = None,
    metric: str = "loss",
    labels: Sequence[str] | None = None,
    levels: int | Sequence[float] | Literal["auto"] = "auto",
    paths: bool = True,
) -> Figure:
    """Filled contours of a loss plane through three members, with the members marked.

    The picture of Juneja et al. (2023, Fig. 2), built as Garipov et al. (2018, Fig. 1):
    the plane through θ0, θ1, θ2 with θ0 at (0, 0), θ1 at (1, 0) and θ2 above the x axis
    (:mod:`modeconn.engine.planes`). Both axes are in units of ‖θ0θ1‖ and drawn with an equal
    aspect ratio, so distances on the page are true distances in weight space.

    Args:
        result: a :class:`~modeconn.engine.planes.PlaneResult`, or its ``to_dict()`` (as kept
            in the results store).
        ax: axes to draw on; ``None`` makes a new column-wide figure.
        metric: ``"loss"`` or a metric the plane was scored with (e.g. ``"accuracy"``).
        labels: three texts to mark θ0, θ1, θ2 with; default ``"<member id> (θ₀)"`` etc.
        levels: ``"auto"`` (:data:`PLANE_BANDS` bands spaced geometrically away from the
            best value: fine near the loss minimum, or near the accuracy maximum), a
            number of equal bands, or explicit increasing level values. Values outside
            explicit levels are drawn in the end colours.
        paths: draw the three linear paths between the members (dashed), the segments
            whose barriers the pairwise analysis measures.

    Returns:
        The figure. ``ax.collections`` hold the filled contours; each member's marker
        text is an annotation in ``ax.texts`` (``gid`` ``"member:<id>"``), and each path a
        line in ``ax.lines`` (``gid`` ``"path:<a>|<b>"``).

    >>> from modeconn.engine.planes import PlaneResult, PlaneSpec
    >>> spec = PlaneSpec(("a", "b", "c"), x=(-0.5, 0.5, 1.5), y=(-0.5, 0.5, 1.5))
    >>> plane = PlaneResult(spec, "mnli#0", 0, 64, np.arange(9.0).reshape(3, 3), {},
    ...                     [[0, 0], [1, 0], [0.5, 1]], scale=2.0)
    >>> [t.get_text() for t in loss_plane(plane).axes[0].texts]
    ['a (θ₀)', 'b (θ₁)', 'c (θ₂)']
    """
    if isinstance(result, Mapping):
        from modeconn.engine.planes import PlaneResult

        result = PlaneResult.from_dict(result)
    for attr in ("grid", "xs", "ys", "model_xy", "members", "scale", "split"):
        if not hasattr(result, attr):
            raise DataError(
                f"`result` must be a PlaneResult (or its to_dict()); got {type(result)}"
            )
    z = np.asarray(result.grid(metric), dtype=float)  # (ny, nx)
    xs, ys = result.xs, result.ys  # (nx,), (ny,)
    xy = np.asarray(result.model_xy, dtype=float)  # (3, 2)
    members = [str(m) for m in result.members]
    if labels is None:
        texts = [f"{m} ({role})" for m, role in zip(members, _ROLES, strict=True)]
    else:
        texts = [str(t) for t in labels]
        if len(texts) != 3:
            raise ConfigError(f"labels must be 3 texts (θ0, θ1, θ2); got {len(texts)}")
    edges = _plane_levels(z, levels, low_is_best=metric == "loss")

    width = xs[-1] - xs[0]
    height = ys[-1] - ys[0]
    # room for the colour bar beside the plot and the labels around it
    fig_h = float(np.clip((COLUMN_WIDTH - 0.9) * height / width + 0.75, 2.0, 1.5 * COLUMN_WIDTH))
    fig, ax = _axes(ax, COLUMN_WIDTH, fig_h)
    cmap = mpl.colormaps[HEATMAP_CMAP]
    # only explicit levels can leave values outside them: those get the end colours
    extend: Literal["both", "neither"] = (
        "both" if not isinstance(levels, str | int | np.integer) else "neither"
    )
    norm = BoundaryNorm(edges, ncolors=cmap.N, extend=extend)
    filled = ax.contourf(
        xs, ys, np.ma.masked_invalid(z), levels=edges, cmap=cmap, norm=norm, extend=extend
    )
    ax.contour(
        xs, ys, np.ma.masked_invalid(z), levels=edges, colors="white", linewidths=0.4, alpha=0.5
    )
    halo = [patheffects.withStroke(linewidth=2.4, foreground="white")]
    if paths:
        for i, j in ((0, 1), (0, 2), (1, 2)):
            (line,) = ax.plot(
                xy[[i, j], 0],
                xy[[i, j], 1],
                color="white",
                linestyle="--",
                linewidth=0.8,
                alpha=0.9,
                zorder=3,
            )
            line.set_gid(f"path:{members[i]}|{members[j]}")
    ax.scatter(
        xy[:, 0], xy[:, 1], s=26, facecolor="white", edgecolor="black", linewidth=0.8, zorder=4
    )
    for k in range(3):
        # θ0 and θ1 sit on the x axis and θ2 above it: labels centred below θ0 and θ1 and
        # above θ2 stay off the three paths and inside the grid's border
        above = k == 2
        note = ax.annotate(
            texts[k],
            xy=(xy[k, 0], xy[k, 1]),
            xytext=(0, 6 if above else -6),
            textcoords="offset points",
            ha="center",
            va="bottom" if above else "top",
            fontsize=FONT_SIZES["legend"],
            path_effects=halo,
            zorder=5,
        )
        note.set_gid(f"member:{members[k]}")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("x  (unit: ‖θ₀θ₁‖)")
    ax.set_ylabel("y  (unit: ‖θ₀θ₁‖)")
    split = str(result.split).split("#", 1)[0]
    ax.set_title(f"{metric} on {split} · ‖θ₀θ₁‖ = {_fmt(float(result.scale))}")
    colorbar = fig.colorbar(filled, ax=ax, fraction=0.05, pad=0.03, format=_level_format(edges))
    colorbar.set_label(metric, fontsize=FONT_SIZES["label"])
    colorbar.ax.tick_params(labelsize=FONT_SIZES["tick"], length=2.5, width=0.6)
    colorbar.outline.set_linewidth(0.6)
    _style_axes(ax, grid=False)
    return fig


__all__ += ["PLANE_BANDS", "loss_plane"]
