"""Curves beyond the line: a trained Bézier curve or polygonal chain between member pairs.

Garipov et al. (2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs"),
Juneja et al. (2023, Fig. 10) and Lubana et al. (2023, "Mechanistic Mode Connectivity",
the quadratic path with a trained midpoint) join two members by a curve through trained
bends and compare it with the straight line: a barrier on the line that a curve avoids
says the members sit in one connected low-loss region; one the curve keeps says they do
not (at least not by this path family). For every pair of ``analyses.curves.pairs``:

1. the bends are trained on ``split``'s loss at a uniformly drawn point of the curve per
   step (:mod:`modeconn.engine.curves`), or loaded if a file of the same endpoints,
   settings and training data is already in ``<store folder>/curves/``;
2. the curve and the line α·θA + (1 − α)·θB are evaluated at ``points`` values of α on
   each of ``eval_splits`` (ID and OOD), BatchNorm statistics by the engine's policy.

**α is the sweep's coordinate**: α = 1 is member A (the pair's first), α = 0 member B, on
the curve as on the line, in the records, the tables and the figure. One record per
(pair, evaluation split), keyed by the two weight hashes (A then B), the split's key and
a fingerprint of the bend (settings, training split's key, dtype), the grid and the α
convention (:data:`ALPHA_CONVENTION`): records of an older modeconn, whose curves ran
α = 0 at A, have other keys, so they are measured again (the bends are loaded, not
retrained) rather than read backwards. ``read`` gives the points along both paths and,
per pair and split, the maximum loss and the barrier (above the end-to-end chord) of
each, and the lowest metric.

Study section::

    analyses:
      curves:
        pairs: [[seed-00, seed-01], [seed-00, cue-00]]
        kind: bezier            # or chain
        bends: 1
        split: train_clean      # the bends' training loss
        eval_splits: [clean, cue, random_cue]
        steps: 300
        lr: 0.05
        batch_size: 64
        points: 11
        seed: 0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, field_validator

from modeconn.analyses.base import MeasureContext, records, settings_fingerprint, value_key
from modeconn.config.sections import SectionModel
from modeconn.errors import ConfigError, DataError
from modeconn.measures.barriers import barrier_height
from modeconn.results import StudyResult
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.engine.curves import BendConfig
    from modeconn.report.html import Section

KIND = "curves"
VERSION = 2  # bump when what a record holds changes meaning (2: α = 1 at A)
ALPHA_CONVENTION = "alpha=1:A"  # in every record's key and body (``alpha_at_a``)


class CurvesSection(SectionModel):
    """``analyses.curves``: trained curves between member pairs, against the line.

    The study key ``eval_splits`` is the field ``evaluate_on`` (``eval_splits()`` is the
    hook that asks the sweep to evaluate every member on those splits).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    pairs: list[tuple[str, str]] = Field(min_length=1, description="member pairs [A, B]")
    kind: Literal["bezier", "chain"] = "bezier"
    bends: int = Field(default=1, ge=1, description="trained bends (Bézier: degree − 1)")
    split: str = Field(description="the split whose loss trains the bends (a training split)")
    evaluate_on: list[str] = Field(
        alias="eval_splits", min_length=1, description="splits the curves are evaluated on"
    )
    steps: int = Field(default=200, ge=1)
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=64, ge=1)
    points: int = Field(default=11, ge=3, description="α values along each path")
    seed: int = 0

    @field_validator("pairs")
    @classmethod
    def _two_members(cls, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for a, b in pairs:
            if a == b:
                raise ValueError(f"pair [{a}, {b}] joins a member to itself; name two members")
        return pairs

    def check(self, study: Study) -> None:
        study.check_split("analyses.curves.split", self.split)
        for name in self.evaluate_on:
            study.check_split("analyses.curves.eval_splits", name)
        if study.train is not None and study.population is None:
            ids = [f"{arm.name}-{i:02d}" for arm in study.train.arms for i in range(arm.members)]
            check_members(self, ids)

    def eval_splits(self) -> list[str]:
        """Splits every member is evaluated on: the curves' and the training split, whose
        key (kept by the sweep) is part of every record's key."""
        return list(dict.fromkeys([*self.evaluate_on, self.split]))

    def bend_config(self) -> BendConfig:
        from modeconn.engine.curves import BendConfig

        return BendConfig(
            **self.model_dump(
                include={
                    "kind",
                    "bends",
                    "steps",
                    "lr",
                    "momentum",
                    "weight_decay",
                    "batch_size",
                    "seed",
                }
            )
        )


def check_members(section: CurvesSection, ids: Sequence[str]) -> None:
    """Raise :class:`ConfigError` if a pair names a member the study does not have."""
    unknown = sorted({m for pair in section.pairs for m in pair} - set(ids))
    if unknown:
        raise ConfigError(
            f"analyses.curves.pairs names {', '.join(repr(u) for u in unknown)}, not members "
            f"of this study (members: {', '.join(sorted(ids))}); fix the names"
        )


def bend_key(section: CurvesSection, train_key: str, dtype: str) -> str:
    """The fingerprint of a bend: its settings, the training split's key and the dtype."""
    from modeconn.engine.curves import bend_fingerprint

    return bend_fingerprint(section.bend_config(), train_key, dtype)


def curve_key(hash_a: str, hash_b: str, split_key: str, bend: str, points: int) -> str:
    """One record: pair (A then B), evaluation split, bend fingerprint, grid and the α
    convention (a record whose α ran the other way has another key)."""
    grid = settings_fingerprint(
        {"v": VERSION, "bend": bend, "points": points, "alpha": ALPHA_CONVENTION}
    )
    return value_key(hash_a, hash_b, split_key, grid)


def path_summary(alphas: Sequence[float], losses: Sequence[float]) -> dict[str, float]:
    """Maximum loss along a path, the maximum strictly between its two members (what a
    bend can change: the members' own losses it cannot), its barrier above the end-to-end
    chord, and the loss at the α nearest ½ (where the quadratic curve's bend weighs most).
    `alphas` ascend (α = 0, member B, first); every quantity is the same read either way.

    >>> path_summary([0.0, 0.5, 1.0], [0.2, 1.2, 0.4])
    {'max_loss': 1.2, 'interior_max_loss': 1.2, 'barrier': 0.9, 'mid_loss': 1.2}
    """
    mid = int(np.argmin(np.abs(np.asarray(alphas, dtype=float) - 0.5)))
    inner = np.asarray(losses, dtype=float)[1:-1]  # α ascending, as barrier_height needs
    return {
        "max_loss": float(np.max(losses)),
        "interior_max_loss": float(np.max(inner)) if inner.size else float("nan"),
        "barrier": round(barrier_height(list(losses), list(alphas)), 12),
        "mid_loss": float(losses[mid]),
    }


@dataclass(frozen=True)
class CurvesValue:
    """``points``: one row per (pair, split, path, α) with loss and metrics; ``summary``:
    per pair and split, max loss, barrier and lowest metric along the line and the curve."""

    kind: str
    bends: int
    points: pd.DataFrame
    summary: pd.DataFrame
    metric: str | None
    notes: tuple[str, ...] = field(default=())


class Curves:
    key = "curves"
    section = CurvesSection
    cites = (
        "Garipov et al. 2018 (curves through trained bends); Juneja et al. 2023, Fig. 10; "
        "Lubana et al. 2023 (quadratic path with a trained midpoint)"
    )
    summary = "a Bézier curve or polygonal chain with trained bends vs. the line, per pair"
    needs_weights = True

    def check_inputs(self, study: Study, *, keys: Sequence[str], members: Sequence[str]) -> None:
        """Before anything is trained or written: every pair names members of the study."""
        check_members(study.section(self.key), members)

    def measure(self, ctx: MeasureContext) -> None:
        from tqdm.auto import tqdm

        from modeconn.engine.curves import (
            bend_file,
            check_same_architecture,
            ensure_bends,
            evaluate_curve,
        )
        from modeconn.engine.paths import ALPHA_AT_A, alpha_grid

        s: CurvesSection = ctx.study.section(self.key)
        refs = {m.id: m for m in ctx.members}
        check_members(s, list(refs))
        train = ctx.splits[s.split]
        bend = bend_key(s, train.key, ctx.study.eval.dtype)
        done = ctx.store.values(KIND)
        alphas = alpha_grid(s.points)
        ev = ctx.evaluator
        for a_id, b_id in s.pairs:
            a, b = refs[a_id], refs[b_id]
            todo = [
                n
                for n in s.evaluate_on
                if curve_key(a.hash, b.hash, ctx.splits[n].key, bend, s.points) not in done
            ]
            if not todo:
                continue
            state_a, state_b = ctx.population.load(a.id), ctx.population.load(b.id)
            check_same_architecture(a.id, state_a, b.id, state_b)
            pa, pb = ev.as_point(state_a, name=a.id), ev.as_point(state_b, name=b.id)
            path = bend_file(ctx.store.path.parent, a.hash, b.hash, bend)
            verb = "loading" if path.exists() else f"training ({s.steps} steps on '{s.split}')"
            ctx.say(f"curves: {a.id}–{b.id}, {s.kind} with {s.bends} bend(s): {verb}")
            bar = tqdm(
                total=s.steps, desc="bends", unit="step", disable=not ctx.progress or path.exists()
            )
            try:
                trained = ensure_bends(
                    ev,
                    pa,
                    pb,
                    train,
                    s.bend_config(),
                    path,
                    meta={"member_a": a.hash, "member_b": b.hash, "split": train.key},
                    progress=lambda _step, _loss: bar.update(1),  # noqa: B023
                )
            finally:
                bar.close()
            nodes = [pa, *trained.bends, pb]
            for name in todo:
                split = ctx.splits[name]
                res = evaluate_curve(ev, nodes, split, alphas, kind=s.kind)
                rec = {
                    "alphas": res.alphas,  # α = 1 is member A, ascending
                    "alpha_at_a": ALPHA_AT_A,
                    "curve_loss": [r.loss for r in res.curve],
                    "line_loss": [r.loss for r in res.line],
                    "curve_metrics": [r.metrics for r in res.curve],
                    "line_metrics": [r.metrics for r in res.line],
                    "train_loss": trained.final_loss,
                    "bend_file": path.name,
                    "member_a": a.id,
                    "member_b": b.id,
                    "hash_a": a.hash,
                    "hash_b": b.hash,
                    "split": split.key,
                    "kind": s.kind,
                    "bends": s.bends,
                }
                key = curve_key(a.hash, b.hash, split.key, bend, s.points)
                ctx.store.put_value(KIND, key, rec)

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> CurvesValue:
        s: CurvesSection = result.study.section(self.key)
        hashes = result.members["hash"].to_dict()
        unknown = sorted({m for p in s.pairs for m in p} - set(hashes))
        if unknown:
            raise DataError(
                f"analyses.curves.pairs names {unknown}, not members recorded in {store.path}"
            )
        bend = bend_key(s, result.splits[s.split]["key"], result.study.eval.dtype)
        found = store.values(KIND)
        rows: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        metric: str | None = None
        for a, b in s.pairs:
            pair = f"{a}–{b}"
            for name in s.evaluate_on:
                info = result.splits[name]
                rec = found.get(curve_key(hashes[a], hashes[b], info["key"], bend, s.points))
                if rec is None:
                    raise DataError(
                        f"no curve record of pair {a}–{b} on '{name}' in {store.path} for these "
                        "settings: rerun `modeconn run` (it trains and measures what is missing)"
                    )
                row: dict[str, Any] = {"pair": pair, "split": name, "role": info.get("role")}
                for path in ("line", "curve"):
                    losses, mets = rec[f"{path}_loss"], rec[f"{path}_metrics"]
                    for x, loss, m in zip(rec["alphas"], losses, mets, strict=True):
                        rows.append(
                            {
                                "pair": pair,
                                "split": name,
                                "path": path,
                                "alpha": x,
                                "loss": loss,
                                **m,
                            }
                        )
                    for k, v in path_summary(rec["alphas"], losses).items():
                        row[f"{path}_{k}"] = v
                    if mets and mets[0]:
                        metric = metric or next(iter(mets[0]))
                        if metric in mets[0]:
                            row[f"{path}_min_{metric}"] = min(m[metric] for m in mets)
                row["train_loss"] = rec.get("train_loss")
                summary.append(row)
        notes: tuple[str, ...] = ()
        table = pd.DataFrame(summary)
        if len(table) and (table["curve_max_loss"] > table["line_max_loss"] + 1e-9).any():
            notes = (
                "curves: on some pair and split the trained curve's maximum loss exceeds the "
                "line's (too few steps, a high lr, or a split unlike the training split)",
            )
        return CurvesValue(s.kind, s.bends, pd.DataFrame(rows), table, metric, notes)

    def sections(self, result: StudyResult, value: CurvesValue) -> list[Section]:
        from modeconn.figures.bends import curve_vs_line
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        s: CurvesSection = result.study.section(self.key)
        roles = {n: str(result.splits[n].get("role", "")) for n in s.evaluate_on}
        shape = (
            "quadratic Bézier curve"
            if s.kind == "bezier" and s.bends == 1
            else (
                f"Bézier curve of degree {s.bends + 1}"
                if s.kind == "bezier"
                else f"polygonal chain with {s.bends} bend(s)"
            )
        )
        figs = (
            (
                f"Loss (top) and {value.metric or 'metric'} (bottom) along the trained {shape} "
                "(solid) and the straight line (dashed), one column per split; α = 1 is the "
                "pair's first member (A), α = 0 its second (B), as on every path.",
                curve_vs_line(value.points, metric=value.metric, splits=s.evaluate_on, roles=roles),
            ),
        )
        return [
            Section(
                title="Curves beyond the line",
                text=(
                    f"Each pair joined by a {shape} whose bends were trained on '{s.split}' "
                    f"({s.steps} steps, batch {s.batch_size}, lr {s.lr:g}, a uniformly drawn "
                    "point of the curve per step, each bend's step scaled by its weight "
                    "there), against the line α·θA + (1 − α)·θB; α = 1 is A on both "
                    "(Garipov et al. 2018; Lubana et al. 2023). A "
                    "barrier the curve avoids means the pair is connected by a low-loss "
                    "curve though not by the line. " + " ".join(value.notes)
                ),
                figures=figs,
                tables=(
                    (
                        "Max loss, barrier and lowest metric per pair and split.",
                        value.summary.round(6),
                    ),
                ),
                provenance=provenance(result, *s.evaluate_on),
            )
        ]

    def summary_json(self, value: CurvesValue) -> dict[str, Any]:
        """Headline numbers for ``modeconn report --json``: per pair and split, max loss,
        barrier, loss at ½ and lowest metric of the line and the curve."""
        return {"kind": value.kind, "bends": value.bends, "pairs": records(value.summary)}

    def summary_lines(self, value: CurvesValue) -> list[str]:
        out = []
        for _, r in value.summary.iterrows():
            out.append(
                f"curves: {r['pair']} on {r['split']}: max loss line {r['line_max_loss']:.3f}, "
                f"curve {r['curve_max_loss']:.3f}; between the members line "
                f"{r['line_interior_max_loss']:.3f}, curve {r['curve_interior_max_loss']:.3f}; "
                f"barrier line {r['line_barrier']:.3f}, "
                f"curve {r['curve_barrier']:.3f}; loss at ½ line {r['line_mid_loss']:.3f}, "
                f"curve {r['curve_mid_loss']:.3f}"
            )
        return out
