"""Table 1 of Juneja et al. 2023: how far apart two basins lie on each metric.

Pure numpy/pandas: no torch, no plotting, no I/O. Re-exported by
:mod:`modeconn.stats.basins`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from modeconn.errors import ConfigError, DataError
from modeconn.stats._validate import label_vector, member_vector, two_clusters

__all__ = ["cluster_statistics"]

FloatArray = NDArray[np.float64]


def _std(v: FloatArray, ddof: int) -> float:
    return float(np.std(v, ddof=ddof)) if v.size > ddof else math.nan


def cluster_statistics(
    labels: ArrayLike,
    values: Mapping[str, ArrayLike],
    *,
    clusters: tuple[Any, Any] = (0, 1),
    ddof: int = 1,
) -> pd.DataFrame:
    """Table 1 of Juneja et al. 2023: how far apart two basins lie on each metric.

    For each metric f (e.g. ID accuracy, HANS-LO accuracy), with C1 the larger cluster and
    C2 the other:

    - ``mu_c1``, ``sigma_c1``, ``mu_c2``, ``sigma_c2``: mean and standard deviation of f
      over each cluster's members;
    - ``max_c2``: max_{w ∈ C2} f(w);
    - ``mean_gap`` = (μC1 − μC2) / σC1: the clusters' difference in means, in C1's
      standard deviations;
    - ``max_gap`` = (μC1 − max_{w ∈ C2} f(w)) / σC1: how many of C1's standard deviations
      separate C1's mean from the *best* member of C2. A positive ``max_gap`` means every
      member of C2 lies below C1's mean.

    C1 is ``clusters[0]`` (default basin 0, which :func:`find_basins` makes the largest)
    and C2 is ``clusters[1]`` (default basin 1); members of any other basin are left out.
    Sizes are given as ``n_c1`` and ``n_c2``.

    σ: ``ddof=1`` (sample standard deviation) by default. METHOD.md does not fix it; the
    paper's script (``plot/cluster_wise_means_std_max.py`` in aNOnWhyMooS/connectivity)
    prints ``np.std``, i.e. ``ddof=0``: pass ``ddof=0`` to reproduce its numbers. A cluster
    with no more than ``ddof`` members has σ = NaN; where σC1 is 0 or NaN the two gaps are
    NaN.

    Args:
        labels: (N,) basin label of each member.
        values: metric name → (N,) finite value of each member, in the order of ``labels``.
        clusters: the basin labels of C1 and C2.
        ddof: delta degrees of freedom of σ.

    Returns:
        One row per metric (index ``metric``, in the order of ``values``); columns
        ``n_c1, mu_c1, sigma_c1, n_c2, mu_c2, sigma_c2, max_c2, mean_gap, max_gap``.

    >>> t = cluster_statistics([1, 0, 0, 1, 0], {"ood": [0.2, 0.6, 0.7, 0.4, 0.8]})
    >>> t.loc["ood", ["mu_c1", "sigma_c1", "mu_c2", "max_c2", "mean_gap", "max_gap"]].round(3)
    mu_c1       0.7
    sigma_c1    0.1
    mu_c2       0.3
    max_c2      0.4
    mean_gap    4.0
    max_gap     3.0
    Name: ood, dtype: float64
    """
    lab = label_vector(labels, "labels")
    if isinstance(ddof, bool) or not isinstance(ddof, int | np.integer) or ddof < 0:
        raise ConfigError(
            f"ddof must be an integer ≥ 0 (1: sample σ, 0: the paper's); got {ddof!r}"
        )
    in_c1, in_c2 = two_clusters(lab, clusters)
    columns = [
        "n_c1", "mu_c1", "sigma_c1", "n_c2", "mu_c2", "sigma_c2", "max_c2", "mean_gap", "max_gap"
    ]  # fmt: skip
    rows: dict[str, dict[str, float]] = {}
    for name, v in values.items():
        f = member_vector(v, f"values[{name!r}]")
        if f.size != lab.size:
            raise DataError(
                f"values[{name!r}] must hold one number per member ({lab.size}, as labels); "
                f"got {f.size}"
            )
        c1, c2 = f[in_c1], f[in_c2]
        mu1, mu2, sd1, best2 = float(c1.mean()), float(c2.mean()), _std(c1, ddof), float(c2.max())
        usable = math.isfinite(sd1) and sd1 > 0
        rows[name] = {
            "n_c1": c1.size,
            "mu_c1": mu1,
            "sigma_c1": sd1,
            "n_c2": c2.size,
            "mu_c2": mu2,
            "sigma_c2": _std(c2, ddof),
            "max_c2": best2,
            "mean_gap": (mu1 - mu2) / sd1 if usable else math.nan,
            "max_gap": (mu1 - best2) / sd1 if usable else math.nan,
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table = table.astype({"n_c1": np.int64, "n_c2": np.int64})
    table.index.name = "metric"
    return table
