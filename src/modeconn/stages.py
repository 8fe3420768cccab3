"""Sweeps run in stages, each planned from what the stages before it stored.

* **Landmarks chosen as their paths are measured** (``basins.landmark_choice: kmeans++ |
  farthest``): landmark by landmark, each next one drawn from the measured paths of those
  before (:func:`modeconn.stats.landmarks.sequential_landmarks`);
  :func:`modeconn.results.sequential_ids` redraws the same ones from the store.
* **The affinity stop's pilot** (``paths.sequential.affinity`` under ``basins.delta:
  median``): every planned path on its first ``min_blocks`` blocks, δ = the median gap on
  that prefix (:func:`modeconn.engine.blockwise.pilot_delta`), then block by block only
  the paths whose stored losses do not yet satisfy the rule with that δ
  (:func:`modeconn.engine.blockwise.unit_settled`).

Every stage is an ordinary sweep into the same store, so a kill anywhere resumes from the
store, and a rerun of a finished sweep evaluates nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from modeconn.engine.blockwise import BlockRule, pilot_delta, unit_settled
from modeconn.engine.planning import landmark_plan
from modeconn.engine.sweep import SweepPlan, SweepStats, unit_key

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.pipeline import StudyRunner
    from modeconn.store import Store

__all__ = ["affinity_stages", "block_rule", "landmark_stages", "landmarks_in_stages"]


def block_rule(study: Study) -> BlockRule | None:
    """``paths.sequential`` as the sweep's :class:`~modeconn.engine.blockwise.BlockRule`
    (δ left open under ``basins.delta: median``: :func:`affinity_stages` finds it)."""
    seq = study.paths.sequential
    if seq is None:
        return None
    b = study.basins
    return BlockRule(
        tolerance=seq.tolerance,
        block=seq.block,
        min_blocks=seq.min_blocks,
        confidence=seq.confidence,
        resamples=seq.resamples,
        seed=seq.seed,
        affinity=seq.affinity,
        delta=None if b.delta == "median" else float(b.delta),
        affinity_split=b.split if seq.affinity is not None else None,
    )


def landmarks_in_stages(study: Study, n: int) -> bool:
    """Whether the landmarks of ``n`` members are chosen as their paths are measured."""
    from modeconn.stats.landmarks import SEQUENTIAL

    b = study.basins
    return b.landmark_choice in SEQUENTIAL and b.landmarks is not None and b.landmarks < n - 1


def landmark_stages(runner: StudyRunner, store: Store) -> SweepStats:
    """Sweep landmark by landmark, each next one chosen from the measured paths."""
    from modeconn.results import distance_matrix
    from modeconn.stats.landmarks import landmark_pairs, sequential_landmarks

    b = runner.study.basins
    ids = [m.id for m in runner.members()]
    n = len(ids)
    total = SweepStats()

    def sweep_pairs(pairs: list[tuple[int, int]]) -> None:
        nonlocal total
        total = total + runner._execute(runner.plan(store, pairs=pairs), store)

    def row(i: int) -> Any:
        sweep_pairs([(min(i, j), max(i, j)) for j in range(n) if j != i])
        d = distance_matrix(store, split=b.split, metric=b.distance, missing_ok=True)
        return d.loc[ids[i], ids].to_numpy()

    assert b.landmarks is not None
    marks = sequential_landmarks(
        n, b.landmarks, seed=b.landmark_seed, row=row, method=b.landmark_choice
    )
    runner.say(
        f"landmarks ({b.landmark_choice} on measured paths): " + ", ".join(ids[i] for i in marks)
    )
    sweep_pairs(landmark_pairs(n, marks))  # the last landmark's paths
    return total


def affinity_stages(
    runner: StudyRunner, plan: SweepPlan, rule: BlockRule, store: Store
) -> SweepStats:
    """The pilot on ``min_blocks`` blocks, δ from it, then the unsettled paths."""
    pilot = runner._execute(
        replace(plan, sequential=replace(rule, max_blocks=rule.min_blocks)), store
    )
    splits, b = runner.splits(), runner.study.basins
    again = runner.plan(store, sequential=None)  # every unit on fewer examples than the sample
    n = len(again.members)
    pairs = landmark_plan(n, b) or [(i, j) for i in range(n) for j in range(i + 1, n)]
    keys = [unit_key(again, i, j, splits[b.split]) for i, j in pairs]
    first = rule.block * rule.min_blocks
    delta = pilot_delta(store, keys, first)
    full = replace(rule, delta=delta)
    todo = tuple(
        u
        for u in again.unit_todo
        if not unit_settled(store, unit_key(again, u[0], u[1], splits[u[2]]), full, u[2])
    )
    runner.say(
        f"paths.sequential.affinity: δ = {delta:.4g} (median gap on the first {first} "
        f"examples of {len(keys)} paths); {len(todo)} of {len(again.unit_todo)} stopped "
        "paths go on"
    )
    return pilot + runner._execute(replace(again, unit_todo=todo, sequential=full), store)
