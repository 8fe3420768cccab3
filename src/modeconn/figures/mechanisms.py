"""Accuracy along the linear paths from cue models to their fine-tuned members, one panel
per counterfactual set and one line per method (Lubana et al. 2023, Fig. 4–5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from modeconn.figures.style import FULL_WIDTH, _require_columns, _style_axes


def accuracy_along_paths(curves: pd.DataFrame, *, sets: list[str] | None = None) -> Figure:
    """Mean accuracy along the paths θ(α) = (1 − α)·θ_C + α·θ, θ_C the cue model.

    ``curves`` has one row per (pair, set, α) with columns ``method``, ``set``, ``alpha``
    and ``accuracy``; each line is the mean over a method's pairs, the band its range.

    >>> c = pd.DataFrame({"method": ["ft"] * 4, "set": ["cue"] * 2 + ["clean"] * 2,
    ...     "alpha": [0.0, 1.0] * 2, "accuracy": [1.0, 0.9, 0.8, 0.85]})
    >>> len(accuracy_along_paths(c).axes)
    2
    """
    _require_columns(curves, ["method", "set", "alpha", "accuracy"], "`curves`")
    sets = sets or list(dict.fromkeys(curves["set"]))
    fig = Figure(figsize=(FULL_WIDTH, 0.32 * FULL_WIDTH), layout="constrained")
    axes = fig.subplots(1, len(sets), sharey=True, squeeze=False)[0]
    methods = list(dict.fromkeys(curves["method"]))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for ax, name in zip(axes, sets, strict=True):
        for method in methods:
            g = curves[(curves["set"] == name) & (curves["method"] == method)]
            if g.empty:
                continue
            stats = g.groupby("alpha")["accuracy"].agg(["mean", "min", "max"]).sort_index()
            x = stats.index.to_numpy(float)
            ax.plot(x, stats["mean"], color=colors[method], label=method, linewidth=1.2)
            ax.fill_between(x, stats["min"], stats["max"], color=colors[method], alpha=0.15)
        ax.set_title(name)
        ax.set_xlabel("α  (0: cue model, 1: fine-tuned)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(np.linspace(0.0, 1.0, 3))
        _style_axes(ax)
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(loc="best", fontsize="small", frameon=False)
    return fig
