"""Basins along training (Juneja et al. 2023, Fig. 7).

Two views of the members' checkpoints (``train.checkpoints``, or a folder of them):

* **the paper's** (``analyses.trajectory.stages: true``): the checkpoints of each training
  stage — the k-th checkpoint of every member — are joined by linear paths among
  themselves, clustered as the final population is (:func:`stage_table`, the paper's
  ``plot/dynamics.py``: one distance matrix and one clustering per stage), and each
  checkpoint's score at its stage is drawn against its OOD metric at that stage, with
  arrows from stage to stage (:func:`modeconn.figures.stage_movement`);
* **the projection** (always): every checkpoint is joined by a linear path to every final
  member on ``basins.split``, through the sweep (same engine, same store, same resume),
  then placed in the final population's spectral embedding from its distances to the
  members (:func:`place_in_embedding`, an out-of-sample extension in the spirit of
  Nyström's) and given the basin of the nearer centroid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

from modeconn.analyses.base import MeasureContext
from modeconn.config.sections import SectionModel
from modeconn.errors import DataError, ModeconnError
from modeconn.measures.barriers import curve_distance
from modeconn.results import StudyResult, curves
from modeconn.stats.basins import BasinFit, find_basins
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
    stages: bool = Field(
        default=False,
        description="also cluster each training stage's checkpoints among themselves, as "
        "the paper's Fig. 7 (paths between every pair of one stage's checkpoints, and their "
        "OOD metrics)",
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


def stages_of(checkpoints: list[dict[str, Any]]) -> list[list[int]]:
    """Indices of the checkpoints of each training stage: stage k holds every member's
    k-th checkpoint (by step), so members trained for different numbers of steps still meet
    at the same fraction of their training.

    >>> stages_of([{"of": "a", "step": 20}, {"of": "a", "step": 10}, {"of": "b", "step": 12}])
    [[1, 2], [0]]
    """
    by_member: dict[Any, list[int]] = {}
    for i, ck in enumerate(checkpoints):
        by_member.setdefault(ck.get("of"), []).append(i)
    out: list[list[int]] = []
    for idx in by_member.values():
        for k, i in enumerate(sorted(idx, key=lambda i: checkpoints[i].get("step") or 0)):
            if k == len(out):
                out.append([])
            out[k].append(i)
    return out


def stage_table(store: Store, result: StudyResult) -> pd.DataFrame | None:
    """The paper's Fig. 7: per training stage, its checkpoints clustered among themselves.

    One row per checkpoint and per final member: ``stage`` (0, 1, …; the final members are
    the last stage), ``member``, ``step``, the ``score`` and ``basin`` of the stage's own
    clustering (``basins`` settings of the study; basin 0 = the stage's larger basin), and
    each OOD metric of ``basins.ood`` at that stage. A stage with fewer than 3 checkpoints,
    or whose clustering finds one basin, has NaN scores.
    """
    raw = store.get_meta("checkpoints")
    if raw is None:
        return None
    ckpts = json.loads(raw)
    b = result.study.basins
    found = curves(store, b.split)
    ood = {s: result.metric_column(s) for s in b.ood}
    keys = {s: result.splits[s]["key"] for s in ood}
    points = {s: store.member_points(split=keys[s], rows="all") for s in ood}
    rows: list[dict[str, Any]] = []
    for k, members in enumerate(stages_of(ckpts)):
        ids = [ckpts[i]["id"] for i in members]
        d = np.zeros((len(ids), len(ids)))
        for i, a in enumerate(ids):
            for j in range(i + 1, len(ids)):
                g = found.get((a, ids[j]))
                if g is None:
                    raise DataError(
                        f"no path {a}–{ids[j]} on '{b.split}' in {store.path}; rerun `modeconn "
                        "run` with analyses.trajectory.stages (the trajectory resumes)"
                    )
                dist = curve_distance(g["loss"].to_numpy(), g["alpha"].to_numpy(), b.distance)
                d[i, j] = d[j, i] = dist
        scores, labels = np.full(len(ids), np.nan), np.full(len(ids), -1)
        if len(ids) >= 3:
            try:
                fit = find_basins(d, **b.fit_options())
                scores, labels = fit.scores, fit.labels
            except ModeconnError:
                pass  # one basin at this stage: no score
        for i, c in enumerate(members):
            ck = ckpts[c]
            row = {
                "stage": k,
                "id": ck["id"],
                "member": ck["of"],
                "step": ck["step"],
                "final": False,
                "score": scores[i],
                "basin": int(labels[i]),
            }
            for s, col in ood.items():
                hit = points[s][points[s]["member_hash"] == ck["hash"]]
                metric = col.rsplit(".", 1)[1]
                row[col] = float(hit[metric].iloc[0]) if len(hit) and metric in hit else np.nan
            rows.append(row)
    last = len(stages_of(ckpts))
    for i, m in enumerate(result.members.index):
        row = {
            "stage": last,
            "id": m,
            "member": m,
            "step": result.members["step"].iloc[i] if "step" in result.members else None,
            "final": True,
            "score": result.fit.scores[i],
            "basin": int(result.fit.labels[i]),
        }
        row.update({col: float(result.members[col].iloc[i]) for col in ood.values()})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TrajectoryTables:
    trajectory: pd.DataFrame  # the projection: every checkpoint in the final embedding
    stages: pd.DataFrame | None = None  # the paper's Fig. 7: each stage clustered alone


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
        records = [
            {
                "id": r.id,
                "hash": r.hash,
                "step": ckpts[r.id].meta.step,
                "of": ckpts[r.id].meta.extra.get("checkpoint_of"),
                "arm": ckpts[r.id].meta.arm,
            }
            for r in ckpt_refs
        ]
        store.set_meta("checkpoints", json.dumps(records))
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
        if study.section(self.key).stages:
            # the paper's Fig. 7: every pair of one stage's checkpoints, and each
            # checkpoint's OOD metrics at its stage
            stage_list = stages_of(records)
            units += [
                (n + a, n + b, name)
                for stage in stage_list
                for i, a in enumerate(stage)
                for b in stage[i + 1 :]
            ]
            for ood in study.basins.ood:
                o = ctx.splits[ood]
                member_todo += [
                    (n + c, ood)
                    for c, r in enumerate(ckpt_refs)
                    if store.member_point(r.hash, o.key, o.spec.sample_seed, o.n) is None
                ]
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
            {s: ctx.splits[s] for s in {name, *(x for _, x in plan.member_todo)}},
            store,
            progress=ctx.progress,
        )

    def read(
        self, store: Store, result: StudyResult, earlier: Mapping[str, Any]
    ) -> TrajectoryTables | None:
        table = trajectory_table(store, result)
        if table is None:
            return None
        stages = None
        if result.study.section(self.key).stages:
            stages = stage_table(store, result)
        return TrajectoryTables(table, stages)

    def sections(self, result: StudyResult, value: TrajectoryTables | None) -> list[Section]:
        import modeconn.figures as figures
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        if value is None:
            return []
        split = result.study.basins.split
        out = []
        if value.stages is not None:
            ood = next(iter(result.ood_columns().values()), None)
            figs = []
            if ood is not None:
                figs.append(
                    (
                        f"Each stage's checkpoints clustered among themselves: score at the "
                        f"stage vs. {ood} at the stage, arrows from stage to stage (the "
                        "paper's Fig. 7).",
                        figures.stage_movement(value.stages, ood=ood),
                    )
                )
            out.append(
                Section(
                    title="Basins along training, stage by stage",
                    text=(
                        "The k-th checkpoint of every member forms stage k; each stage's "
                        "checkpoints are joined by linear paths among themselves on "
                        f"'{split}' and clustered with the study's basin settings (basin 0 "
                        "= the stage's larger basin), as the paper builds its Fig. 7; the "
                        "final members are the last stage."
                    ),
                    figures=tuple(figs),
                    tables=(("Checkpoints of each stage, clustered alone.", value.stages),),
                    provenance=provenance(result, split),
                )
            )
        moved = value.trajectory[~value.trajectory["final"]]
        out += [
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
                        figures.cluster_movement(value.trajectory),
                    ),
                ),
                tables=(("Checkpoints and final members in the embedding.", value.trajectory),),
                provenance=provenance(result, split),
            )
        ]
        return out

    def summary_lines(self, value: TrajectoryTables | None) -> list[str]:
        if value is None:
            return []
        moved = value.trajectory[~value.trajectory["final"]]
        lines = [f"basins along training: {len(moved)} checkpoints placed in the embedding"]
        if value.stages is not None:
            st = value.stages[~value.stages["final"]]
            sizes = [
                "/".join(map(str, np.bincount(g["basin"][g["basin"] >= 0], minlength=2)))
                for _, g in st.groupby("stage")
            ]
            lines.append(f"basins at each training stage (sizes): {', '.join(sizes)}")
        return lines
