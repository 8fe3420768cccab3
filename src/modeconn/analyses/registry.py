"""Every analysis modeconn knows, in the order it measures, reads and reports them.

Adding an analysis is one module in this package and one line below. The order matters
twice: ``read`` sees the values of the analyses before it (Table 1 uses ε-sharpness),
and the report shows their sections in this order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeconn.analyses import (
    curvature,
    curves,
    distances,
    layerwise,
    mechanisms,
    planes,
    sharpness,
    spawn,
    table_one,
    trajectory,
    uncertainty,
)
from modeconn.analyses.base import Analysis, is_enabled, study_keys
from modeconn.config import sections as _sections
from modeconn.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from modeconn.config.study import Study

ANALYSES: list[Analysis] = [
    distances.Distances(),  # App. I table, Fig. 21
    sharpness.Sharpness(),  # ε-sharpness, App. F.4
    table_one.TableOne(),  # Table 1, R² and predictors (always)
    uncertainty.Uncertainty(),  # bootstrap over the evaluation sample
    planes.Planes(),  # loss planes, Fig. 2
    trajectory.Trajectory(),  # basins along training, Fig. 7
    curvature.Curvature(),  # barrier prediction from curvature (Singh et al. 2024)
    layerwise.Layerwise(),  # layer-wise LMC (Adilova et al. 2024)
    mechanisms.Mechanisms(),  # counterfactual connectivity, Lubana et al. Table 1
    curves.Curves(),  # trained Bézier curves / chains vs. the line (Garipov et al. 2018)
    spawn.Spawn(),  # spawn time: barrier between siblings vs. step (Frankle et al. 2020)
]


def all_analyses() -> list[Analysis]:
    return list(ANALYSES)


def get(key: str) -> Analysis:
    """The registered analysis of study key ``analyses.<key>``."""
    for a in ANALYSES:
        if key == a.key or key in study_keys(a):
            return a
    raise ConfigError(
        f"no analysis '{key}'; the registered ones are {', '.join(a.key for a in ANALYSES)}"
    )


def enabled(study: Study) -> list[Analysis]:
    """The analyses a study asks for (and those that always run), in registry order."""
    return [a for a in ANALYSES if is_enabled(a, study)]


def study_sections() -> dict[str, type[BaseModel]]:
    """``{study key: section type}`` of every registered analysis, for the study format."""
    out: dict[str, type[BaseModel]] = {}
    for a in ANALYSES:
        out.update(study_keys(a))
    return out


def register(analysis: Analysis) -> None:
    """Add an analysis at run time (a plug-in, or a test); its section becomes valid."""
    if not isinstance(analysis, Analysis):
        raise ConfigError(f"{analysis!r} does not satisfy modeconn.analyses.base.Analysis")
    taken = study_sections()
    clash = [k for k in study_keys(analysis) if k in taken]
    if clash:
        raise ConfigError(f"analysis key '{clash[0]}' is registered already; choose another")
    ANALYSES.append(analysis)
    _sections.refresh()


def unregister(key: str) -> None:
    """Remove the analysis registered under ``key`` (the inverse of :func:`register`)."""
    ANALYSES[:] = [a for a in ANALYSES if a.key != key]
    _sections.refresh()
