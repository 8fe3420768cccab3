"""Layer-wise linear mode connectivity (Adilova et al. ICLR 2024; Singh et al. 2024).

For each pair (A, B) and each block ℓ of the model (groups of its parameter names,
:mod:`modeconn.engine.layerwise`): the loss along block ℓ's path with every other block
at A ("rest at A") and at B ("rest at B"), and along the cumulative paths that
interpolate the first k blocks (shallow-first), the last k (deep-first) or the first k
of seeded random orders (``random_orders`` draws, reported as mean and range). Two
barrier conventions are reported per path:

* ``own`` — Entezari's barrier height against the path's own chord,
  max_s [f(s) − ((1 − s) f(0) + s f(1))] (:func:`modeconn.measures.barriers.barrier_height`):
  the path ends at a hybrid model, so its own endpoints are the reference;
* ``lmc`` — the layer-wise-lmc code's convention: max_s f(s) − ½(L(θA) + L(θB)), the
  full members' mean loss subtracted (negative when every hybrid is better than the
  members' mean).

Two further parts, each an option:

* ``predict`` — the layer-wise barrier prediction of Singh et al. (2024): on each block's
  path (Δ restricted to the block, the rest held at A, and at B) f''(s) by Hessian-vector
  products on the same grid, f'(0) and f'(1) (:class:`modeconn.measures.curvature.PathCurvature`
  with ``indices``), turned into the exact, midpoint and endpoint forms of
  :mod:`modeconn.measures.barrier_forms` and set against the barrier measured at the
  path's midpoint, with Pearson / Spearman r and bootstrap intervals per form;
* ``training`` — the heatmap of layers × training time: per-block barriers between the
  first pair's checkpoints (``train.checkpoints``) at each stored step, and the final
  members as the last step.

Records are keyed by weight hashes (A then B, as the pair is listed), the split's key and
a fingerprint of the settings each depends on; the tables are built from them alone by
:mod:`modeconn.analyses.layerwise_tables`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import Field

from modeconn.analyses import layerwise_tables as lt
from modeconn.analyses.base import MeasureContext, settings_fingerprint, value_key
from modeconn.config.sections import SectionModel
from modeconn.errors import ConfigError, DataError
from modeconn.results import StudyResult
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.report.html import Section

KIND = "layerwise"
FORMS_KIND = "layerwise_forms"
TRAINING_KIND = "layerwise_training"
path_barriers = lt.path_barriers  # the two conventions for one path (kept importable here)
SHORT = {"": "barrier", "_lmc": "max loss − members' mean"}  # axis labels per convention


class LayerwiseSection(SectionModel):
    """``analyses.layerwise``: per-block and cumulative barriers of member pairs."""

    split: str
    depth: int = Field(default=2, ge=1, description="name parts of a block's module prefix")
    blocks: list[str] | None = Field(
        default=None, min_length=1, description="blocks to use (None: all)"
    )
    pairs: list[tuple[str, str]] | None = Field(
        default=None, min_length=1, description="None: every pair"
    )
    points: int = Field(default=5, ge=2)
    cumulative: bool = True
    random_orders: int = Field(
        default=0, ge=0, description="seeded random block orders for the cumulative barriers"
    )
    seed: int = Field(default=0, description="seed of the random orders and the bootstrap")
    predict: bool = Field(
        default=False,
        description="exact, midpoint and endpoint barrier forms per block (HVPs) against "
        "the measured per-block barrier; needs an odd `points`",
    )
    training: bool = Field(
        default=False,
        description="per-block barriers between the first pair's checkpoints at every "
        "stored training step (train.checkpoints)",
    )
    checkpoints_dir: str | None = Field(
        default=None, description="training: folder of checkpoints; default <members>/checkpoints"
    )
    bootstrap: int = Field(default=2000, ge=1, description="resamples of the r intervals")

    def check(self, study: Study) -> None:
        study.check_split("analyses.layerwise.split", self.split)
        if self.predict and self.points % 2 == 0:
            raise ValueError(
                f"analyses.layerwise.points must be odd with predict (s = ½ on the grid, "
                f"where the barrier is measured); got {self.points}: use {self.points + 1}"
            )
        for a, b in self.pairs or ():
            if a == b:
                raise ValueError(
                    f"analyses.layerwise.pairs holds [{a}, {b}], a member with itself; "
                    "list two different members"
                )
        no_checkpoints = study.train is None or not study.train.checkpoints
        if self.training and self.checkpoints_dir is None and no_checkpoints:
            raise ValueError(
                "analyses.layerwise.training needs checkpoints: set train.checkpoints "
                "(e.g. [0.25, 0.5, 0.75]) or analyses.layerwise.checkpoints_dir"
            )
        if study.train is not None:  # the member ids are known before anything trains
            _pairs(self, planned_ids(study))

    def eval_splits(self) -> list[str]:
        return [self.split]

    def settings(self) -> dict[str, Any]:
        """What the curves records depend on (random orders only when asked for, so that
        records measured without them keep their keys)."""
        out = {"v": 1, **self.model_dump(include={"depth", "blocks", "points", "cumulative"})}
        if self.random_orders:
            out.update(random_orders=self.random_orders, seed=self.seed)
        return out

    def path_settings(self) -> dict[str, Any]:
        """What the forms and training records depend on: the blocks and the grid."""
        return {"v": 1, **self.model_dump(include={"depth", "blocks", "points"})}

    def folder(self, study: Study) -> Path:
        if self.checkpoints_dir is not None:
            return study.resolve(self.checkpoints_dir)
        return study.members_dir() / "checkpoints"


def planned_ids(study: Study) -> list[str]:
    """The member ids a study's ``train`` section will produce (``<arm>-<i:02d>``)."""
    assert study.train is not None
    return [f"{arm.name}-{i:02d}" for arm in study.train.arms for i in range(arm.members)]


