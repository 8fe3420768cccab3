"""modeconn: find the basins of the loss surface a population of fine-tuned models sits in.

The core method is Juneja et al., "Linear Connectivity Reveals Generalization Strategies"
(ICLR 2023): evaluate the loss along the linear path between every pair of models,
measure each path's convexity gap, cluster the N×N matrix spectrally into basins, and
correlate each model's position between the basins with its out-of-distribution accuracy.
"""

from typing import TYPE_CHECKING, Any

from modeconn.config import sections as _sections
from modeconn.errors import (
    ConfigError,
    DataError,
    ModeconnError,
    PopulationError,
    StoreError,
    UnsafeCheckpointError,
)


def _analysis_sections() -> Any:
    """The study sections of every registered analysis (loaded when a study is validated).

    The study format (``config``) sits below the analyses and cannot import them; the
    package root, above both, connects them here.
    """
    from modeconn.analyses.registry import study_sections

    return study_sections()


_sections.install(_analysis_sections)

# The rest loads on first use, so `import modeconn` (and the CLI) starts without torch.
_LAZY = {
    "auc": "modeconn.measures.barriers",
    "barrier_height": "modeconn.measures.barriers",
    "convexity_gap": "modeconn.measures.barriers",
    "euclidean_distance": "modeconn.measures.barriers",
    "BasinFit": "modeconn.stats.basins",
    "correlate": "modeconn.stats.inference",
    "find_basins": "modeconn.stats.basins",
    "EvalResult": "modeconn.engine.evaluate",
    "Evaluator": "modeconn.engine.evaluate",
    "StudyRunner": "modeconn.pipeline",
    "Member": "modeconn.population.members",
    "Population": "modeconn.population.members",
    "load_state_dict": "modeconn.population.members",
    "StudyResult": "modeconn.results",
    "analyze": "modeconn.results",
    "analyze_study": "modeconn.analyses.run",
    "Store": "modeconn.store",
    "Study": "modeconn.config.study",
    "load_study": "modeconn.config.study",
    "parse_study": "modeconn.config.study",
}

if TYPE_CHECKING:
    from modeconn.analyses.run import analyze_study
    from modeconn.config.study import Study, load_study, parse_study
    from modeconn.engine.evaluate import EvalResult, Evaluator
    from modeconn.measures.barriers import auc, barrier_height, convexity_gap, euclidean_distance
    from modeconn.pipeline import StudyRunner
    from modeconn.population.members import Member, Population, load_state_dict
    from modeconn.results import StudyResult, analyze
    from modeconn.stats.basins import BasinFit, find_basins
    from modeconn.stats.inference import correlate
    from modeconn.store import Store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modeconn' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__version__ = "0.1.0"

__all__ = [
    "BasinFit",
    "ConfigError",
    "DataError",
    "EvalResult",
    "Evaluator",
    "Member",
    "ModeconnError",
    "Population",
    "PopulationError",
    "Store",
    "StoreError",
    "Study",
    "StudyResult",
    "StudyRunner",
    "UnsafeCheckpointError",
    "analyze",
    "analyze_study",
    "auc",
    "barrier_height",
    "convexity_gap",
    "correlate",
    "euclidean_distance",
    "find_basins",
    "load_state_dict",
    "load_study",
    "parse_study",
]
