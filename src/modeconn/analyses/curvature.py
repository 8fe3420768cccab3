"""Barrier prediction from curvature along the path (Singh et al. 2024, "Landscaping LMC").

For every pair of members (A, B) on one split: f''(s) = ΔᵀH(θA + sΔ)Δ at ``points``
equally spaced s (an odd count, so s = ½ is one of them; s runs from A, s = 1 − α of the
sweep's path coordinate, α = 1 at A) by Hessian-vector products, the
endpoint slopes f'(0), f'(1), and the frozen-statistics losses f(s)
(:mod:`modeconn.measures.curvature`); optionally Hutchinson's trace and the top Hessian
eigenvalues at the midpoint. One record per pair, keyed by the two weight hashes (sorted:
A is the member whose hash sorts first, so either orientation finds it), the split's key
and a fingerprint of the settings.

``read`` turns the records into the three barrier forms of
:mod:`modeconn.measures.barrier_forms` and sets them beside the barrier measured on the
sweep's own points at α = ½ (the engine's loss, BatchNorm statistics by the study's
policy); when the grid lacks α = ½, the record's frozen-statistics f(½) is used instead
and the value says so. Pearson r and Spearman ρ of each form with the measured barrier,
with bootstrap intervals (:func:`modeconn.stats.inference.correlate`), need ≥ 3 pairs.

``batchnorm: batch`` computes f, f' and f'' with every BatchNorm layer normalising each
fixed batch by its own statistics (:class:`~modeconn.measures.curvature.PathCurvature`),
so the forms and f are derivatives of one function; the table then carries
``measured_batch`` = f(½) − ½(f(0) + f(1)) in that mode, and each form is correlated with
it as well as with the sweep's barrier (column ``against``). The default ``frozen`` is the
eval-mode loss with θ(s)'s re-estimated statistics held fixed, as before.

Each pair's row also carries the *slope gap* (f'(1) − f'(0)) − ∫₀¹ f''(s) ds, the integral
by the trapezoid rule on the same grid, with its quadrature bound (``slope_gap_error``):
within the bound when f'' is the whole second derivative of f (a smooth model, e.g.
``model.options: {activation: gelu, pool: avg}``, in batch mode), beyond it where kinks
crossed along the path (ReLU, max-pool) carry curvature the HVP does not see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from modeconn.analyses.base import MeasureContext, settings_fingerprint, value_key
from modeconn.config.sections import SectionModel
from modeconn.errors import DataError
from modeconn.measures import barrier_forms as bf
from modeconn.results import StudyResult, curves
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.report.html import Section

KIND = "curvature"
VERSION = 1  # bump when what a record holds changes meaning


class CurvatureSection(SectionModel):
    """``analyses.curvature``: f'' along every pair's path and the barrier forms."""

    split: str = Field(description="a path split (one of paths.splits)")
    points: int = Field(default=5, ge=3, description="odd number of s in [0, 1] for f''")
    trace_samples: int = Field(default=0, ge=0, description="Hutchinson draws at s = ½ (0: off)")
    eigenvalues: int = Field(default=0, ge=0, description="top Hessian eigenvalues at s = ½")
    seed: int = 0
    bootstrap: int = Field(default=2000, ge=1)
    batchnorm: Literal["frozen", "batch"] = Field(
        default="frozen",
        description="BatchNorm in f: frozen (θ(s)'s statistics, eval mode) or batch "
        "(each batch's own statistics, so f, f' and f'' are one function's)",
    )

    def check(self, study: Study) -> None:
        study.check_split("analyses.curvature.split", self.split)
        if self.split not in study.paths.splits:
            raise ValueError(
                f"analyses.curvature.split '{self.split}' must be one of paths.splits "
                f"{study.paths.splits}: the measured barrier comes from its swept paths"
            )
        if self.points % 2 == 0:
            raise ValueError(
                f"analyses.curvature.points must be odd (s = ½ on the grid); got {self.points}"
            )

    def eval_splits(self) -> list[str]:
        return [self.split]

    def settings(self) -> dict[str, Any]:
        """What the records depend on (the split is keyed apart; bootstrap is read-only)."""
        # batchnorm enters only when not the default, so frozen records keep their keys
        exclude = {"split", "bootstrap"} | ({"batchnorm"} if self.batchnorm == "frozen" else set())
        return {"v": VERSION, **self.model_dump(exclude=exclude)}