def layerwise_key(hash_a: str, hash_b: str, split_key: str, section: LayerwiseSection) -> str:
    return value_key(hash_a, hash_b, split_key, settings_fingerprint(section.settings()))


def forms_key(hash_a: str, hash_b: str, split_key: str, section: LayerwiseSection) -> str:
    return value_key(hash_a, hash_b, split_key, settings_fingerprint(section.path_settings()))


def training_key(
    finals: tuple[str, str], ckpts: tuple[str, str], split_key: str, section: LayerwiseSection
) -> str:
    fp = settings_fingerprint(section.path_settings())
    return value_key(*finals, *ckpts, split_key, fp)


def _training_meta(finals: tuple[str, str], split_key: str, section: LayerwiseSection) -> str:
    """The store meta key listing the checkpoint pairs of one pair's training heatmap."""
    return "layerwise_training|" + value_key(*finals, split_key, str(section.depth))


def _pairs(section: LayerwiseSection, ids: Sequence[str]) -> list[tuple[str, str]]:
    if section.pairs is None:  # sorted ids: measure and read agree on each orientation
        ids = sorted(ids)
        return [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    unknown = sorted({m for p in section.pairs for m in p} - set(ids))
    if unknown:
        raise ConfigError(
            f"analyses.layerwise.pairs names {unknown}, not members of this study "
            f"(members: {', '.join(sorted(ids))})"
        )
    return [tuple(p) for p in section.pairs]  # type: ignore[misc]


@dataclass(frozen=True)
class LayerwiseValue:
    per_block: pd.DataFrame  # pair, block, rest_a, rest_b (own), rest_a_lmc, rest_b_lmc
    cumulative: pd.DataFrame  # pair, k, shallow, deep, random (+ _min/_max), *_lmc
    forms: pd.DataFrame | None = None  # pair, block, variant, measured, exact, midpoint, …
    correlations: pd.DataFrame | None = None  # block ("all" or one), form, r, ρ, intervals
    training: pd.DataFrame | None = None  # stage, step, block, rest_a, rest_b, *_lmc


class Layerwise:
    key = "layerwise"
    section = LayerwiseSection
    cites = "Adilova et al. ICLR 2024 (layer-wise LMC); Singh et al. 2024 (Landscaping LMC)"
    summary = (
        "barriers with one block (or the first/last/random k blocks) interpolated, the rest "
        "fixed; per-block barrier forms; per-block barriers along training"
    )
    needs_weights = True

    def check_inputs(self, study: Study, *, keys: Sequence[str], members: Sequence[str]) -> None:
        """Block names against the model's state names and pairs against the member ids,
        before anything is trained, swept or written (the runner calls this first)."""
        from modeconn.engine.layerwise import blocks, select_blocks

        s: LayerwiseSection = study.section(self.key)
        select_blocks(blocks(list(keys), s.depth), s.blocks, depth=s.depth)
        _pairs(s, members)

    def measure(self, ctx: MeasureContext) -> None:
        from tqdm.auto import tqdm

        from modeconn.engine.layerwise import blocks, layerwise_curves, random_orders, select_blocks

        s: LayerwiseSection = ctx.study.section(self.key)
        split = ctx.splits[s.split]
        refs = {m.id: m for m in ctx.members}
        ev = ctx.evaluator
        groups = select_blocks(blocks(list(ev.keys), s.depth), s.blocks, depth=s.depth)
        pairs = _pairs(s, list(refs))
        orders = random_orders(list(groups), s.random_orders, s.seed)
        done = ctx.store.values(KIND)
        done_forms = ctx.store.values(FORMS_KIND) if s.predict else {}
        todo = []
        for a, b in pairs:
            ha, hb = refs[a].hash, refs[b].hash
            need_curves = layerwise_key(ha, hb, split.key, s) not in done
            need_forms = s.predict and forms_key(ha, hb, split.key, s) not in done_forms
            if need_curves or need_forms:
                todo.append((refs[a], refs[b], need_curves, need_forms))
        if todo:
            ctx.say(
                f"layer-wise: {len(todo)} pairs × {len(groups)} blocks on '{s.split}'"
                + (" with barrier forms" if s.predict else "")
            )
        for a, b, need_curves, need_forms in tqdm(
            todo, desc="layer-wise", unit="pair", disable=not ctx.progress
        ):
            pa = ev.as_point(ctx.population.load(a.id), name=a.id)
            pb = ev.as_point(ctx.population.load(b.id), name=b.id)
            ids = {"member_a": a.id, "member_b": b.id, "split": split.key}
            if need_curves:
                res = layerwise_curves(
                    ev,
                    pa,
                    pb,
                    split,
                    groups=groups,
                    points=s.points,
                    cumulative=s.cumulative,
                    orders=orders,
                )
                key = layerwise_key(a.hash, b.hash, split.key, s)
                ctx.store.put_value(KIND, key, {**res.to_dict(), **ids})
            if need_forms:
                rec = block_forms(ev, pa, pb, split, groups=groups, points=s.points)
                ctx.store.put_value(
                    FORMS_KIND, forms_key(a.hash, b.hash, split.key, s), {**rec, **ids}
                )
        if s.training:
            self._measure_training(ctx, s, groups, refs[pairs[0][0]], refs[pairs[0][1]])

    def _measure_training(
        self, ctx: MeasureContext, s: LayerwiseSection, groups: dict[str, list[int]], a: Any, b: Any
    ) -> None:
        """Per-block barriers between the k-th checkpoints of A and of B, for every k."""
        from modeconn.engine.layerwise import layerwise_curves
        from modeconn.population.members import Population

        folder = s.folder(ctx.study)
        if not folder.is_dir():
            raise DataError(
                f"analyses.layerwise.training: no checkpoints folder {folder}; train with "
                "train.checkpoints set, or point analyses.layerwise.checkpoints_dir at one"
            )
        ckpts = Population.from_dir(folder)

        def series(member: str) -> list[Any]:
            own = [m for m in ckpts if m.meta.extra.get("checkpoint_of") == member]
            return sorted(own, key=lambda m: m.meta.step or 0)

        runs = series(a.id), series(b.id)
        if not runs[0] or not runs[1]:
            raise DataError(
                f"analyses.layerwise.training: no checkpoints of "
                f"{' and '.join(m for m, r in zip((a.id, b.id), runs, strict=True) if not r)} "
                f"in {folder}; train them with train.checkpoints set"
            )
        split = ctx.splits[s.split]
        stages = [
            {
                "stage": k,
                "step": ca.meta.step,
                "step_b": cb.meta.step,
                "id_a": ca.id,
                "id_b": cb.id,
                "hash_a": ckpts.hash(ca.id),
                "hash_b": ckpts.hash(cb.id),
            }
            for k, (ca, cb) in enumerate(zip(*runs, strict=False))
        ]
        finals = (a.hash, b.hash)
        meta_key = _training_meta(finals, split.key, s)
        listing = json.dumps({"member_a": a.id, "member_b": b.id, "stages": stages})
        if ctx.store.get_meta(meta_key) != listing:
            ctx.store.set_meta(meta_key, listing)
        done = ctx.store.values(TRAINING_KIND)
        todo = [
            st
            for st in stages
            if training_key(finals, (st["hash_a"], st["hash_b"]), split.key, s) not in done
        ]
        if not todo:
            return
        ctx.say(
            f"layer-wise along training: {len(todo)} checkpoint pairs of {a.id}–{b.id} × "
            f"{len(groups)} blocks"
        )
        ev = ctx.evaluator
        for st in todo:
            pa, pb = [self._checkpoint(ctx, ckpts, cid) for cid in (st["id_a"], st["id_b"])]
            res = layerwise_curves(
                ev, pa, pb, split, groups=groups, points=s.points, cumulative=False
            )
            key = training_key(finals, (st["hash_a"], st["hash_b"]), split.key, s)
            ctx.store.put_value(TRAINING_KIND, key, {**res.to_dict(), **st, "split": split.key})

    @staticmethod
    def _checkpoint(ctx: MeasureContext, ckpts: Any, cid: str) -> Any:
        state = ckpts.load(cid)
        ctx.check_weights(state, ckpts[cid])
        return ctx.evaluator.as_point(state, name=cid)

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> LayerwiseValue:
        s: LayerwiseSection = result.study.section(self.key)
        key = result.splits[s.split]["key"]
        hashes = {str(m): str(h) for m, h in result.members["hash"].items()}
        found = store.values(KIND)
        found_forms = store.values(FORMS_KIND) if s.predict else {}
        blocks_rows: list[dict[str, Any]] = []
        cum_rows: list[dict[str, Any]] = []
        form_rows: list[dict[str, Any]] = []
        pairs = _pairs(s, [str(m) for m in hashes])
        for a, b in pairs:
            rec = found.get(layerwise_key(hashes[a], hashes[b], key, s))
            forms = found_forms.get(forms_key(hashes[a], hashes[b], key, s))
            if rec is None or (s.predict and forms is None):
                raise DataError(
                    f"no layer-wise record of pair {a}–{b} on '{s.split}' in {store.path} for "
                    "these settings: rerun `modeconn run` (it computes what is missing)"
                )
            pair = f"{a}–{b}"
            blocks_rows += lt.block_rows(pair, rec)
            cum_rows += lt.cumulative_rows(pair, rec)
            if forms is not None:
                form_rows += lt.form_rows(pair, forms, rec)
        forms_df = corr = training = None
        if s.predict:
            forms_df = pd.DataFrame(form_rows)
            corr = lt.form_correlations(forms_df, n_boot=s.bootstrap, seed=s.seed)
        if s.training:
            training = self._read_training(store, s, key, hashes, pairs[0], found)
        return LayerwiseValue(
            pd.DataFrame(blocks_rows), pd.DataFrame(cum_rows), forms_df, corr, training
        )

    def _read_training(
        self,
        store: Store,
        s: LayerwiseSection,
        split_key: str,
        hashes: Mapping[str, str],
        pair: tuple[str, str],
        found: Mapping[str, Any],
    ) -> pd.DataFrame:
        finals = (hashes[pair[0]], hashes[pair[1]])
        raw = store.get_meta(_training_meta(finals, split_key, s))
        if raw is None:
            raise DataError(
                f"no layer-wise training record of pair {pair[0]}–{pair[1]} in {store.path}: "
                "rerun `modeconn run` (it computes what is missing)"
            )
        records = store.values(TRAINING_KIND)
        stages = []
        for st in json.loads(raw)["stages"]:
            rec = records.get(training_key(finals, (st["hash_a"], st["hash_b"]), split_key, s))
            if rec is None:
                raise DataError(
                    f"no layer-wise record of checkpoints {st['id_a']}–{st['id_b']} in "
                    f"{store.path}: rerun `modeconn run` (it computes what is missing)"
                )
            stages.append({"stage": st["stage"], "step": st["step"], "record": rec})
        last = found[layerwise_key(*finals, split_key, s)]
        stages.append({"stage": len(stages), "step": "final", "record": last})
        return pd.DataFrame(lt.training_rows(stages))

    def sections(self, result: StudyResult, value: LayerwiseValue) -> list[Section]:
        from modeconn.figures.landscape import (
            barrier_prediction,
            layerwise_barriers,
            layerwise_heatmap,
        )
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        s: LayerwiseSection = result.study.section(self.key)
        if not len(value.per_block):
            return []
        where = provenance(result, s.split)
        n = value.per_block["pair"].nunique()
        conventions = {
            "": "barrier against the path's own chord",
            "_lmc": "maximum loss minus the members' mean loss (layer-wise-lmc)",
        }
        figs = []
        for suffix, label in conventions.items():
            mean = value.per_block.groupby("block", sort=False)[
                [f"rest_a{suffix}", f"rest_b{suffix}"]
            ].mean()
            mean.columns = ["rest_a", "rest_b"]
            cum = None
            if len(value.cumulative):
                names = {"shallow": "shallow-first", "deep": "deep-first", "random": "random"}
                cols = [
                    f"{c}{suffix}{end}"
                    for c in names
                    for end in ("", "_min", "_max")
                    if f"{c}{suffix}{end}" in value.cumulative
                ]
                cum = value.cumulative.groupby("k")[cols].mean()
                cum.columns = [
                    names[c.split("_")[0]] + c.removeprefix(c.split("_")[0] + suffix) for c in cols
                ]
            figs.append(
                (
                    f"One block interpolated, mean over {n} pair(s) on '{s.split}' (left); "
                    f"cumulative as blocks are added (right); {label}.",
                    layerwise_barriers(mean, cum, label=SHORT[suffix]),
                )
            )
        orders = (
            f" Random: the first k blocks of {s.random_orders} seeded random orders (seed "
            f"{s.seed}), mean over the draws, band from the smallest to the largest."
            if s.random_orders
            else ""
        )
        out = [
            Section(
                title="Layer-wise linear connectivity",
                text=(
                    "Each block ℓ interpolated between A and B with every other block at A "
                    "(rest at A) or at B (rest at B); barrier against the path's own chord "
                    "(columns *_lmc: its maximum minus the full members' mean loss, the "
                    "layer-wise-lmc convention). Cumulative: the first (shallow-first) or "
                    "last (deep-first) k blocks interpolated, the rest at A." + orders + " "
                    f"Blocks: module names cut to depth {s.depth}."
                ),
                figures=tuple(figs),
                tables=(
                    ("Barrier per block and pair.", value.per_block.round(6)),
                    ("Cumulative barriers per pair.", value.cumulative.round(6)),
                ),
                provenance=where,
            )
        ]
        if value.forms is not None and len(value.forms):
            tables = [("Forms per block, variant and pair.", value.forms.round(6))]
            if value.correlations is not None and len(value.correlations):
                cols = ["block", "form", "n", "pearson_r", "pearson_ci"]
                cols += ["spearman_rho", "spearman_ci"]
                tables.append(
                    (
                        "Each form against the measured barrier: all blocks pooled, then "
                        "per block.",
                        value.correlations[cols],
                    )
                )
            out.append(
                Section(
                    title="Layer-wise barrier prediction",
                    text=(
                        "Per block ℓ, the path θA + sΔ_ℓ with Δ_ℓ = θB − θA on the block's "
                        "entries and 0 elsewhere (rest at A; and from B, rest at B): f''(s) "
                        f"by Hessian-vector products on {s.points} points, f'(0), f'(1), "
                        "and the exact, midpoint and endpoint forms of the barrier "
                        "(docs/method.md), against the barrier measured at the path's "
                        "midpoint, f(½) − ½(f(0) + f(1)), with BatchNorm statistics by the "
                        "study's policy (column frozen: with θ(s)'s statistics frozen, "
                        "as the forms see them)."
                    ),
                    figures=(
                        (
                            "Barrier predicted from f'' vs. measured, per block, variant "
                            "and pair; dashed: y = x.",
                            barrier_prediction(
                                value.forms, title="layer-wise barrier predicted, per block"
                            ),
                        ),
                    ),
                    tables=tuple(tables),
                    provenance=where,
                )
            )
        if value.training is not None and len(value.training):
            a, b = _pairs(s, list(result.members.index))[0]
            out.append(
                Section(
                    title="Layer-wise barriers along training",
                    text=(
                        f"The checkpoints of {a} and {b} at each stored step (the k-th of "
                        "each), and the final members: one block interpolated, the rest at A "
                        "(left) or at B (right); the barrier against the path's own chord, "
                        "then the maximum minus the members' mean loss."
                    ),
                    figures=tuple(
                        (
                            f"Per-block {label} between {a} and {b} along training.",
                            layerwise_heatmap(value.training, convention=conv, label=SHORT[suffix]),
                        )
                        for conv, suffix, label in (
                            ("own", "", conventions[""]),
                            ("lmc", "_lmc", conventions["_lmc"]),
                        )
                    ),
                    tables=(("Per-block barriers along training.", value.training.round(6)),),
                    provenance=where,
                )
            )
        return out

    def summary_lines(self, value: LayerwiseValue) -> list[str]:
        if not len(value.per_block):
            return []
        top = value.per_block.groupby("block", sort=False)["rest_a"].mean().idxmax()
        lines = [f"layer-wise: highest mean one-block barrier (rest at A) in '{top}'"]
        if value.correlations is not None and len(value.correlations):
            pooled = value.correlations[value.correlations["block"] == "all"]
            parts = [f"{r['form']} r = {r['pearson_r']:.2f}" for _, r in pooled.iterrows()]
            lines.append("layer-wise barrier prediction (all blocks): " + ", ".join(parts))
        if value.training is not None and len(value.training):
            n = value.training["stage"].nunique()
            lines.append(f"layer-wise barriers along training: {n} steps")
        return lines


def block_forms(
    evaluator: Any,
    a: Sequence[Any],
    b: Sequence[Any],
    split: Any,
    *,
    groups: Mapping[str, list[int]],
    points: int,
) -> dict[str, Any]:
    """f''(s) on the grid, f'(0), f'(1) and the frozen-statistics losses of every block's
    path, rest at A and rest at B (:class:`~modeconn.measures.curvature.PathCurvature` with
    the block's ``indices``). Points are visited in grid order, so the endpoint slopes
    reuse the points (and BatchNorm statistics) of s = 0 and s = 1."""
    from modeconn.measures import barrier_forms as bf
    from modeconn.measures.curvature import PathCurvature

    grid = [float(x) for x in bf.uniform_grid(points)]
    out: dict[str, Any] = {"blocks": list(groups), "s": grid}
    for variant, (x, y) in (("rest_a", (a, b)), ("rest_b", (b, a))):
        out[variant] = {}
        for blk, idx in groups.items():
            with PathCurvature(evaluator, x, y, split, indices=idx) as pc:
                path: dict[str, Any] = {"f2": [], "loss": []}
                for s in grid:
                    path["f2"].append(pc.second(s))
                    path["loss"].append(pc.loss(s))
                    if s in (0.0, 1.0):
                        path[f"f1_{int(s)}"] = pc.first(s)
            out[variant][blk] = path
    return out
