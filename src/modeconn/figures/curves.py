"""Loss along the linear paths: every pair coloured by basin (Fig. 1), best vs. worst."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from modeconn.errors import ConfigError, DataError
from modeconn.figures.style import (
    BASIN_PALETTE,
    BETWEEN_COLOR,
    BETWEEN_MEAN_COLOR,
    COLUMN_WIDTH,
    NEUTRAL_COLOR,
    _as_labels,
    _as_series,
    _axes,
    _legend_below,
    _numeric,
    _require_columns,
    _style_axes,
    basin_colors,
    literal,
)

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
    ax.set_ylabel(literal(metric))
    ax.set_title(literal(f"{metric} along linear paths · split {split}"))
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


# Juneja et al. 2023, Fig. 1: paths among the 5 best and among the 5 worst members.
BEST_WORST_K = 5


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
        k: group size; default 5, the paper's (fewer when there are under 10 members:
            at most half of them, at least 2).
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
    k = max(2, min(BEST_WORST_K, n // 2)) if k is None else int(k)
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
        "best-best": (literal(f"among the {k} best by {ood_label}"), BASIN_PALETTE[2]),
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
    ax.set_ylabel(literal(metric))
    ax.set_title(literal(f"{metric} along linear paths · split {split}"))
    _legend_below(ax)
    _style_axes(ax)
    return fig
