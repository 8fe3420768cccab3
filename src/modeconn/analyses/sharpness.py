"""ε-sharpness of every member (Keskar et al. 2017), the paper's baseline (App. F.4).

φ = 100·(max L(x+y) − L(x))/(1 + L(x)) over the box |yᵢ| ≤ ε(|xᵢ|+1), estimated by
projected gradient ascent (:mod:`modeconn.measures.sharpness` does the maths). One record
per member, keyed by its weight hash, the split's key and a fingerprint of the settings
(the split name is left out: it is keyed by its data). Table 1 and the predictor tables
(:mod:`modeconn.analyses.table_one`) set it beside the basin score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import Field

from modeconn.analyses.base import MeasureContext, value_key
from modeconn.config.sections import SectionModel
from modeconn.errors import DataError
from modeconn.results import StudyResult
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.report.html import Section


class SharpnessSection(SectionModel):
    """ε-sharpness (Keskar et al. 2017) of every member, the paper's baseline (App. F.4).

    Defaults are the paper's values (ε = 1e-5, 8,192 ascent steps of lr 8e-5 on batches of
    32 with 4 accumulated per step, 32,768 examples); the built-in demo uses CPU-sized ones.
    """

    split: str = Field(description="the split whose loss is maximised (e.g. the ID sample)")
    epsilon: float = Field(default=1e-5, gt=0)
    steps: int = Field(default=8192, ge=1)
    lr: float = Field(default=8e-5, gt=0)
    batch_size: int = Field(default=32, ge=1)
    accumulate: int = Field(default=4, ge=1)
    examples: int = Field(default=32768, ge=1)
    seed: int = 0
    bucket: int = Field(
        default=1, ge=1, description="ascent batches grouped by length (1 = the paper's)"
    )

    def check(self, study: Study) -> None:
        study.check_split("analyses.sharpness.split", self.split)

    def eval_splits(self) -> list[str]:
        return [self.split]

    def settings(self) -> dict[str, Any]:
        """The ascent's settings without the split (the split is keyed apart)."""
        return self.model_dump(exclude={"split"})


def sharpness_key(member_hash: str, split_key: str, settings: dict[str, Any]) -> str:
    from modeconn.measures.sharpness import SharpnessConfig

    return value_key(member_hash, split_key, SharpnessConfig.from_dict(settings).fingerprint())


def sharpness_series(store: Store, result: StudyResult) -> pd.Series | None:
    """ε-sharpness per member, or None if the study did not ask for it."""
    section: SharpnessSection | None = result.study.section("sharpness")
    if section is None:
        return None
    key = result.splits[section.split]["key"]
    settings = section.settings()
    found = store.values("sharpness")
    values = {}
    for mid, h in result.members["hash"].items():
        rec = found.get(sharpness_key(h, key, settings))
        if rec is None:
            raise DataError(
                f"no ε-sharpness of member {mid} in {store.path} for these settings: rerun "
                "`modeconn run` (it computes what is missing)"
            )
        values[mid] = float(rec["value"])
    return pd.Series(values, name="sharpness")


class Sharpness:
    key = "sharpness"
    section = SharpnessSection
    cites = "Keskar et al. 2017; Juneja et al. 2023, App. F.4 (baseline in Table 1)"
    summary = "ε-sharpness of every member by projected gradient ascent in an ε-box"
    needs_weights = True

    def measure(self, ctx: MeasureContext) -> None:
        from tqdm.auto import tqdm

        from modeconn.measures.sharpness import SharpnessConfig, epsilon_sharpness

        section: SharpnessSection = ctx.study.section(self.key)
        settings = section.settings()
        config = SharpnessConfig.from_dict(settings)
        split = ctx.splits[section.split]
        done = ctx.store.values("sharpness")
        todo = [m for m in ctx.members if sharpness_key(m.hash, split.key, settings) not in done]
        if not todo:
            return
        ctx.say(
            f"ε-sharpness: {len(todo)} members, {config.steps} ascent steps each on "
            f"'{section.split}' (ε = {config.epsilon:g})"
        )
        ev = ctx.evaluator
        for m in tqdm(todo, desc="sharpness", unit="member", disable=not ctx.progress):
            point = ev.as_point(ctx.population.load(m.id), name=m.id)
            res = epsilon_sharpness(ev, point, split, config=config)
            ctx.store.put_value(
                "sharpness",
                sharpness_key(m.hash, split.key, settings),
                {**res.to_dict(), "member": m.id, "split": split.key},
            )

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> pd.Series:
        series = sharpness_series(store, result)
        assert series is not None  # read only when the section is set
        return series

    def sections(self, result: StudyResult, value: pd.Series) -> list[Section]:
        import modeconn.figures as figures
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        s: SharpnessSection = result.study.section(self.key)
        figs = []
        for split, col in result.ood_columns().items():
            metric = col.rsplit(".", 1)[1]
            figs.append(
                (
                    f"ε-sharpness vs. {split} {metric} with a least-squares fit.",
                    figures.score_scatter(
                        value,
                        result.members[col],
                        basins=result.members["basin"],
                        xlabel="ε-sharpness",
                        ylabel=f"{split} {metric}",
                    ),
                )
            )
        table = pd.DataFrame(
            {"member": value.index, "basin": result.members["basin"].loc[value.index].to_numpy()}
        ).assign(**{"ε-sharpness": value.to_numpy()})
        return [
            Section(
                title="ε-sharpness",
                text=(
                    "ε-sharpness (Keskar et al.), the paper's baseline: φ = 100·(max L(x+y) − "
                    f"L(x))/(1 + L(x)) over the box |yᵢ| ≤ ε(|xᵢ|+1), ε = {s.epsilon:g}, by "
                    f"{s.steps} projected ascent steps (lr {s.lr:g}, batches of {s.batch_size} "
                    f"× {s.accumulate}) on '{s.split}' (at most {s.examples} examples)."
                ),
                figures=tuple(figs),
                tables=(("ε-sharpness of every member.", table),),
                provenance=provenance(result, s.split),
            )
        ]

    def summary_lines(self, value: pd.Series) -> list[str]:
        return [f"ε-sharpness: {value.min():.4g} – {value.max():.4g} over the members"]

    def summary_json(self, value: pd.Series) -> dict[str, Any]:
        """ε-sharpness of every member, by id."""
        return {"epsilon_sharpness": {str(m): float(v) for m, v in value.items()}}
