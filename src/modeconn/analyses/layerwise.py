"""Layer-wise linear mode connectivity (Adilova et al. ICLR 2024; Singh et al. 2024).

For each pair (A, B) and each block ℓ of the model (groups of its parameter names,
:mod:`modeconn.engine.layerwise`): the loss along block ℓ's path with every other block
at A ("rest at A") and at B ("rest at B"), and along the cumulative paths that
interpolate the first k blocks (shallow-first) or the last k (deep-first). Two barrier
conventions are reported per path:

* ``own`` — Entezari's barrier height against the path's own chord,
  max_s [f(s) − ((1 − s) f(0) + s f(1))] (:func:`modeconn.measures.barriers.barrier_height`):
  the path ends at a hybrid model, so its own endpoints are the reference;
* ``lmc`` — the layer-wise-lmc code's convention: max_s f(s) − ½(L(θA) + L(θB)), the
  full members' mean loss subtracted (negative when every hybrid is better than the
  members' mean).

One record per ordered pair, keyed by the two weight hashes (A then B), the split's key
and a fingerprint of the settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import Field

from modeconn.analyses.base import MeasureContext, settings_fingerprint, value_key
from modeconn.config.sections import SectionModel
from modeconn.errors import ConfigError, DataError
from modeconn.measures.barriers import barrier_height
from modeconn.results import StudyResult
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.report.html import Section

KIND = "layerwise"


class LayerwiseSection(SectionModel):
    """``analyses.layerwise``: per-block and cumulative barriers of member pairs."""

    split: str
    depth: int = Field(default=2, ge=1, description="name parts of a block's module prefix")
    blocks: list[str] | None = Field(default=None, description="blocks to use (None: all)")
    pairs: list[tuple[str, str]] | None = Field(default=None, description="None: every pair")
    points: int = Field(default=5, ge=2)
    cumulative: bool = True

    def check(self, study: Study) -> None:
        study.check_split("analyses.layerwise.split", self.split)

    def eval_splits(self) -> list[str]:
        return [self.split]

    def settings(self) -> dict[str, Any]:
        return {"v": 1, **self.model_dump(exclude={"split", "pairs"})}


def layerwise_key(hash_a: str, hash_b: str, split_key: str, section: LayerwiseSection) -> str:
    return value_key(hash_a, hash_b, split_key, settings_fingerprint(section.settings()))


def _pairs(section: LayerwiseSection, ids: list[str]) -> list[tuple[str, str]]:
    if section.pairs is None:  # sorted ids: measure and read agree on each orientation
        ids = sorted(ids)
        return [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    unknown = sorted({m for p in section.pairs for m in p} - set(ids))
    if unknown:
        raise ConfigError(
            f"analyses.layerwise.pairs names {unknown}, not members of this study "
            f"(members: {', '.join(ids)})"
        )
    return [tuple(p) for p in section.pairs]  # type: ignore[misc]


def path_barriers(curve: list[float], loss_a: float, loss_b: float) -> dict[str, float]:
    """Both conventions for one layer-wise path (see the module docstring).

    >>> path_barriers([1.0, 3.0, 2.0], 1.0, 1.0)
    {'own': 1.5, 'lmc': 2.0}
    """
    return {"own": barrier_height(curve), "lmc": max(curve) - 0.5 * (loss_a + loss_b)}


@dataclass(frozen=True)
class LayerwiseValue:
    per_block: pd.DataFrame  # pair, block, rest_a, rest_b (own), rest_a_lmc, rest_b_lmc
    cumulative: pd.DataFrame  # pair, k, shallow, deep (own), shallow_lmc, deep_lmc


class Layerwise:
    key = "layerwise"
    section = LayerwiseSection
    cites = "Adilova et al. ICLR 2024 (layer-wise LMC); Singh et al. 2024 (Landscaping LMC)"
    summary = "barriers with one block (or the first/last k blocks) interpolated, the rest fixed"
    needs_weights = True

    def measure(self, ctx: MeasureContext) -> None:
        from modeconn.engine.layerwise import blocks, layerwise_curves, select_blocks

        s: LayerwiseSection = ctx.study.section(self.key)
        split = ctx.splits[s.split]
        refs = {m.id: m for m in ctx.members}
        ev = ctx.evaluator
        groups = select_blocks(blocks(list(ev.keys), s.depth), s.blocks)  # checked up front
        done = ctx.store.values(KIND)
        todo = [
            (refs[a], refs[b])
            for a, b in _pairs(s, list(refs))
            if layerwise_key(refs[a].hash, refs[b].hash, split.key, s) not in done
        ]
        if not todo:
            return
        ctx.say(f"layer-wise: {len(todo)} pairs × {len(groups)} blocks on '{s.split}'")
        for a, b in todo:
            pa = ev.as_point(ctx.population.load(a.id), name=a.id)
            pb = ev.as_point(ctx.population.load(b.id), name=b.id)
            res = layerwise_curves(
                ev, pa, pb, split, groups=groups, points=s.points, cumulative=s.cumulative
            )
            rec = {**res.to_dict(), "member_a": a.id, "member_b": b.id, "split": split.key}
            ctx.store.put_value(KIND, layerwise_key(a.hash, b.hash, split.key, s), rec)

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> LayerwiseValue:
        s: LayerwiseSection = result.study.section(self.key)
        key = result.splits[s.split]["key"]
        hashes = result.members["hash"].to_dict()
        found = store.values(KIND)
        blocks_rows, cum_rows = [], []
        for a, b in _pairs(s, [str(m) for m in hashes]):
            rec = found.get(layerwise_key(hashes[a], hashes[b], key, s))
            if rec is None:
                raise DataError(
                    f"no layer-wise record of pair {a}–{b} on '{s.split}' in {store.path} for "
                    "these settings: rerun `modeconn run` (it computes what is missing)"
                )
            la, lb, pair = rec["loss_a"], rec["loss_b"], f"{a}–{b}"
            for blk in rec["blocks"]:
                ra = path_barriers(rec["rest_a"][blk], la, lb)
                rb = path_barriers(rec["rest_b"][blk], la, lb)
                blocks_rows.append(
                    {
                        "pair": pair,
                        "block": blk,
                        "rest_a": ra["own"],
                        "rest_b": rb["own"],
                        "rest_a_lmc": ra["lmc"],
                        "rest_b_lmc": rb["lmc"],
                    }
                )
            for k, (sh, dp) in enumerate(zip(rec["shallow"], rec["deep"], strict=True), 1):
                bs, bd = path_barriers(sh, la, lb), path_barriers(dp, la, lb)
                cum_rows.append(
                    {
                        "pair": pair,
                        "k": k,
                        "shallow": bs["own"],
                        "deep": bd["own"],
                        "shallow_lmc": bs["lmc"],
                        "deep_lmc": bd["lmc"],
                    }
                )
        return LayerwiseValue(pd.DataFrame(blocks_rows), pd.DataFrame(cum_rows))

    def sections(self, result: StudyResult, value: LayerwiseValue) -> list[Section]:
        from modeconn.figures.landscape import layerwise_barriers
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        s: LayerwiseSection = result.study.section(self.key)
        if not len(value.per_block):
            return []
        mean = value.per_block.groupby("block", sort=False)[["rest_a", "rest_b"]].mean()
        cum = None
        if len(value.cumulative):
            cum = value.cumulative.groupby("k")[["shallow", "deep"]].mean()
            cum.columns = ["shallow-first", "deep-first"]
        n = value.per_block["pair"].nunique()
        figs = (
            (
                f"Barrier with one block interpolated, mean over {n} pair(s) on '{s.split}' "
                "(left); cumulative barriers as blocks are added (right).",
                layerwise_barriers(mean, cum),
            ),
        )
        return [
            Section(
                title="Layer-wise linear connectivity",
                text=(
                    "Each block ℓ interpolated between A and B with every other block at A "
                    "(rest at A) or at B (rest at B); barrier against the path's own chord "
                    "(columns *_lmc: its maximum minus the full members' mean loss, the "
                    "layer-wise-lmc convention). Cumulative: the first (shallow-first) or "
                    f"last (deep-first) k blocks interpolated, the rest at A. Blocks: module "
                    f"names cut to depth {s.depth}."
                ),
                figures=figs,
                tables=(
                    ("Barrier per block and pair.", value.per_block.round(6)),
                    ("Cumulative barriers per pair.", value.cumulative.round(6)),
                ),
                provenance=provenance(result, s.split),
            )
        ]

    def summary_lines(self, value: LayerwiseValue) -> list[str]:
        if not len(value.per_block):
            return []
        top = value.per_block.groupby("block", sort=False)["rest_a"].mean().idxmax()
        return [f"layer-wise: highest mean one-block barrier (rest at A) in '{top}'"]