def curvature_key(hash_a: str, hash_b: str, split_key: str, section: CurvatureSection) -> str:
    a, b = sorted((hash_a, hash_b))
    return value_key(a, b, split_key, settings_fingerprint(section.settings()))


@dataclass(frozen=True)
class BarrierPrediction:
    """Per pair: measured barrier and the three forms; per form: the correlations."""

    split: str
    measured_from: str
    pairs: pd.DataFrame
    correlations: pd.DataFrame
    notes: tuple[str, ...] = field(default=())


def pair_forms(rec: Mapping[str, Any]) -> dict[str, float]:
    """The three forms (and the quadrature error bound) of one stored record, and the
    slope gap (f'(1) − f'(0)) − ∫₀¹ f''_HVP ds with its quadrature bound: zero up to the
    bound on a smooth path, the kinks' share of f'' on a ReLU / max-pool one."""
    s, f2 = np.asarray(rec["s"]), np.asarray(rec["f2"])
    mid = len(s) // 2
    return {
        "exact": bf.exact_form(s, f2),
        "exact_error": bf.exact_form_error(s, f2),
        "midpoint": bf.midpoint_form(float(f2[mid])),
        "endpoint": bf.endpoint_form(rec["f1_0"], rec["f1_1"], float(f2[0]), float(f2[-1])),
        "frozen": bf.measured_barrier(rec["loss"][0], rec["loss"][mid], rec["loss"][-1]),
        "slope_gap": float(rec["f1_1"]) - float(rec["f1_0"]) - bf.slope_change(s, f2),
        "slope_gap_error": bf.slope_change_error(s, f2),
    }


