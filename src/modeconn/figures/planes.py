"""The loss over the plane through three members (Fig. 2, after Garipov et al. 2018)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import matplotlib as mpl
import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure

from modeconn.errors import ConfigError, DataError
from modeconn.figures.style import (
    COLUMN_WIDTH,
    FONT_SIZES,
    HEATMAP_CMAP,
    _axes,
    _fmt,
    _style_axes,
    literal,
)

# --- loss plane ----------------------------------------------------------------------------


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
        texts = [literal(f"{m} ({role})") for m, role in zip(members, _ROLES, strict=True)]
    else:
        texts = [literal(t) for t in labels]
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
    ax.set_title(literal(f"{metric} on {split} · ‖θ₀θ₁‖ = {_fmt(float(result.scale))}"))
    colorbar = fig.colorbar(filled, ax=ax, fraction=0.05, pad=0.03, format=_level_format(edges))
    colorbar.set_label(literal(metric), fontsize=FONT_SIZES["label"])
    colorbar.ax.tick_params(labelsize=FONT_SIZES["tick"], length=2.5, width=0.6)
    colorbar.outline.set_linewidth(0.6)
    _style_axes(ax, grid=False)
    return fig
