"""Spawn time: the mountainside and the ridge (Frankle et al. 2020; Singh et al. 2024).

From the study's section::

    analyses:
      spawn:
        steps: [0, 20, 50, 100]   # spawn steps k₁ < k₂ < …, each below the parent's length
        children: 2               # children per spawn step (≥ 2), data-order seeds seed+1+j
        seed: 0                   # the parent's data-order seed
        split: clean              # the evaluation split of the paths and losses
        points: 11                # α grid of the paths between siblings
        curvature: 3              # odd number of s for f''(s) along each sibling path (0: off)
        data: null                # training split (default: the first arm's `data`)

one parent run of the study's ``train`` recipe is trained, keeping its weights and
optimiser state at every k; ``children`` children start from each and train to the end with
their own data orders (:mod:`modeconn.population.spawn`; runs under ``<output>/spawn/``,
resumable like members). Then, on ``split``:

* the **barrier** (Entezari et al.) and the **convexity gap** of the linear path between
  every two siblings, evaluated by the engine's sweep (rows keyed by the children's weight
  hashes, BatchNorm by the study's policy) — Frankle et al.'s instability vs spawn step;
* the **cosine of the angle** between the siblings' displacements θc1 − θk and θc2 − θk from
  the spawn point (parameters only; :mod:`modeconn.measures.displacement`);
* the **parent's loss** along its trajectory: the engine's loss at every spawn step and at the
  end, and its per-step training loss;
* the **curvature along each sibling path**, f''(s) = ΔᵀH(θ(s))Δ (s from the first child,
  s = 1 − α of the sibling path's α) by Hessian-vector products
  (:class:`modeconn.measures.curvature.PathCurvature`), and its midpoint form −⅛ f''(½).

Frankle et al.'s finding, the expectation here: the barrier between siblings falls as k
grows (past an early step the children stay in one basin); Singh et al. read the early
barrier as a ridge crossing (negative f'' along the path, siblings leaving the spawn point
in different directions) and the late absence as a descent down one mountainside.

The run list (ids, weight hashes, steps, parent training losses) is a store meta record
``spawn:<settings>``; each sibling pair's cosine and curvature is a record keyed by the two
children's hashes, the spawn point's hash, the split's key and the settings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

from modeconn.analyses.base import MeasureContext, settings_fingerprint, value_key
from modeconn.config.sections import SectionModel
from modeconn.errors import DataError
from modeconn.measures.barriers import barrier_height, convexity_gap
from modeconn.results import StudyResult
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.report.html import Section

KIND = "spawn_pair"
VERSION = 1


class SpawnSection(SectionModel):
    """``analyses.spawn``: spawn steps, children per step, seed, split, path grid."""

    steps: list[int] = Field(description="spawn steps k₁ < k₂ < … (0 = the starting point)")
    children: int = Field(default=2, description="children per spawn step (≥ 2)")
    seed: int = Field(default=0, description="the parent's data-order seed")
    split: str = Field(description="evaluation split of the paths and losses")
    points: int = Field(default=11, ge=3, le=101, description="α points per sibling path")
    curvature: int = Field(default=3, ge=0, description="odd s count for f'' (0: off)")
    data: str | None = Field(default=None, description="training split (default: first arm's)")

    def check(self, study: Study) -> None:
        from modeconn.population.spawn import check_spawn

        study.check_split("analyses.spawn.split", self.split)
        if study.train is None:
            raise ValueError(
                "analyses.spawn trains its parent with the study's `train` recipe; add a "
                "`train` section (examples, batch_size, lr, …)"
            )
        study.check_split("analyses.spawn.data", self.train_split(study))
        if self.curvature and self.curvature % 2 == 0:
            raise ValueError(
                f"analyses.spawn.curvature must be odd (s = ½ on the grid) or 0; got "
                f"{self.curvature}"
            )
        check_spawn(
            self.steps,
            self.children,
            study.train.examples // study.train.batch_size,
            where="analyses.spawn",
        )

    def eval_splits(self) -> list[str]:
        return [self.split]

    def train_split(self, study: Study) -> str:
        if self.data is not None:
            return self.data
        assert study.train is not None
        return study.train.arms[0].data

    def settings(self) -> dict[str, Any]:
        """What the runs and records depend on besides the study's recipe and data."""
        return {"v": VERSION, **self.model_dump(exclude={"split"})}