class Curvature:
    key = "curvature"
    section = CurvatureSection
    cites = "Singh et al. 2024, Landscaping Linear Mode Connectivity (barrier vs. curvature)"
    summary = "f'' along every pair's path by HVPs; exact, midpoint and endpoint barrier forms"
    needs_weights = True

    def measure(self, ctx: MeasureContext) -> None:
        from tqdm.auto import tqdm

        from modeconn.measures.curvature import PathCurvature

        s: CurvatureSection = ctx.study.section(self.key)
        split = ctx.splits[s.split]
        done = ctx.store.values(KIND)
        members = sorted(ctx.members, key=lambda m: m.hash)
        todo = [
            (a, b)
            for i, a in enumerate(members)
            for b in members[i + 1 :]
            if a.hash != b.hash and curvature_key(a.hash, b.hash, split.key, s) not in done
        ]
        if not todo:
            return
        ctx.say(f"curvature: {len(todo)} pairs, f'' at {s.points} points on '{s.split}'")
        ev = ctx.evaluator
        grid = bf.uniform_grid(s.points)
        loaded: dict[str, Any] = {}

        def point(m: Any) -> Any:
            if m.id not in loaded:
                loaded[m.id] = ev.as_point(ctx.population.load(m.id), name=m.id)
            return loaded[m.id]

        for a, b in tqdm(todo, desc="curvature", unit="pair", disable=not ctx.progress):
            with PathCurvature(ev, point(a), point(b), split, batchnorm=s.batchnorm) as pc:
                rec: dict[str, Any] = {
                    "s": grid.tolist(),
                    "f2": [pc.second(float(x)) for x in grid],
                    "loss": [pc.loss(float(x)) for x in grid],
                    "f1_0": pc.first(0.0),
                    "f1_1": pc.first(1.0),
                    "trace": None,
                    "eigenvalues": None,
                    "batchnorm": s.batchnorm,
                }
                if s.trace_samples:
                    rec["trace"] = pc.trace(0.5, samples=s.trace_samples, seed=s.seed).to_dict()
                if s.eigenvalues:
                    rec["eigenvalues"] = pc.eigenvalues(0.5, k=s.eigenvalues, seed=s.seed).tolist()
            rec.update(member_a=a.id, member_b=b.id, hash_a=a.hash, hash_b=b.hash, split=split.key)
            ctx.store.put_value(KIND, curvature_key(a.hash, b.hash, split.key, s), rec)

    def read(
        self, store: Store, result: StudyResult, earlier: Mapping[str, Any]
    ) -> BarrierPrediction:
        from modeconn.stats.inference import correlate

        s: CurvatureSection = result.study.section(self.key)
        key = result.splits[s.split]["key"]
        found = store.values(KIND)
        paths = curves(store, s.split)
        half = 0.5 in [round(float(a), 9) for a in result.grid["alphas"]]
        ids = list(result.members.index)
        hashes = result.members["hash"].to_dict()
        rows = []
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                rec = found.get(curvature_key(hashes[a], hashes[b], key, s))
                if rec is None:
                    if hashes[a] == hashes[b]:
                        continue
                    raise DataError(
                        f"no curvature record of pair {a}–{b} on '{s.split}' in {store.path} "
                        "for these settings: rerun `modeconn run` (it computes what is missing)"
                    )
                forms = pair_forms(rec)
                measured = forms["frozen"]
                if s.batchnorm == "batch":  # the record's f is the batch-statistics loss
                    forms["measured_batch"] = forms.pop("frozen")
                curve = paths.get((a, b))
                if half and curve is not None:
                    loss = curve.set_index(curve["alpha"].round(9))["loss"]
                    measured = bf.measured_barrier(loss[0.0], loss[0.5], loss[1.0])
                rows.append({"member_a": a, "member_b": b, "measured": measured, **forms})
        pairs = pd.DataFrame(rows)
        corr, notes = [], []
        targets = ["measured"] + (["measured_batch"] if s.batchnorm == "batch" else [])
        if len(pairs) >= 3:
            for target in targets:
                for form in bf.FORMS:
                    c = correlate(
                        pairs[form],
                        pairs[target],
                        n_boot=s.bootstrap,
                        seed=s.seed,
                        constant="undefined",
                    )
                    corr.append({"form": form, "against": target, **c.to_dict()})
        else:
            notes.append(f"{len(pairs)} pair(s): a correlation needs at least 3")
        return BarrierPrediction(
            split=s.split,
            measured_from="sweep α = ½" if half else "frozen-statistics f(½) (grid lacks ½)",
            pairs=pairs,
            correlations=pd.DataFrame(corr),
            notes=tuple(notes),
        )

    def sections(self, result: StudyResult, value: BarrierPrediction) -> list[Section]:
        from modeconn.figures.landscape import barrier_prediction
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        s: CurvatureSection = result.study.section(self.key)
        figs = []
        if len(value.pairs):
            figs.append(
                (
                    f"Barrier predicted from f'' vs. measured ({value.measured_from}), per pair "
                    f"on '{value.split}'; dashed: y = x.",
                    barrier_prediction(value.pairs),
                )
            )
            if "measured_batch" in value.pairs.columns:
                batch = value.pairs.drop(columns="measured")
                figs.append(
                    (
                        "Barrier predicted from f'' vs. the barrier of the same f (BatchNorm "
                        f"on batch statistics), per pair on '{value.split}'; dashed: y = x.",
                        barrier_prediction(batch.rename(columns={"measured_batch": "measured"})),
                    )
                )
        tables = [("Barrier forms per pair.", value.pairs.round(6))]
        if len(value.correlations):
            cols = [
                c
                for c in (
                    "form",
                    "against",
                    "n",
                    "pearson_r",
                    "pearson_ci",
                    "spearman_rho",
                    "spearman_ci",
                )
                if c in value.correlations.columns
            ]
            tables.append(("Each form against the measured barrier.", value.correlations[cols]))
        return [
            Section(
                title="Barrier prediction from curvature",
                text=(
                    "With Δ = θB − θA and f(s) = L(θA + sΔ) (s = 1 − α: the linear path's "
                    "loss at α = 1 − s): exact B = −½∫₀¹ min(s, 1 − s) f''(s) "
                    f"ds (trapezoid on {s.points} points), midpoint −⅛ f''(½), endpoint "
                    "¼(f'(0) − f'(1)) + (1/16)(f''(0) + f''(1)); f'' by Hessian-vector "
                    "products (Singh et al. 2024; derivation in docs/method.md). "
                    + " ".join(value.notes)
                ),
                figures=tuple(figs),
                tables=tuple(tables),
                provenance=provenance(result, s.split),
            )
        ]

    def summary_lines(self, value: BarrierPrediction) -> list[str]:
        if not len(value.correlations):
            return [f"barrier prediction: {len(value.pairs)} pair(s), no correlation"]
        parts = [
            f"{r['form']} r = {r['pearson_r']:.2f}"
            + ("" if r["against"] == "measured" else f" (vs. {r['against']})")
            for _, r in value.correlations.iterrows()
        ]
        return ["barrier prediction: " + ", ".join(parts)]
