"""House style and shared helpers of every figure: sizes, fonts, palettes, checks, save."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from modeconn._atomic import open_atomic
from modeconn.errors import ConfigError, DataError

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


def literal(text: object) -> str:
    """``text`` as matplotlib shows it literally: never mathtext, whatever it holds.

    Member ids, split, arm and study names come from users and reach titles, axis
    labels, legends and tick labels. Matplotlib reads a string with two unescaped ``$`` as
    mathtext (``$x^2$`` would show x², ``$\\frac{a}{b}$`` a fraction, and a malformed one
    would raise when drawn); each ``$`` escaped as ``\\$`` shows as ``$``, and without math
    mode a backslash shows as itself. Tick labels are built again at every draw, so the
    string itself is escaped (``Text.set_parse_math(False)`` would not reach them).
    Every plot function passes every string that is not its own through here.

    >>> literal("$\\frac{a}{b}$_x")
    '\\$\\frac{a}{b}\\$_x'
    >>> literal("m0")
    'm0'
    """
    return str(text).replace("$", r"\$")


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


def _numeric_frame(frame: pd.DataFrame) -> np.ndarray:
    try:
        return frame.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"`matrix` must hold numbers; {exc}") from exc


def _name(series: pd.Series) -> str:
    return str(series.name) if series.name is not None else "order"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


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
