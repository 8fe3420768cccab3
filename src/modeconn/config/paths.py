"""The study's ``paths:`` section: which α grid, which splits, and how much of each path.

Two options spend fewer forward passes on a path than its full grid × sample, each
bounding what it saves by a loss:

* ``tolerance`` — adaptive α grids (:mod:`modeconn.stats.adaptive_grid`): a coarse subset
  of the grid, refined until the convexity gap is known to this loss;
* ``sequential`` — sequential samples (:mod:`modeconn.stats.sequential`): the path is
  evaluated on blocks of the fixed sample, in sample order, until the bootstrap interval
  of its curve above the endpoints' chord is narrower than ``sequential.tolerance`` at
  every α (never before ``min_blocks`` blocks) — or, with ``sequential.affinity``, until
  the pair's basin affinity exp(−CG²/2δ²) is known to that width, whatever the gap's
  own interval (a pair far outside δ, or far inside it, settles early)::

      paths:
        splits: [mnli]
        tolerance: 0.01                   # optional: adaptive α grids
        sequential: {tolerance: 0.05, block: 32, min_blocks: 2, confidence: 0.95}
        # sequential: {tolerance: 0.05, block: 32, affinity: 0.02}   # stop on the basins

With ``affinity`` and ``basins.delta: median`` (the default) δ is not known before the
sweep: every path is first evaluated on ``min_blocks`` blocks, δ is the median gap on that
prefix, and only the paths whose affinity is still unsettled go on
(:meth:`modeconn.pipeline.StudyRunner.sweep`).

Both can be on at once (each block round refines the α grid on the examples seen so far).
Imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from modeconn.config.study import Study

__all__ = ["PathsConfig", "SequentialConfig", "check_paths"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SequentialConfig(_Strict):
    """``paths.sequential``: stop evaluating a path once its convexity gap is known."""

    tolerance: float = Field(
        gt=0,
        description="stop when, at every α, the bootstrap interval of the mean loss above "
        "the endpoints' chord is narrower than this loss (the gap is then known to ± it)",
    )
    block: int = Field(default=32, ge=1, description="examples per block, in sample order")
    min_blocks: int = Field(
        default=2, ge=1, description="blocks evaluated before the rule may stop a path"
    )
    confidence: float = Field(
        default=0.95, gt=0, lt=1, description="level of the percentile bootstrap interval"
    )
    resamples: int = Field(default=200, ge=10, description="bootstrap draws per check")
    seed: int = Field(default=0, description="seed of the bootstrap draws")
    affinity: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="also stop a path of basins.split once its basin affinity "
        "exp(−CG²/2δ²) is known to this width (stats.sequential.affinity_width); "
        "default: the tolerance alone",
    )


class PathsConfig(_Strict):
    points: int = Field(default=11, ge=3, description="α grid size, α = 0, 1/(n-1), …, 1")
    splits: list[str] = Field(min_length=1)
    tolerance: float | None = Field(
        default=None,
        gt=0,
        description="adaptive α grids: evaluate a coarse subset of the grid and refine "
        "until each path's convexity gap is known to this loss (stats.adaptive_grid); "
        "default: every α",
    )
    sequential: SequentialConfig | None = Field(
        default=None,
        description="sequential samples: evaluate each path on blocks of the sample until "
        "its convexity gap is known (stats.sequential); default: the whole sample",
    )


def check_paths(study: Study) -> None:
    """The ``paths`` options against the rest of the study (ValueError naming the key)."""
    p = study.paths
    for key, on in (("paths.tolerance", p.tolerance), ("paths.sequential", p.sequential)):
        if on is None:
            continue
        if study.basins.distance != "convexity_gap":
            raise ValueError(
                f"{key} bounds the error of the convexity gap, but basins.distance is "
                f"'{study.basins.distance}'; set basins.distance: convexity_gap or remove {key}"
            )
        if study.sweep.backend != "local":
            raise ValueError(
                f"{key} runs on the local sweep only (sweep.backend is "
                f"'{study.sweep.backend}'); set sweep.backend: local or remove {key}"
            )
    seq = p.sequential
    if seq is None:
        return
    b = study.basins
    if (
        seq.affinity is not None
        and b.delta == "median"
        and b.landmarks is not None
        and b.landmark_choice != "random"
    ):
        raise ValueError(
            "paths.sequential.affinity with basins.delta: median takes δ from every "
            "planned path's first blocks, but basins.landmark_choice "
            f"'{b.landmark_choice}' plans the paths landmark by landmark; set basins.delta "
            "to a number, basins.landmark_choice: random, or remove paths.sequential.affinity"
        )
    first = seq.block * seq.min_blocks
    for name in p.splits:
        size = getattr(study.split_entry(name), "sample_size", None)
        if size is not None and first >= size:
            raise ValueError(
                f"paths.sequential: block × min_blocks = {seq.block} × {seq.min_blocks} = "
                f"{first} examples, but split '{name}' samples only {size}, so no path could "
                "stop early; lower paths.sequential.block or min_blocks, or remove "
                "paths.sequential"
            )
