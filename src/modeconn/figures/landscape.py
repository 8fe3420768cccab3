"""Pictures of why barriers appear (Singh et al. 2024, "Landscaping Linear Mode Connectivity").

* :func:`barrier_prediction` — every pair's barrier predicted from curvature (the exact,
  midpoint and endpoint forms of :mod:`modeconn.measures.barrier_forms`) against the
  barrier measured on the path, one marker per form, with the line y = x.
* :func:`layerwise_barriers` — the barrier when one block is interpolated and the rest
  kept at A (or at B), and the cumulative barriers as blocks are added.
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
    FULL_WIDTH,
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
    ax.set_title("barrier predicted from curvature, per pair")
    _legend_below(ax)
    _style_axes(ax)
    return fig


def layerwise_barriers(
    per_block: pd.DataFrame, cumulative: pd.DataFrame | None = None, *, ax: Axes | None = None
) -> Figure:
    """Per-block barriers (one bar pair per block: the rest at A, the rest at B), and, if
    given, cumulative barriers (one line per order) on a second axis.

    `per_block` is indexed by block with columns ``rest_a`` and ``rest_b``; `cumulative`
    is indexed by the number of blocks interpolated with one column per order.

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
    for j, (col, label) in enumerate((("rest_a", "rest at A"), ("rest_b", "rest at B"))):
        ax.bar(
            idx + (j - 0.5) * 0.4,
            per_block[col].to_numpy(dtype=float),
            width=0.4,
            color=BASIN_PALETTE[j],
            label=label,
        )
    ax.set_xticks(idx, [str(b) for b in per_block.index], rotation=45, ha="right")
    ax.set_ylabel("barrier (one block interpolated)")
    ax.legend(fontsize="small")
    _style_axes(ax)
    if cumulative is not None:
        cx = axes[1]
        for j, col in enumerate(cumulative.columns):
            cx.plot(
                cumulative.index.to_numpy(),
                cumulative[col].to_numpy(dtype=float),
                marker="o",
                color=BASIN_PALETTE[(j + 2) % len(BASIN_PALETTE)],
                label=str(col),
            )
        cx.set_xlabel("blocks interpolated")
        cx.set_ylabel("barrier")
        cx.legend(fontsize="small")
        _style_axes(cx)
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
    ax.set_xlabel("s (0 = A, 1 = B)")
    ax.set_ylabel("loss")
    ax.set_title("a ridge between two wells: the three forms")
    _legend_below(ax)
    _style_axes(ax)
    return fig
