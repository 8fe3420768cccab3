"""Pictures of why barriers appear (Singh et al. 2024, "Landscaping Linear Mode Connectivity").

* :func:`barrier_prediction` — every pair's barrier predicted from curvature (the exact,
  midpoint and endpoint forms of :mod:`modeconn.measures.barrier_forms`) against the
  barrier measured on the path, one marker per form, with the line y = x.
* :func:`layerwise_barriers` — the barrier when one block is interpolated and the rest
  kept at A (or at B), and the cumulative barriers as blocks are added (shallow-first,
  deep-first, random orders with their range).
* :func:`layerwise_heatmap` — per-block barriers between two runs' checkpoints at each
  stored training step: layers × training time.
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
    COLUMN_WIDTH,
    FONT_SIZES,
    FULL_WIDTH,
    HEATMAP_CMAP,
    _axes,
    _legend_below,
    _require_columns,
    _style_axes,
)

FORM_MARKERS = {"exact": "o", "midpoint": "s", "endpoint": "^"}


def barrier_prediction(
    pairs: pd.DataFrame,
    *,
    forms: Sequence[str] = ("exact", "midpoint", "endpoint"),
    title: str = "barrier predicted from curvature, per pair",
    ax: Axes | None = None,
) -> Figure:
    """Predicted vs. measured barrier per pair, one colour and marker per form.

    `pairs` has a ``measured`` column and one column per form. The dashed line is y = x
    (a perfect prediction); the legend carries each form's Pearson r over the pairs.

    >>> df = pd.DataFrame({"measured": [0.1, 0.5, 0.2], "exact": [0.1, 0.4, 0.2],
    ...                    "midpoint": [0.0, 0.6, 0.1], "endpoint": [0.3, 0.3, 0.3]})
    >>> fig = barrier_prediction(df)
    >>> sorted(c.get_gid() for c in fig.axes[0].collections)
    ['endpoint', 'exact', 'midpoint']
    """
    _require_columns(pairs, ["measured", *forms], "the barrier-prediction table")
    fig, ax = _axes(ax, COLUMN_WIDTH, 0.9 * COLUMN_WIDTH)
    x = pairs["measured"].to_numpy(dtype=float)
    lo, hi = [float(np.nanmin(x))], [float(np.nanmax(x))]
    for i, form in enumerate(forms):
        y = pairs[form].to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        label = form
        if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
            label += f" (r = {np.corrcoef(x[ok], y[ok])[0, 1]:.2f})"
        sc = ax.scatter(
            x[ok],
            y[ok],
            s=16,
            marker=FORM_MARKERS.get(form, "o"),
            color=BASIN_PALETTE[i % len(BASIN_PALETTE)],
            alpha=0.8,
            linewidths=0,
            label=label,
        )
        sc.set_gid(form)
        if ok.any():
            lo.append(float(y[ok].min()))
            hi.append(float(y[ok].max()))
    a, b = min(lo), max(hi)
    ax.plot([a, b], [a, b], linestyle="--", color="0.5", linewidth=1)
    ax.set_xlabel("measured barrier f(½) − ½(f(0) + f(1))")
    ax.set_ylabel("predicted barrier")
    ax.set_title(title)
    _legend_below(ax)
    _style_axes(ax)
    return fig


def layerwise_barriers(
    per_block: pd.DataFrame,
    cumulative: pd.DataFrame | None = None,
    *,
    label: str = "barrier",
    ax: Axes | None = None,
) -> Figure:
    """Per-block barriers (one bar pair per block: the rest at A, the rest at B), and, if
    given, cumulative barriers (one line per order) on a second axis.

    `per_block` is indexed by block with columns ``rest_a`` and ``rest_b``; `cumulative`
    is indexed by the number of blocks interpolated with one column per order; columns
    ``<order>_min`` and ``<order>_max`` draw a band around that order's line (the range
    over random orders).

    >>> pb = pd.DataFrame({"rest_a": [0.1, 0.3], "rest_b": [0.2, 0.1]}, index=["l0", "l1"])
    >>> fig = layerwise_barriers(pb)
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['l0', 'l1']
    """
    _require_columns(per_block, ["rest_a", "rest_b"], "the per-block barrier table")
    if len(per_block) == 0:
        raise DataError("the per-block barrier table is empty")
    width = FULL_WIDTH if cumulative is not None else COLUMN_WIDTH
    fig, ax = _axes(ax, width, 0.45 * FULL_WIDTH)
    axes = [ax]
    if cumulative is not None:
        ax.set_position((0.08, 0.3, 0.4, 0.6))
        axes.append(fig.add_axes((0.58, 0.3, 0.4, 0.6)))
    idx = np.arange(len(per_block))
    for j, (col, name) in enumerate((("rest_a", "rest at A"), ("rest_b", "rest at B"))):
        ax.bar(
            idx + (j - 0.5) * 0.4,
            per_block[col].to_numpy(dtype=float),
            width=0.4,
            color=BASIN_PALETTE[j],
            label=name,
        )
    ax.set_xticks(idx, [str(b) for b in per_block.index], rotation=45, ha="right")
    ax.set_ylabel(f"{label} (one block interpolated)")
    ax.legend(fontsize="small")
    _style_axes(ax)
    if cumulative is not None:
        cx = axes[1]
        k = cumulative.index.to_numpy()
        lines = [c for c in cumulative.columns if not str(c).endswith(("_min", "_max"))]
        for j, col in enumerate(lines):
            color = BASIN_PALETTE[(j + 2) % len(BASIN_PALETTE)]
            cx.plot(
                k,
                cumulative[col].to_numpy(dtype=float),
                marker="o",
                color=color,
                label=str(col),
            )
            if f"{col}_min" in cumulative and f"{col}_max" in cumulative:
                cx.fill_between(
                    k,
                    cumulative[f"{col}_min"].to_numpy(dtype=float),
                    cumulative[f"{col}_max"].to_numpy(dtype=float),
                    color=color,
                    alpha=0.2,
                    linewidth=0,
                )
        cx.set_xlabel("blocks interpolated")
        cx.set_ylabel(label)
        cx.legend(fontsize="small")
        _style_axes(cx)
    return fig


def layerwise_heatmap(
    training: pd.DataFrame,
    *,
    convention: str = "own",
    label: str = "barrier",
    ax: Axes | None = None,
) -> Figure:
    """Per-block barriers along training: blocks (rows, input at the top) × stored steps
    (columns, the final members last), one panel per variant (rest at A, rest at B).

    `training` has columns ``stage``, ``step``, ``block``, ``rest_a`` and ``rest_b``
    (:func:`modeconn.analyses.layerwise_tables.training_rows`), and ``rest_a_lmc``,
    ``rest_b_lmc`` for ``convention="lmc"`` (maximum minus the members' mean loss, which
    may be negative: the colour scale then starts below 0).

    >>> t = pd.DataFrame({"stage": [0, 0, 1, 1], "step": [5, 5, "final", "final"],
    ...                   "block": ["b0", "b1"] * 2, "rest_a": [0.1, 0.2, 0.0, 0.3],
    ...                   "rest_b": [0.1, 0.1, 0.2, 0.2]})
    >>> fig = layerwise_heatmap(t)
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['5', 'final']
    """
    if convention not in ("own", "lmc"):
        raise DataError(f"convention must be 'own' or 'lmc'; got {convention!r}")
    suffix = "_lmc" if convention == "lmc" else ""
    cols = {"rest_a": f"rest_a{suffix}", "rest_b": f"rest_b{suffix}"}
    _require_columns(training, ["stage", "step", "block", *cols.values()], "the training table")
    if len(training) == 0:
        raise DataError("the layer-wise training table is empty")
    blocks = list(dict.fromkeys(training["block"]))
    stages = sorted(training["stage"].unique())
    steps = [str(training.loc[training["stage"] == k, "step"].iloc[0]) for k in stages]
    if ax is None:
        fig = Figure(figsize=(FULL_WIDTH, 0.4 * FULL_WIDTH), layout="constrained")
        axes = list(fig.subplots(1, 2))
        variants = ["rest_a", "rest_b"]
    else:  # one panel on the given axes: rest at A
        fig, ax = _axes(ax, FULL_WIDTH, 0.4 * FULL_WIDTH)
        axes, variants = [ax], ["rest_a"]
    grids = [
        training.pivot(index="block", columns="stage", values=cols[col]).loc[blocks, stages]
        for col in variants
    ]
    hi = max(float(np.nanmax(g.to_numpy(dtype=float))) for g in grids)
    lo = min(0.0, *(float(np.nanmin(g.to_numpy(dtype=float))) for g in grids))
    titles = {"rest_a": "rest at A", "rest_b": "rest at B"}
    for a, grid, col in zip(axes, grids, variants, strict=True):
        title = titles[col]
        image = a.imshow(
            grid.to_numpy(dtype=float),
            aspect="auto",
            cmap=HEATMAP_CMAP,
            vmin=lo,
            vmax=hi if hi > lo else lo + 1,
        )
        a.set_xticks(range(len(steps)), steps, rotation=45, ha="right")
        a.set_yticks(range(len(blocks)), blocks)
        a.set_xlabel("training step")
        a.set_title(f"one block interpolated, {title}")
        _style_axes(a, grid=False)
    cbar = fig.colorbar(image, ax=axes, fraction=0.046, pad=0.03)
    cbar.set_label(label, fontsize=FONT_SIZES["label"])
    cbar.ax.tick_params(labelsize=FONT_SIZES["tick"])
    return fig


def toy_barrier(toy: dict[str, object], *, ax: Axes | None = None) -> Figure:
    """The toy double well (:func:`modeconn.measures.barrier_forms.double_well`): f(s) along
    the path, its chord, and the barrier each form predicts, drawn at s = ½ above the chord.

    >>> from modeconn.measures.barrier_forms import double_well
    >>> fig = toy_barrier(double_well(21))
    >>> sorted(c.get_gid() for c in fig.axes[0].collections)
    ['endpoint', 'exact', 'measured', 'midpoint']
    """
    s = np.asarray(toy["s"], dtype=float)
    f = np.asarray(toy["f"], dtype=float)
    fig, ax = _axes(ax, COLUMN_WIDTH, 0.8 * COLUMN_WIDTH)
    ax.plot(s, f, color="0.2", linewidth=1.4, label="f(s) = L(θA + sΔ)")
    ax.plot([0, 1], [f[0], f[-1]], linestyle="--", color="0.5", linewidth=1, label="chord")
    chord = 0.5 * (f[0] + f[-1])
    for i, form in enumerate(("measured", "exact", "midpoint", "endpoint")):
        value = float(toy[form])  # type: ignore[arg-type]
        sc = ax.scatter(
            [0.5],
            [chord + value],
            marker=FORM_MARKERS.get(form, "D"),
            s=30,
            color=BASIN_PALETTE[i % len(BASIN_PALETTE)],
            zorder=3,
            label=f"{form}: B = {value:.3g}",
        )
        sc.set_gid(form)
    ax.set_xlabel("s = 1 − α  (0 = A, 1 = B)")
    ax.set_ylabel("loss")
    ax.set_title("a ridge between two wells: the three forms")
    _legend_below(ax)
    _style_axes(ax)
    return fig
