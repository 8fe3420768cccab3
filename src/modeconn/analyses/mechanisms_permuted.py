"""Permuted linear connectivity and basins-vs-mechanisms for ``analyses.mechanisms``
(Lubana et al., ICML 2023, "Mechanistic Mode Connectivity", Sec. 4: models that use
different mechanisms stay disconnected even after the permutation symmetry is removed).

Two parts of the mechanisms analysis live here, so that :mod:`.mechanisms` stays one
screenful per stage:

* **permuted paths** (``permute: true``): for every pair of members trained from scratch
  (arms without ``from``: the cue arm, the clean arm), the linear path A → B before and
  after B is aligned to A by activation matching (:mod:`modeconn.engine.permute`), on
  each set of ``permute_sets``; the barrier of each, grouped by the pair's arms
  (within the cue arm, within the clean arm, across). The paper's reading: within an arm
  alignment lowers the barrier (same mechanism, different permutation), across the arms
  a barrier remains (different mechanisms). The check needs members from different
  initialisations (``vary: init``; members that share one stay aligned, and the matching
  is the identity). Measured in docs/method.md (``examples/mechanisms-permuted.yaml``).
* **basins meet mechanisms**: the adjusted Rand index of the convexity-gap basins
  (``basins:``) against the members' mechanism groups (their arms, or the section's
  ``groups``), with a bootstrap over the evaluation sample
  (:func:`modeconn.stats.uncertainty.group_recovery`).

Not registered on its own: :class:`~modeconn.analyses.mechanisms.Mechanisms` calls it.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modeconn.analyses.base import MeasureContext, settings_fingerprint, value_key
from modeconn.errors import ConfigError, DataError
from modeconn.results import StudyResult
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.analyses.mechanisms import MechanismsSection
    from modeconn.config.study import Study

KIND = "mechanisms_permuted"


def scratch_pairs(study: Study, ids: list[str]) -> list[tuple[str, str]]:
    """Every pair (A, B), A < B, of members of the arms trained from scratch (no ``from``)."""
    arms = [] if study.train is None else [a.name for a in study.train.arms if a.from_ is None]
    mine = sorted(i for i in ids if i.rpartition("-")[0] in arms)
    return list(itertools.combinations(mine, 2))


def pair_kind(a: str, b: str) -> str:
    """'cue–cue' within an arm, 'clean–cue' across (arm names sorted)."""
    arm_a, arm_b = sorted((a.rpartition("-")[0], b.rpartition("-")[0]))
    return f"{arm_a}–{arm_b}"


def _key(hash_a: str, hash_b: str, split_key: str, match_key: str, points: int, aligned: bool):
    # "alpha": records before it ran α = 0 at A; they are measured again, not misread
    settings = {"points": points, "aligned": aligned, "match": match_key, "alpha": "1=A"}
    return value_key(hash_a, hash_b, split_key, settings_fingerprint(settings))


def measure(ctx: MeasureContext, section: MechanismsSection) -> None:
    """Evaluate the plain and the aligned path of every scratch pair on each permute set."""
    import copy

    from modeconn.engine.paths import alpha_grid
    from modeconn.engine.permute import activation_matching
    from modeconn.models.cnn import SmallCNN

    hashes = {r.id: r.hash for r in ctx.members}
    pairs = scratch_pairs(ctx.study, list(hashes))
    sets = section.sets.model_dump()
    splits = {role: ctx.splits[sets[role]] for role in section.permute_sets}
    match = ctx.splits[section.match_split or sets["clean"]]
    alphas = alpha_grid(section.points)
    ev = ctx.evaluator
    for a_id, b_id in pairs:
        keys = {
            (role, aligned): _key(
                hashes[a_id], hashes[b_id], s.key, match.key, section.points, aligned
            )
            for role, s in splits.items()
            for aligned in (False, True)
        }
        todo = [k for k, v in keys.items() if ctx.store.get_value(KIND, v) is None]
        if not todo:
            continue
        ctx.say(f"mechanisms: permuted path {a_id} – {b_id}")
        state_a, state_b = ctx.population.load(a_id), ctx.population.load(b_id)
        skeleton = ev.model
        if not isinstance(skeleton, SmallCNN):
            raise ConfigError(
                "analyses.mechanisms.permute needs a `model.kind: cnn` study (activation "
                f"matching permutes conv channels); the model is {type(skeleton).__name__}"
            )
        skeleton = copy.deepcopy(skeleton).to("cpu").float()
        batches = [b["images"].to("cpu").float() for b in match.batches]
        aligned_b, perms = activation_matching(skeleton, state_a, state_b, batches)
        fixed = [float(np.mean(p == np.arange(len(p)))) for p in perms]
        point_a = ev.as_point(state_a, name=a_id)
        points = {
            False: ev.as_point(state_b, name=b_id),
            True: ev.as_point(aligned_b, name=f"{b_id} aligned to {a_id}"),
        }
        for role, aligned in todo:
            loss, acc = [], []
            for alpha in alphas:  # θ(α) = α·θ_A + (1 − α)·θ_B: α = 1 is A, as on every path
                res = ev.evaluate_lerp(point_a, points[aligned], float(alpha), splits[role])
                loss.append(res.loss)
                acc.append(float(res.metrics.get("accuracy", math.nan)))
            record = {"alphas": [float(x) for x in alphas], "loss": loss, "accuracy": acc,
                      "split": splits[role].key, "fixed_channels": fixed}  # fmt: skip
            ctx.store.put_value(KIND, keys[(role, aligned)], record)


def read(store: Store, result: StudyResult, section: MechanismsSection) -> pd.DataFrame:
    """One row per (pair, set, before/after alignment): its loss barrier, the lowest
    accuracy on the path, and the share of channels the matching left in place."""
    from modeconn.measures.barriers import barrier_height

    members = result.members
    hashes: dict[str, str] = {str(k): str(v) for k, v in members["hash"].items()}
    sets = section.sets.model_dump()
    match = result.splits.get(section.match_split or sets["clean"])
    found = store.values(KIND)
    rows = []
    for a_id, b_id in scratch_pairs(result.study, list(hashes)):
        for role in section.permute_sets:
            info = result.splits.get(sets[role])
            if info is None or match is None:
                continue
            for aligned in (False, True):
                key = _key(hashes[a_id], hashes[b_id], info["key"], match["key"], section.points,
                           aligned)  # fmt: skip
                rec = found.get(key)
                if rec is None:
                    continue
                rows.append(
                    {
                        "pair": pair_kind(a_id, b_id),
                        "a": a_id,
                        "b": b_id,
                        "set": role,
                        "aligned": aligned,
                        "loss_barrier": barrier_height(rec["loss"], rec["alphas"]),
                        "min_accuracy": float(np.nanmin(rec["accuracy"])),
                        "fixed_channels": float(np.mean(rec["fixed_channels"])),
                    }
                )
    return pd.DataFrame(rows)


def barrier_table(permuted: pd.DataFrame) -> pd.DataFrame:
    """Mean loss barrier per pair kind and set, before and after alignment."""
    t = permuted.assign(when=np.where(permuted["aligned"], "aligned", "plain"))
    wide = t.pivot_table(index="pair", columns=["set", "when"], values="loss_barrier",
                         aggfunc="mean")  # fmt: skip
    wide.columns = [f"{col[0]} {col[1]}" for col in wide.columns]
    return wide


def mechanism_groups(result: StudyResult, section: MechanismsSection) -> pd.Series:
    """Each member's mechanism group: the section's ``groups`` (group → arms), else its arm."""
    arms = result.members.get("arm", pd.Series(None, index=result.members.index))
    if section.groups is None:
        return arms
    by_arm = {arm: g for g, names in section.groups.items() for arm in names}
    return arms.map(lambda a: by_arm.get(a))


def recovery(
    store: Store, result: StudyResult, section: MechanismsSection
) -> dict[str, Any] | None:
    """ARI of the basins against the mechanism groups, on the full sample and over a
    bootstrap of the basins' evaluation sample (None without two groups)."""
    from modeconn.analyses.uncertainty import example_losses
    from modeconn.stats.basins import basin_recovery
    from modeconn.stats.uncertainty import group_recovery

    groups = mechanism_groups(result, section)
    if groups.isna().any() or groups.nunique() < 2:
        return None
    labels = groups.astype(str).to_numpy()
    b = result.study.basins
    full = basin_recovery(result.fit.labels, labels)
    out: dict[str, Any] = {
        "ari": full,
        "low": math.nan,
        "high": math.nan,
        "draws": 0,
        "examples": 0,
        "basins": int(result.fit.n_basins),
        "split": b.split,
        "groups": {str(g): int(n) for g, n in groups.value_counts(sort=False).items()},
    }
    try:
        ex, pairs = example_losses(store, result, b.split)
    except DataError:
        return out  # the paths were stored without per-example losses: no bootstrap
    aris = group_recovery(
        ex,
        pairs,
        labels,
        alphas=result.grid["alphas"],
        metric=b.distance,
        n_basins=result.fit.n_basins,
        delta=b.delta,
        samples=section.bootstrap,
        seed=section.seed,
        cluster_seed=b.seed,
        centroids=b.centroids,
    )
    low, high = np.quantile(aris, [0.025, 0.975])
    out.update(low=float(low), high=float(high), draws=len(aris), examples=int(ex.shape[2]),
               mean=float(aris.mean()))  # fmt: skip
    return out
