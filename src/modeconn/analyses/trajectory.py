"""Basins along training (Juneja et al. 2023, Fig. 7).

Every checkpoint of the members (``train.checkpoints``, or a folder of them) is joined by
a linear path to every final member on ``basins.split``, through the sweep (same engine,
same store, same resume), then placed in the final population's spectral embedding from
its distances to the members (:func:`place_in_embedding`, an out-of-sample extension in
the spirit of Nyström's) and given the basin of the nearer centroid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

from modeconn.analyses.base import MeasureContext
from modeconn.config.sections import SectionModel
from modeconn.errors import DataError
from modeconn.measures.barriers import curve_distance
from modeconn.results import StudyResult, curves
from modeconn.stats.basins import BasinFit
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.report.html import Section


class TrajectorySection(SectionModel):
    """Basins along training (the paper's Fig. 7): every checkpoint of the members is joined
    by a linear path to every final member on ``basins.split``, then placed in the spectral
    embedding of the final population. Checkpoints come from ``train.checkpoints`` (or a
    folder of them)."""

    checkpoints_dir: str | None = Field(
        default=None, description="folder of checkpoints; default: <members>/checkpoints"
    )

    def check(self, study: Study) -> None:
        no_checkpoints = study.train is None or not study.train.checkpoints
        if self.checkpoints_dir is None and no_checkpoints:
            raise ValueError(
                "analyses.trajectory needs checkpoints: set train.checkpoints (e.g. "
                "[0.33, 0.67]) or analyses.trajectory.checkpoints_dir"
            )

    def folder(self, study: Study) -> Path:
        """Where the checkpoints are: the section's folder, else <members>/checkpoints."""
        if self.checkpoints_dir is not None:
            return study.resolve(self.checkpoints_dir)
        return study.members_dir() / "checkpoints"


def place_in_embedding(
    distances: np.ndarray, fit: BasinFit
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put new models into a population's spectral embedding from their distances to it.

    ``distances`` is (M, N): each new model's distance to each of the N members. A new
    model lands at the similarity-weighted mean of the members' embedding coordinates,
    with the population's own similarity exp(−D²/(2δ²)) (an out-of-sample extension in
    the spirit of Nyström's; a model at distance 0 from one member and far from the
    others lands on that member). Returns (M, k) coordinates, (M,) scores
    ‖w − c₀‖ − ‖w − c₁‖ and (M,) nearest-centroid basins.

    >>> from modeconn.stats.basins import find_basins
    >>> fit = find_basins(np.array([[0, .1, 3, 3], [.1, 0, 3, 3], [3, 3, 0, .1],
    ...                             [3, 3, .1, 0.]]), n_basins=2, delta=1.0)
    >>> _, scores, basins = place_in_embedding(np.array([[0.0, 0.1, 3, 3]]), fit)
    >>> basins.tolist(), bool(scores[0] < 0)
    ([0], True)
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != fit.embedding.shape[0]:
        raise DataError(
            f"distances must be (models, {fit.embedding.shape[0]} members); got {d.shape}"
        )
    logw = -(d**2) / (2.0 * fit.delta**2)  # (M, N) log-similarities
    w = np.exp(logw - logw.max(axis=1, keepdims=True))  # stable: the nearest member weighs 1
    w /= w.sum(axis=1, keepdims=True)
    coords = w @ fit.embedding  # (M, k)
    to_c = np.linalg.norm(coords[:, None, :] - fit.centroids[None, :, :], axis=2)  # (M, k)
    return coords, to_c[:, 0] - to_c[:, 1], to_c.argmin(axis=1)


def trajectory_table(store: Store, result: StudyResult) -> pd.DataFrame | None:
    """Every checkpoint (and final member) with its step, embedding coordinates and basin."""
    raw = store.get_meta("checkpoints")
    if raw is None:
        return None
    ckpts = json.loads(raw)
    b = result.study.basins
    found = curves(store, b.split)
    ids = list(result.members.index)
    d = np.zeros((len(ckpts), len(ids)))
    for c, ck in enumerate(ckpts):
        for f, m in enumerate(ids):
            g = found.get((ck["id"], m))
            if g is None:
                raise DataError(
                    f"no path {ck['id']}–{m} on '{b.split}' in {store.path}; rerun "
                    "`modeconn run` (the trajectory resumes)"
                )
            d[c, f] = curve_distance(g["loss"].to_numpy(), g["alpha"].to_numpy(), b.distance)
    coords, scores, basins = place_in_embedding(d, result.fit)
    rows = [
        {
            "id": ck["id"],
            "member": ck["of"],
            "step": ck["step"],
            "final": False,
            "x": coords[c, 0],
            "y": coords[c, 1] if coords.shape[1] > 1 else 0.0,
            "score": scores[c],
            "basin": int(basins[c]),
            "distance_to_final": d[c, ids.index(ck["of"])] if ck["of"] in ids else np.nan,
        }
        for c, ck in enumerate(ckpts)
    ]
    emb = result.fit.embedding
    for i, m in enumerate(ids):
        rows.append(
            {
                "id": m,
                "member": m,
                "step": result.members["step"].iloc[i] if "step" in result.members else None,
                "final": True,
                "x": emb[i, 0],
                "y": emb[i, 1] if emb.shape[1] > 1 else 0.0,
                "score": result.fit.scores[i],
                "basin": int(result.fit.labels[i]),
                "distance_to_final": 0.0,
            }
        )
    return pd.DataFrame(rows).sort_values(["member", "final", "step"]).reset_index(drop=True)


class Trajectory:
    key = "trajectory"
    section = TrajectorySection
    cites = "Juneja et al. 2023, Fig. 7"
    summary = "every checkpoint joined to every final member, placed in the final embedding"
    needs_weights = True

    def measure(self, ctx: MeasureContext) -> None:
        """Paths from every checkpoint to every final member on the basins' split.

        The units go through the sweep: the plan lists the final members then the
        checkpoints, and its units join checkpoint A to final member B.
        """
        import dataclasses

        from modeconn.engine.paths import alpha_grid, grid_id
        from modeconn.engine.sweep import MemberRef, SweepPlan, run_sweep, unit_key
        from modeconn.population.members import Population

        study, store = ctx.study, ctx.store
        folder = study.section(self.key).folder(study)
        if not folder.is_dir():
            raise DataError(
                f"analyses.trajectory: no checkpoints folder {folder}; train with "
                "train.checkpoints set, or point analyses.trajectory.checkpoints_dir at one"
            )
        ckpts = Population.from_dir(folder)
        order = sorted(
            ckpts, key=lambda m: (str(m.meta.extra.get("checkpoint_of", m.id)), m.meta.step or 0)
        )
        ckpt_refs = []
        for m in order:
            ctx.check_weights(ckpts.load(m.id), m)
            ckpt_refs.append(MemberRef(m.id, ckpts.hash(m.id)))
        store.set_meta(
            "checkpoints",
            json.dumps(
                [
                    {
                        "id": r.id,
                        "hash": r.hash,
                        "step": ckpts[r.id].meta.step,
                        "of": ckpts[r.id].meta.extra.get("checkpoint_of"),
                        "arm": ckpts[r.id].meta.arm,
                    }
                    for r in ckpt_refs
                ]
            ),
        )
        name = study.basins.split
        split = ctx.splits[name]
        points = study.paths.points
        refs = list(ctx.members)
        members = (*refs, *ckpt_refs)
        n = len(refs)
        skeleton = SweepPlan(members, alpha_grid(points), grid_id("linear", points), (), (), 0, 0)
        member_todo = [
            (n + c, name)
            for c, r in enumerate(ckpt_refs)
            if store.member_point(r.hash, split.key, split.spec.sample_seed, split.n) is None
        ]
        done = store.done_units()
        units = [(n + c, f, name) for c in range(len(ckpt_refs)) for f in range(n)]
        plan = dataclasses.replace(
            skeleton,
            member_todo=tuple(member_todo),
            unit_todo=tuple(u for u in units if unit_key(skeleton, u[0], u[1], split) not in done),
            n_units=len(units),
            n_member_points=len(ckpt_refs),
        )
        if not plan.unit_todo and not plan.member_todo:
            return
        ctx.say(
            f"trajectory: {len(ckpt_refs)} checkpoints × {n} members on '{name}', "
            f"{len(plan.unit_todo)} of {len(units)} paths to do"
        )
        ev, pop = ctx.evaluator, ctx.population
        finals = {r.id for r in refs}
        run_sweep(
            plan,
            ev,
            lambda mid: ev.as_point((pop if mid in finals else ckpts).load(mid), name=mid),
            {name: split},
            store,
            progress=ctx.progress,
        )

    def read(
        self, store: Store, result: StudyResult, earlier: Mapping[str, Any]
    ) -> pd.DataFrame | None:
        return trajectory_table(store, result)

    def sections(self, result: StudyResult, value: pd.DataFrame | None) -> list[Section]:
        import modeconn.figures as figures
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        if value is None:
            return []
        split = result.study.basins.split
        moved = value[~value["final"]]
        return [
            Section(
                title="Basins along training",
                text=(
                    f"{len(moved)} checkpoints, each joined by a linear path to every final "
                    f"member on '{split}'; each is placed at the similarity-weighted mean "
                    "of the final members' spectral coordinates (similarity exp(−D²/2δ²) with "
                    "the final population's δ) and given the basin of the nearer centroid "
                    "(the paper's Fig. 7)."
                ),
                figures=(
                    (
                        "Members along training: checkpoints (small dots) and arrows in step "
                        "order to each final member (large dots, coloured by basin).",
                        figures.cluster_movement(value),
                    ),
                ),
                tables=(("Checkpoints and final members in the embedding.", value),),
                provenance=provenance(result, split),
            )
        ]

    def summary_lines(self, value: pd.DataFrame | None) -> list[str]:
        if value is None:
            return []
        moved = value[~value["final"]]
        return [f"basins along training: {len(moved)} checkpoints placed in the embedding"]
