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

The figures live in modules by kind — :mod:`~modeconn.figures.style` (house style,
:func:`save`), :mod:`~modeconn.figures.curves`, :mod:`~modeconn.figures.matrices`,
:mod:`~modeconn.figures.scatter`, :mod:`~modeconn.figures.planes`,
:mod:`~modeconn.figures.trajectory` — and every public name is re-exported here.

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

from matplotlib.figure import Figure

from modeconn.figures.curves import best_worst_curves, interpolation_curves
from modeconn.figures.matrices import DIVERGING_CMAP, correlation_matrix, distance_heatmap
from modeconn.figures.planes import PLANE_BANDS, loss_plane
from modeconn.figures.scatter import (
    basin_histograms,
    basin_keeping,
    distance_scatter,
    metric_histogram,
    score_scatter,
)
from modeconn.figures.style import (
    BASIN_PALETTE,
    BETWEEN_COLOR,
    BETWEEN_MEAN_COLOR,
    COLUMN_WIDTH,
    DPI,
    FONT_SIZES,
    FULL_WIDTH,
    HEATMAP_CMAP,
    MAX_TICK_LABELS,
    basin_colors,
    house_style,
    save,
)
from modeconn.figures.trajectory import cluster_movement, stage_movement

__all__ = [
    "BASIN_PALETTE",
    "BETWEEN_COLOR",
    "BETWEEN_MEAN_COLOR",
    "COLUMN_WIDTH",
    "DIVERGING_CMAP",
    "DPI",
    "FONT_SIZES",
    "FULL_WIDTH",
    "HEATMAP_CMAP",
    "MAX_TICK_LABELS",
    "PLANE_BANDS",
    "Figure",
    "basin_colors",
    "basin_histograms",
    "basin_keeping",
    "best_worst_curves",
    "cluster_movement",
    "correlation_matrix",
    "distance_heatmap",
    "distance_scatter",
    "house_style",
    "interpolation_curves",
    "loss_plane",
    "metric_histogram",
    "save",
    "score_scatter",
    "stage_movement",
]
