"""modeconn: find the basins of the loss surface a population of fine-tuned models sits in.

The core method is Juneja et al., "Linear Connectivity Reveals Generalization Strategies"
(ICLR 2023): evaluate the loss along the linear path between every pair of models,
measure each path's convexity gap, cluster the N×N matrix spectrally into basins, and
correlate each model's position between the basins with its out-of-distribution accuracy.
"""

from modeconn.barriers import auc, barrier_height, convexity_gap, euclidean_distance
from modeconn.basins import BasinFit, correlate, find_basins
from modeconn.errors import (
    ConfigError,
    DataError,
    ModeconnError,
    PopulationError,
    StoreError,
    UnsafeCheckpointError,
)
from modeconn.evaluate import EvalResult, Evaluator
from modeconn.pipeline import StudyRunner
from modeconn.population import Member, Population, load_state_dict
from modeconn.results import StudyResult, analyze
from modeconn.store import Store
from modeconn.study import Study, load_study, parse_study

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