def meta_key(section: SpawnSection) -> str:
    return f"spawn:{settings_fingerprint(section.settings())}"


def pair_key(hash_a: str, hash_b: str, hash_k: str, split_key: str, section: SpawnSection) -> str:
    a, b = sorted((hash_a, hash_b))
    return value_key(a, b, hash_k, split_key, settings_fingerprint(section.settings()))


@dataclass(frozen=True)
class SpawnValue:
    """What the spawn analysis read: per sibling pair, per spawn step, the parent."""

    split: str
    pairs: pd.DataFrame  # step, child_a, child_b, barrier, convexity_gap, cosine, …
    steps: pd.DataFrame  # per spawn step: means over its sibling pairs
    parent: pd.DataFrame  # step, loss (engine, on split) at every spawn step and the end
    train_loss: tuple[float, ...]  # the parent's per-step training loss
    hashes: tuple[str, ...]  # every run's weight hash (the records' keys)
    notes: tuple[str, ...] = field(default=())


def _siblings(record: Mapping[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(step, run a, run b) for every pair of children of one spawn step."""
    out = []
    for k in record["steps"]:
        kids = [r for r in record["children"] if r["spawn_step"] == k]
        out += [(k, a, b) for i, a in enumerate(kids) for b in kids[i + 1 :]]
    return out


class Spawn:
    key = "spawn"
    section = SpawnSection
    cites = (
        "Frankle et al. 2020 (instability vs spawn step); Singh et al. 2024 (mountainside, ridge)"
    )
    summary = (
        "children spawned from one parent run at steps k: barrier and convexity gap between "
        "siblings, angle of their displacements, parent loss and curvature along the paths"
    )
    needs_weights = True

    def measure(self, ctx: MeasureContext) -> None:
        import dataclasses

        from modeconn.engine.paths import alpha_grid, grid_id
        from modeconn.engine.spec import engine_spec
        from modeconn.engine.sweep import MemberRef, SweepPlan, is_swept, run_sweep, unit_key
        from modeconn.population.members import Population
        from modeconn.population.spawn import PARENT, SpawnRuns, train_spawn, trainer_for

        study, store = ctx.study, ctx.store
        s: SpawnSection = study.section(self.key)
        trainer = trainer_for(study, engine_spec(study).model, s.train_split(study))
        runs = SpawnRuns(
            study.out_path() / "spawn" / f"seed-{s.seed}", tuple(s.steps), s.children, s.seed
        )
        train_spawn(trainer, runs, progress=ctx.progress, say=ctx.say)

        finals = Population.from_dir(runs.folder)
        ckpts = Population.from_dir(runs.folder / "checkpoints")
        children = [finals[cid] for k in s.steps for cid in runs.child_ids(k)]
        points = [ckpts[f"{PARENT}@{k}"] for k in s.steps] + [finals[PARENT]]
        record: dict[str, Any] = {
            "steps": list(s.steps),
            "total": trainer.total,
            "children": [
                {
                    "id": m.id,
                    "hash": finals.hash(m.id),
                    "spawn_step": m.meta.extra["spawn_step"],
                    "seed": m.meta.data_seed,
                }
                for m in children
            ],
            "parent": [
                {
                    "id": m.id,
                    "hash": (finals if m.id == PARENT else ckpts).hash(m.id),
                    "step": m.meta.step,
                }
                for m in points
            ],
            "train_loss": list(finals[PARENT].meta.extra.get("losses", [])),
        }
        if store.get_meta(meta_key(s)) != json.dumps(record):
            for m in children:
                ctx.check_weights(finals.load(m.id), m)
            store.set_meta(meta_key(s), json.dumps(record))

        # the engine: sibling paths and every run's loss on the split
        split = ctx.splits[s.split]
        refs = [MemberRef(r["id"], r["hash"]) for r in record["children"]]
        refs += [MemberRef(r["id"], r["hash"]) for r in record["parent"]]
        index = {r.id: i for i, r in enumerate(refs)}
        skeleton = SweepPlan(
            tuple(refs), alpha_grid(s.points), grid_id("linear", s.points), (), (), 0, 0
        )
        units = [(index[a["id"]], index[b["id"]], s.split) for _, a, b in _siblings(record)]
        done = store.done_units()
        plan = dataclasses.replace(
            skeleton,
            member_todo=tuple(
                (i, s.split)
                for i, r in enumerate(refs)
                if store.member_point(r.hash, split.key, split.spec.sample_seed, split.n) is None
            ),
            unit_todo=tuple(
                u for u in units if not is_swept(unit_key(skeleton, u[0], u[1], split), done)
            ),
            n_units=len(units),
            n_member_points=len(refs),
        )
        ev = ctx.evaluator

        def load(run_id: str) -> Any:
            pop = ckpts if "@" in run_id and run_id.startswith(PARENT) else finals
            return ev.as_point(pop.load(run_id), name=run_id)

        if plan.unit_todo or plan.member_todo:
            ctx.say(f"spawn: {len(plan.unit_todo)} sibling paths on '{s.split}'")
            run_sweep(plan, ev, load, {s.split: split}, store, progress=ctx.progress)
        self._pairs(ctx, s, record, ckpts, finals, split)

    def _pairs(
        self,
        ctx: MeasureContext,
        s: SpawnSection,
        record: Mapping[str, Any],
        ckpts: Any,
        finals: Any,
        split: Any,
    ) -> None:
        """Cosine of the displacements and f'' along the path, per sibling pair."""
        from modeconn.measures import barrier_forms as bf
        from modeconn.measures.curvature import PathCurvature
        from modeconn.measures.displacement import displacement_cosine, displacement_norms
        from modeconn.population.spawn import PARENT

        ev = ctx.evaluator
        at = {r["step"]: r for r in record["parent"] if r["id"] != PARENT}
        names = [n for n, _ in ev.model.named_parameters()]
        todo = [
            (k, a, b)
            for k, a, b in _siblings(record)
            if ctx.store.get_value(
                KIND, pair_key(a["hash"], b["hash"], at[k]["hash"], split.key, s)
            )
            is None
        ]
        for k, a, b in todo:
            start = ckpts.load(at[k]["id"])
            wa, wb = finals.load(a["id"]), finals.load(b["id"])
            params = [n for n in names if n in start]  # parameters only, not BatchNorm buffers
            trio = [[w[n].double().numpy() for n in params] for w in (start, wa, wb)]
            norm_a, norm_b = displacement_norms(*trio)
            rec: dict[str, Any] = {
                "step": k,
                "child_a": a["id"],
                "child_b": b["id"],
                "cosine": displacement_cosine(*trio),
                "norm_a": norm_a,
                "norm_b": norm_b,
                "s": [],
                "f2": [],
                "loss": [],
                "split": split.key,
            }
            if s.curvature:
                grid = bf.uniform_grid(s.curvature)
                pa, pb = ev.as_point(wa, name=a["id"]), ev.as_point(wb, name=b["id"])
                with PathCurvature(ev, pa, pb, split) as pc:
                    rec["s"] = grid.tolist()
                    rec["f2"] = [pc.second(float(x)) for x in grid]
                    rec["loss"] = [pc.loss(float(x)) for x in grid]
            key = pair_key(a["hash"], b["hash"], at[k]["hash"], split.key, s)
            ctx.store.put_value(KIND, key, rec)

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> SpawnValue:
        s: SpawnSection = result.study.section(self.key)
        raw = store.get_meta(meta_key(s))
        if raw is None:
            raise DataError(
                f"no spawn runs for these analyses.spawn settings in {store.path}; rerun "
                "`modeconn run` (it trains and measures what is missing)"
            )
        record = json.loads(raw)
        info = result.splits[s.split]
        pts = store.path_points(
            rows="all",
            split=info["key"],
            grid=f"linear:{s.points}",
            sample_seed=info["sample_seed"],
            sample_size=info["sample_size"],
        )
        curves = {
            (str(a), str(b)): g.sort_values("alpha")
            for (a, b), g in pts.groupby(["hash_a", "hash_b"])
        }
        losses = (
            store.member_points(
                rows="all",
                split=info["key"],
                sample_seed=info["sample_seed"],
                sample_size=info["sample_size"],
            )
            .drop_duplicates("member_hash")
            .set_index("member_hash")["loss"]
        )
        found = store.values(KIND)
        at = {r["step"]: r for r in record["parent"] if r["step"] in record["steps"]}
        rows = []
        for k, a, b in _siblings(record):
            g = curves.get((a["hash"], b["hash"]))
            if g is None:
                g = curves.get((b["hash"], a["hash"]))
            rec = found.get(pair_key(a["hash"], b["hash"], at[k]["hash"], info["key"], s))
            if g is None or rec is None:
                raise DataError(
                    f"no path or record of spawn siblings {a['id']}–{b['id']} on '{s.split}' "
                    f"in {store.path}; rerun `modeconn run` (spawn resumes)"
                )
            loss, alpha = g["loss"].to_numpy(), g["alpha"].to_numpy()
            f2 = rec["f2"]
            mid = f2[len(f2) // 2] if f2 else math.nan
            rows.append(
                {
                    "step": k,
                    "child_a": a["id"],
                    "child_b": b["id"],
                    "barrier": barrier_height(loss, alpha),
                    "convexity_gap": convexity_gap(loss, alpha),
                    "cosine": rec["cosine"],
                    "norm_a": rec["norm_a"],
                    "norm_b": rec["norm_b"],
                    "f2_mid": mid,
                    "midpoint_form": -mid / 8.0,
                    "f2_mean": float(np.mean(f2)) if f2 else math.nan,
                }
            )
        pairs = pd.DataFrame(rows)
        cols = ["barrier", "convexity_gap", "cosine", "f2_mid", "midpoint_form"]
        by_step = pairs.groupby("step", as_index=False)[cols].mean()
        by_step.insert(1, "pairs", pairs.groupby("step").size().to_numpy())
        parent = pd.DataFrame(
            [
                {"step": r["step"], "loss": float(losses.get(r["hash"], math.nan))}
                for r in record["parent"]
            ]
        )
        hashes = [r["hash"] for r in [*record["children"], *record["parent"]]]
        return SpawnValue(
            split=s.split,
            pairs=pairs,
            steps=by_step,
            parent=parent,
            train_loss=tuple(float(x) for x in record["train_loss"]),
            hashes=tuple(hashes),
        )

    def sections(self, result: StudyResult, value: SpawnValue) -> list[Section]:
        from modeconn.figures.spawn import spawn_figure
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        s: SpawnSection = result.study.section(self.key)
        prov = provenance(result, s.split)
        prov["grid"] = f"linear:{s.points} between siblings"
        prov["members"] = (
            f"one parent of {len(value.train_loss)} steps (seed {s.seed}); {s.children} children "
            f"at each of steps {', '.join(map(str, s.steps))}"
        )
        return [
            Section(
                title="Spawn time: the mountainside and the ridge",
                text=(
                    "One parent run of the study's recipe; at each spawn step k its weights and "
                    f"optimiser state seed {s.children} children that train to the end with "
                    "their own data orders (Frankle et al. 2020). Barrier and convexity gap "
                    f"of the linear path between siblings on '{s.split}' (engine, "
                    f"{s.points} points), the cosine between their displacements from the "
                    "spawn point, the parent's loss along its trajectory, and f''(½) = "
                    "ΔᵀH(θmid)Δ along each sibling path by Hessian-vector products (its "
                    "midpoint form −⅛ f''(½) predicts the barrier; Singh et al. 2024)."
                ),
                figures=(
                    (
                        "Left: barrier between siblings vs. spawn step (dots: pairs; line: "
                        "mean). Middle: cosine of the siblings' displacements. Right: the "
                        "parent's loss (training, per step; engine, at the spawn steps) and "
                        "f''(½) along the sibling paths.",
                        spawn_figure(value.pairs, value.parent, value.train_loss),
                    ),
                ),
                tables=(
                    ("Per spawn step, means over sibling pairs.", value.steps.round(6)),
                    ("Per sibling pair.", value.pairs.round(6)),
                    (
                        "The parent's loss on the split at each spawn step and the end.",
                        value.parent.round(6),
                    ),
                ),
                provenance=prov,
            )
        ]

    def summary_lines(self, value: SpawnValue) -> list[str]:
        parts = [
            f"k={int(r['step'])}: barrier {r['barrier']:.3f}, cos {r['cosine']:.2f}"
            for r in value.steps.to_dict("records")
        ]
        return ["spawn (siblings): " + "; ".join(parts)]
