"""Counterfactual connectivity (Lubana et al., ICML 2023, "Mechanistic Mode Connectivity",
Table 1 and Fig. 4–5).

A model's *mechanism* is read off what it is invariant to. Four counterfactual sets probe
a box-cue model: **clean** (no cue), **cue** (every image carries its label's cue),
**randomized cue** (the cue drawn at random) and **randomized image** (the image of another
class, the label's cue kept). A model that reads the cue scores high on cue and randomized
image and low on randomized cue; one that reads the object scores clean ≈ cue ≈
randomized cue and near 0 on randomized image.

This analysis gives, from the study's ``analyses.mechanisms`` section::

    analyses:
      mechanisms:
        sets: {clean: clean, cue: cue, random_cue: random_cue, random_image: random_image}
        points: 11          # α grid of the paths back to the cue models
        reference: null     # arm of the cue models for arms without `from` (optional)
        permute: false      # permuted linear connectivity between scratch-trained members
        permute_sets: [clean, cue]
        match_split: null   # images the activations are matched on (default: clean set)
        groups: null        # mechanism group → arms, for the basins' ARI (default: arms)
        bootstrap: 200      # draws of the bootstrap over the basins' sample for that ARI

* per member, its accuracy on each set (the sweep's member points: the sets are evaluated
  for every member) and its **reliance on the cue**: clean − randomized-cue accuracy, and
  the randomized-image accuracy;
* the **methods × sets table**: per arm, the mean accuracy on each set with a 95 %
  t-interval over its members (the paper reports the mean of 3 seeds);
* the **paths back to the cue model**: for every member of an arm with ``from`` (or of
  any arm, paired with the ``reference`` arm), θ(α) = (1 − α)·θ_C + α·θ from its cue model
  θ_C (α = 0) to itself (α = 1: the member is the path's A, as α = 1 is A on every path),
  evaluated by the engine on each set (with the study's
  BatchNorm policy: re-estimated at every α for a BatchNorm model, as the paper does);
  each path's loss barrier height (Entezari et al.) and its accuracy along α. Records are
  keyed by the two weight hashes, the set's store key and the grid.

* with ``permute: true``, **permuted linear connectivity** between the members trained from
  scratch (the cue and clean arms), before and after activation matching
  (:mod:`modeconn.analyses.mechanisms_permuted`);
* **basins meet mechanisms**: the adjusted Rand index of the study's convexity-gap basins
  against the members' mechanism groups, with a bootstrap over the evaluation sample.

The paper's claim, checked by the table and the paths: naive fine-tuning (FT-S, FT-M,
LLRT, LP-FT) keeps the cue (randomized cue far below clean) and stays linearly connected
to the cue model on the cue set; CBFT removes the cue and sits behind a barrier on it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from modeconn.analyses import mechanisms_permuted as permuted
from modeconn.analyses.base import MeasureContext, settings_fingerprint, value_key
from modeconn.config.sections import SectionModel
from modeconn.results import StudyResult
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.report.html import Section

SET_NAMES = ("clean", "cue", "random_cue", "random_image")
SetName = Literal["clean", "cue", "random_cue", "random_image"]
KIND = "mechanisms_path"
# the `cue` value a split playing each counterfactual set must have ("random_text" is the
# text cues' name for the randomized image)
SET_CUES: dict[str, tuple[str, ...]] = {
    "clean": ("none",),
    "cue": ("label",),
    "random_cue": ("random",),
    "random_image": ("random_image", "random_text"),
}


class CounterfactualSets(SectionModel):
    """The split that plays each of the four counterfactual sets."""

    clean: str
    cue: str
    random_cue: str
    random_image: str


class MechanismsSection(SectionModel):
    """``analyses.mechanisms``: the four sets, the path grid, the optional reference arm."""

    sets: CounterfactualSets
    points: int = Field(default=11, ge=3, le=101)
    reference: str | None = None
    permute: bool = False
    permute_sets: list[SetName] = Field(default_factory=lambda: ["clean", "cue"], min_length=1)  # type: ignore[arg-type]
    match_split: str | None = None
    groups: dict[str, list[str]] | None = None
    bootstrap: int = Field(default=200, ge=2)
    seed: int = 0

    def check(self, study: Study) -> None:
        for role, name in self.sets.model_dump().items():
            study.check_split(f"analyses.mechanisms.sets.{role}", name)
            check_set_split(study, role, name)
        if self.match_split is not None:
            study.check_split("analyses.mechanisms.match_split", self.match_split)
        if self.permute and study.model.kind != "cnn":
            raise ValueError(
                "analyses.mechanisms.permute: activation matching permutes the channels of a "
                f"CNN (`model.kind: cnn`); this study's model kind is '{study.model.kind}'; "
                "remove `permute: true`"
            )
        arms = [] if study.train is None else [a.name for a in study.train.arms]
        unknown = sorted({a for g in (self.groups or {}).values() for a in g} - set(arms))
        if unknown and arms:
            raise ValueError(
                f"analyses.mechanisms.groups names arm(s) {unknown}, not arms of train.arms "
                f"({', '.join(arms)}); list each group's arms by name"
            )
        arms = [] if study.train is None else [a.name for a in study.train.arms]
        if self.reference is not None and arms and self.reference not in arms:
            raise ValueError(
                f"analyses.mechanisms.reference names arm '{self.reference}', not an arm of "
                f"train.arms ({', '.join(arms) or 'none'})"
            )

    def eval_splits(self) -> list[str]:
        names = list(self.sets.model_dump().values())
        return list(dict.fromkeys([*names, *([self.match_split] if self.match_split else [])]))


def check_set_split(study: Study, role: str, name: str) -> None:
    """Raise ValueError unless split `name` can play counterfactual set `role`: a split of
    a kind with cue fields whose ``cue`` is the role's (``none`` for clean, ``label`` for
    cue, ``random`` for randomized cue, ``random_image`` for randomized image)."""
    from modeconn.config.splits import split_kind

    entry = study.splits[name]
    kind = split_kind(entry)
    where = f"analyses.mechanisms.sets.{role} names split '{name}'"
    cue = getattr(entry, "cue", None)
    if cue is None:  # a split kind a data module added without cue fields
        raise ValueError(
            f"{where} of kind '{kind}', which has no cue fields; a counterfactual set is a "
            f"split with `cue: {SET_CUES[role][0]}` (e.g. `kind: digits`)"
        )
    if cue not in SET_CUES[role]:
        want = "random_text" if role == "random_image" and kind == "text" else SET_CUES[role][0]
        raise ValueError(f"{where}, whose cue is '{cue}'; the {role} set needs `cue: {want}`")
    fraction = getattr(entry, "cue_fraction", 1.0)
    if role == "cue" and fraction != 1.0:
        raise ValueError(
            f"{where}, whose cue_fraction is {fraction}; the cue set cues every "
            "image: set `cue_fraction: 1`"
        )


def path_pairs(study: Study, ids: list[str]) -> list[tuple[str, str]]:
    """(cue model, member) pairs: member i of an arm with ``from`` (or of any other arm,
    when the section names a ``reference``) and member i mod n of the source arm.

    Members are named ``<arm>-<i>`` (as trained); for a population folder without a
    ``train`` section the arm sizes are counted from the ids."""
    section: MechanismsSection = study.section("mechanisms")
    arms = {} if study.train is None else {a.name: a for a in study.train.arms}
    have = set(ids)
    sizes = Counter(i.rpartition("-")[0] for i in ids)  # arm sizes of a population folder
    out = []
    for mid in sorted(ids):
        arm, _, index = mid.rpartition("-")
        spec = arms.get(arm)
        source = spec.from_ if spec is not None and spec.from_ else None
        if source is None and section.reference not in (None, arm):
            source = section.reference
        size = arms[source].members if source in arms else sizes.get(source or "", 0)
        if source is None or size == 0 or not index.isdigit():
            continue
        partner = f"{source}-{int(index) % size:02d}"
        if partner in have:
            out.append((partner, mid))
    return out


def _key(hash_a: str, hash_b: str, split_key: str, points: int) -> str:
    return value_key(hash_a, hash_b, split_key, settings_fingerprint({"points": points}))


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % t-interval (NaN bounds for a single value)."""
    from scipy import stats

    v = values[np.isfinite(values)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


class Mechanisms:
    key = "mechanisms"
    section = MechanismsSection
    cites = "Lubana et al. 2023 (Mechanistic Mode Connectivity), Table 1 and Fig. 4–5"
    summary = (
        "accuracy on the four counterfactual sets per member and method, cue reliance, and "
        "the linear paths from each fine-tuned member back to its cue model on each set"
    )
    needs_weights = True

    def measure(self, ctx: MeasureContext) -> None:
        from modeconn.engine.paths import alpha_grid

        section: MechanismsSection = ctx.study.section(self.key)
        if section.permute:
            permuted.measure(ctx, section)
        hashes = {r.id: r.hash for r in ctx.members}
        sets = section.sets.model_dump()
        alphas = alpha_grid(section.points)
        ev = ctx.evaluator
        for source, member in path_pairs(ctx.study, list(hashes)):
            splits = {role: ctx.splits[name] for role, name in sets.items()}
            keys = {
                role: _key(hashes[source], hashes[member], s.key, section.points)
                for role, s in splits.items()
            }
            todo = [r for r in splits if ctx.store.get_value(KIND, keys[r]) is None]
            if not todo:
                continue
            ctx.say(f"mechanisms: path {source} → {member} on {', '.join(todo)}")
            a = ev.as_point(ctx.population.load(source), name=source)
            b = ev.as_point(ctx.population.load(member), name=member)
            curves: dict[str, dict[str, list[float]]] = {
                r: {"loss": [], "accuracy": []} for r in todo
            }
            for alpha in alphas:  # one point at a time: BatchNorm re-estimated once per α
                for role in todo:
                    res = ev.evaluate_lerp(a, b, 1.0 - float(alpha), splits[role])
                    curves[role]["loss"].append(res.loss)
                    curves[role]["accuracy"].append(float(res.metrics.get("accuracy", math.nan)))
            for role in todo:
                ctx.store.put_value(
                    KIND,
                    keys[role],
                    {
                        "alphas": [float(x) for x in alphas],
                        **curves[role],
                        "split": splits[role].key,
                    },
                )

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> dict[str, Any]:
        from modeconn.measures.barriers import barrier_height

        section: MechanismsSection = result.study.section(self.key)
        sets = section.sets.model_dump()
        members = result.members
        per_member = pd.DataFrame(index=members.index)
        arms = members["arm"] if "arm" in members.columns else pd.Series(None, index=members.index)
        per_member["arm"] = arms.fillna("(no arm)")
        for role, name in sets.items():
            col = f"{name}.accuracy"
            per_member[role] = members.get(col, math.nan)
        per_member["reliance"] = per_member["clean"] - per_member["random_cue"]
        rows = []
        for arm, g in per_member.groupby("arm", sort=False):
            for role in SET_NAMES:
                mean, low, high = _interval(g[role].to_numpy(float))
                rows.append(
                    {"method": arm, "set": role, "accuracy": mean, "low": low, "high": high,
                     "members": len(g)}
                )  # fmt: skip
        table = pd.DataFrame(rows)
        hashes: dict[str, str] = {str(k): str(v) for k, v in members["hash"].items()}
        found = store.values(KIND)
        paths, curves = [], []
        for source, member in path_pairs(result.study, list(hashes)):
            for role, name in sets.items():
                info = result.splits.get(name)
                if info is None:
                    continue
                rec = found.get(_key(hashes[source], hashes[member], info["key"], section.points))
                if rec is None:
                    continue
                method = per_member.loc[member, "arm"]
                paths.append(
                    {
                        "method": method,
                        "source": source,
                        "member": member,
                        "set": role,
                        "loss_barrier": barrier_height(rec["loss"], rec["alphas"]),
                        "min_accuracy": float(np.nanmin(rec["accuracy"])),
                        "end_accuracy": float(rec["accuracy"][-1]),
                    }
                )
                curves += [
                    {"method": method, "member": member, "set": role, "alpha": x, "accuracy": y}
                    for x, y in zip(rec["alphas"], rec["accuracy"], strict=True)
                ]
        return {
            "members": per_member,
            "table": table,
            "paths": pd.DataFrame(paths),
            "curves": pd.DataFrame(curves),
            "permuted": permuted.read(store, result, section) if section.permute else None,
            "recovery": permuted.recovery(store, result, section),
        }

    def sections(self, result: StudyResult, value: dict[str, Any]) -> list[Section]:
        from modeconn.figures.mechanisms import accuracy_along_paths
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        table = value["table"]
        wide = table.assign(
            cell=[
                f"{r.accuracy:.3f}" + ("" if math.isnan(r.low) else f" [{r.low:.3f}, {r.high:.3f}]")
                for r in table.itertuples()
            ]
        ).pivot(index="method", columns="set", values="cell")
        wide = wide.reindex(index=list(dict.fromkeys(table["method"])), columns=list(SET_NAMES))
        tables = [
            ("Accuracy on the four counterfactual sets: mean over each arm's members with a "
             "95 % t-interval.", wide),
            ("Per member: accuracy on each set and its reliance on the cue (clean − "
             "randomized cue).", value["members"].round(4)),
        ]  # fmt: skip
        figures = []
        paths = value["paths"]
        if len(paths):
            barriers = paths.pivot_table(
                index="method", columns="set", values="loss_barrier", aggfunc="mean"
            ).reindex(columns=[s for s in SET_NAMES if s in set(paths["set"])])
            tables.append(
                ("Mean loss barrier height on the path from each member back to its cue model.",
                 barriers.round(4)),
            )  # fmt: skip
            figures.append(
                (
                    "Accuracy along the linear path from the cue model (α = 0) to each "
                    "fine-tuned member (α = 1), per counterfactual set: the mean over a "
                    "method's pairs, its range shaded.",
                    accuracy_along_paths(value["curves"], sets=list(SET_NAMES)),
                )
            )
        perm = value.get("permuted")
        if perm is not None and len(perm):
            tables.append(
                ("Permuted linear connectivity between members trained from scratch: mean "
                 "loss barrier per pair of arms and set, on the plain path and after aligning "
                 "B to A by activation matching (share of channels left in place: "
                 f"{perm.loc[perm['aligned'], 'fixed_channels'].mean():.2f}).",
                 permuted.barrier_table(perm).round(4)),
            )  # fmt: skip
        rec = value.get("recovery")
        if rec is not None:
            tables.append(
                ("Basins meet mechanisms: adjusted Rand index of the basins on "
                 f"'{rec['split']}' against the mechanism groups, with a 95 % bootstrap "
                 f"interval over its {rec['examples']} examples ({rec['draws']} draws).",
                 pd.DataFrame([{k: v for k, v in rec.items() if k != "groups"}])),
            )  # fmt: skip
        names = list(result.study.section(self.key).sets.model_dump().values())
        return [
            Section(
                title="Counterfactual connectivity",
                text=(
                    "Each member scored on the four counterfactual sets of Lubana et al. "
                    "(2023): clean, cue (every image with its label's cue), randomized cue "
                    "and randomized image (another class's image with the label's cue). A "
                    "member that reads the cue loses accuracy when the cue is randomized "
                    "and keeps it on randomized images; one that reads the object does the "
                    "opposite. The paths join each fine-tuned member to the cue model it "
                    "started from."
                ),
                tables=tuple(tables),
                figures=tuple(figures),
                provenance=provenance(result, *[n for n in names if n in result.splits]),
            )
        ]

    def summary_lines(self, value: dict[str, Any]) -> list[str]:
        table = value["table"]
        out = []
        for method, g in table.groupby("method", sort=False):
            acc = dict(zip(g["set"], g["accuracy"], strict=True))
            out.append(
                f"mechanisms {method}: "
                + " / ".join(f"{s} {acc.get(s, math.nan):.3f}" for s in SET_NAMES)
            )
        perm = value.get("permuted")
        if perm is not None and len(perm):
            for (pair, role), g in perm.groupby(["pair", "set"], sort=False):
                plain = g.loc[~g["aligned"], "loss_barrier"].mean()
                aligned = g.loc[g["aligned"], "loss_barrier"].mean()
                out.append(
                    f"mechanisms permuted {pair} on {role}: barrier {plain:.3f} plain, "
                    f"{aligned:.3f} aligned"
                )
        rec = value.get("recovery")
        if rec is not None:
            out.append(
                f"mechanisms basins vs groups ({', '.join(rec['groups'])}): ARI "
                f"{rec['ari']:.2f} [{rec['low']:.2f}, {rec['high']:.2f}] over "
                f"{rec['draws']} draws of '{rec['split']}'"
            )
        return out

    def summary_json(self, value: dict[str, Any]) -> dict[str, Any]:
        """The methods × sets table as records (method, set, accuracy, low, high, members),
        each member's accuracy per set and cue reliance, and each path back to its cue
        model (loss barrier, lowest and end accuracy per set)."""
        from modeconn.analyses.base import records

        return {
            "table": records(value["table"]),
            "members": records(value["members"], index="id"),
            "paths": records(value["paths"]),
        }
