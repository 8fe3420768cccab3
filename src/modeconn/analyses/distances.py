"""Alternative distances (Juneja et al. 2023, Appendix I and Fig. 21).

Barrier height, AUC and the Euclidean distance ‖θA − θB‖ beside the study's own
distance (the convexity gap by default), each clustered the same way, in one table
with each clustering's agreement (ARI) with the study's basins and with the training
arms, and each score's correlation with the OOD metrics; the Euclidean-vs-CG pairs split
into within- and between-basin pairs with a fit each (their Fig. 21).
``analyses.distance_splits`` adds the study's own distance on other path splits (e.g.
the held-out loss beside a training-loss study, their Appendix G).

AUC comes in two forms. ``auc`` integrates over α (x = α ∈ [0, 1]), modeconn's default,
which compares curves whatever their length; ``auc_distance`` is the paper's form (their
§3 and code): the trapezoid step is ‖θA − θB‖ / (n − 1), i.e. x runs over parameter
distance, so each pair's α-unit AUC is multiplied by its Euclidean distance (AUC is
linear in the x scale, :func:`modeconn.measures.barriers.auc`). The report's table names
the form of each row.

Barrier height and AUC come from the stored curves; the Euclidean distance needs the
weights, so :meth:`Distances.measure` computes it over every floating-point state entry
the engine interpolates (float64 accumulation) and keeps one record per pair, keyed by
the two weight hashes (sorted).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, RootModel

from modeconn.analyses.base import MeasureContext, value_key
from modeconn.errors import DataError, ModeconnError
from modeconn.results import StudyResult, distance_matrix
from modeconn.stats.basins import BasinFit, basin_recovery, correlate, find_basins
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import BasinsConfig, Study
    from modeconn.report.html import Section

DistanceName = Literal["convexity_gap", "barrier_height", "auc", "auc_distance", "euclidean"]

# What each distance is, as the report's table names it.
DISTANCE_FORMS = {
    "convexity_gap": "largest gap between the loss curve and its lower convex hull",
    "barrier_height": "largest rise above the chord between the endpoints (Entezari)",
    "auc": "area above the curve's minimum, x = α (step 1/(n − 1))",
    "auc_distance": "area above the curve's minimum, x in parameter distance "
    "(step ‖θA − θB‖/(n − 1), the paper's form)",
    "euclidean": "‖θA − θB‖ over every floating-point state entry",
}


class DistancesSection(RootModel[list[DistanceName]]):
    """``analyses.distances``: the distances compared side by side."""

    model_config = ConfigDict(frozen=True)


class DistanceSplitsSection(RootModel[list[str]]):
    """``analyses.distance_splits``: other path splits to cluster on with basins.distance."""

    model_config = ConfigDict(frozen=True)

    def check(self, study: Study) -> None:
        for s in self.root:
            if s not in study.paths.splits:
                raise ValueError(
                    f"analyses.distance_splits names '{s}', which is not one of paths.splits "
                    f"{study.paths.splits}: a distance needs the split's path curves"
                )


def euclidean_key(hash_a: str, hash_b: str) -> str:
    return value_key(*sorted((hash_a, hash_b)))


@dataclass(frozen=True)
class DistanceTables:
    distances: pd.DataFrame  # one row per distance: range, basins, ARI, r per OOD split
    matrices: dict[str, pd.DataFrame]  # distance name → N×N matrix
    fits: dict[str, BasinFit]  # distance name → basins found with it


def euclidean_matrix(store: Store, result: StudyResult) -> pd.DataFrame:
    """Pairwise ‖θA − θB‖ from the store's records (written by :meth:`Distances.measure`)."""
    ids = list(result.members.index)
    hashes = result.members["hash"].to_dict()
    found = store.values("euclidean")
    d = np.zeros((len(ids), len(ids)))
    for i, a in enumerate(ids):
        for j in range(i + 1, len(ids)):
            rec = found.get(euclidean_key(hashes[a], hashes[ids[j]]))
            if rec is None:
                raise DataError(
                    f"no Euclidean distance {a}–{ids[j]} in {store.path}: run the study with "
                    "`analyses.distances` listing euclidean (`modeconn run` computes it)"
                )
            d[i, j] = d[j, i] = float(rec["distance"])
    return pd.DataFrame(d, index=ids, columns=ids)


def _fit(d: np.ndarray, b: BasinsConfig) -> BasinFit:
    return find_basins(d, **b.fit_options())


def compare_distances(
    store: Store, result: StudyResult, names: list[str], splits: list[str] | None = None
) -> DistanceTables:
    """Cluster with each distance; one row per distance (their Appendix I).

    ``splits`` adds the study's own distance on other path splits, named
    ``"<distance> on <split>"``.
    """
    b = result.study.basins
    ood = result.ood_columns()
    rows, matrices, fits = [], {}, {}
    extra = [f"{b.distance} on {s}" for s in splits or [] if s != b.split]
    for name in dict.fromkeys([b.distance, *names, *extra]):
        if " on " in name:
            metric, split = name.split(" on ", 1)
            m = distance_matrix(store, split=split, metric=metric)
        elif name == "euclidean":
            m = euclidean_matrix(store, result)
        elif name == "auc_distance":
            # AUC is linear in its x scale: the α-unit area times ‖θA − θB‖ is the area
            # with step ‖θA − θB‖/(n − 1)
            m = distance_matrix(store, split=b.split, metric="auc") * euclidean_matrix(
                store, result
            )
        elif name == b.distance:
            m = result.distance
        else:
            m = distance_matrix(store, split=b.split, metric=name)
        d = m.to_numpy()
        off = d[~np.eye(len(d), dtype=bool)]
        row: dict[str, Any] = {
            "distance": name,
            "form": DISTANCE_FORMS.get(name.split(" on ", 1)[0], ""),
            "min": off.min(),
            "max": off.max(),
        }
        try:
            fit = result.fit if name == b.distance else _fit(d, b)
        except ModeconnError as e:
            row["basins"] = f"none ({e})"
            rows.append(row)
            matrices[name] = m
            continue
        matrices[name], fits[name] = m, fit
        row["basins"] = ", ".join(map(str, fit.sizes))
        row[f"ARI vs {b.distance}"] = basin_recovery(fit.labels, result.fit.labels)
        arms = result.members["arm"]
        if arms.notna().all() and arms.nunique() > 1:
            row["ARI vs arms"] = basin_recovery(fit.labels, arms.astype(str).to_numpy())
        for split, col in ood.items():
            # an OOD metric equal across members: r undefined (NaN), as in the main table,
            # whose note names the split; never a stopped run
            c = correlate(
                fit.scores,
                result.members[col].to_numpy(float),
                n_boot=b.bootstrap,
                seed=b.seed,
                constant="undefined",
            )
            row[f"r ({split})"] = c.pearson_r
            row[f"r lo ({split})"], row[f"r hi ({split})"] = c.pearson_ci
        rows.append(row)
    return DistanceTables(pd.DataFrame(rows), matrices, fits)


class Distances:
    key = "distances"
    section = DistancesSection
    more_sections: ClassVar[dict[str, Any]] = {"distance_splits": DistanceSplitsSection}
    cites = "Juneja et al. 2023, Appendix I (table) and Fig. 21"
    summary = (
        "barrier height, AUC, Euclidean distance (and basins.distance on other splits) "
        "clustered beside the study's distance: basins, ARI, r with OOD"
    )
    needs_weights = True  # the Euclidean distance; the others read the curves

    def measure(self, ctx: MeasureContext) -> None:
        """‖θA − θB‖ of every pair not yet in the store, if ``euclidean`` or
        ``auc_distance`` (whose step is ‖θA − θB‖/(n − 1)) is listed."""
        if not {"euclidean", "auc_distance"} & set(ctx.study.section(self.key).root):
            return
        import torch

        refs, store = list(ctx.members), ctx.store
        done = store.values("euclidean")
        todo = [
            (a, b)
            for i, a in enumerate(refs)
            for b in refs[i + 1 :]
            if euclidean_key(a.hash, b.hash) not in done
        ]
        if not todo:
            return
        ctx.say(f"euclidean distances: {len(todo)} pairs")
        keys = ctx.evaluator.keys
        cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # flat float32 members, LRU

        def vector(mid: str) -> torch.Tensor:
            if mid in cache:
                cache.move_to_end(mid)
                return cache[mid]
            state = ctx.population.load(mid)
            cache[mid] = torch.cat([state[k].detach().reshape(-1).float() for k in keys])
            budget = max(2, (2 << 30) // (cache[mid].numel() * 4))
            while len(cache) > budget:
                cache.popitem(last=False)
            return cache[mid]

        for a, b in todo:  # pairs ordered by A: A stays cached while its row is done
            diff = vector(a.id).double() - vector(b.id).double()  # float64 accumulation
            store.put_value(
                "euclidean",
                euclidean_key(a.hash, b.hash),
                {"distance": float(torch.linalg.vector_norm(diff)), "a": a.id, "b": b.id},
            )

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> DistanceTables:
        names = list(result.study.section(self.key).root)
        splits = list(result.study.section("distance_splits").root)
        return compare_distances(store, result, names, splits)

    def sections(self, result: StudyResult, value: DistanceTables) -> list[Section]:
        import modeconn.figures as figures
        from modeconn.report.common import heatmap_order, provenance
        from modeconn.report.html import Section

        b = result.study.basins
        order, order_name = heatmap_order(result)
        figs: list[tuple[str, Any]] = []
        for name, m in value.matrices.items():
            if name == b.distance:
                continue
            figs.append(
                (
                    f"{name.replace('_', ' ')} for every pair"
                    + (f", members sorted by {order_name}." if order_name else "."),
                    figures.distance_heatmap(
                        m,
                        order_by=order,
                        label=name.replace("_", " "),
                        mask_diagonal=name == "euclidean",
                    ),
                )
            )
        if "euclidean" in value.matrices:
            figs.append(
                (
                    f"Euclidean distance vs. {b.distance.replace('_', ' ')} per pair, within "
                    "and between basins, each with a least-squares fit (the paper's Fig. 21).",
                    figures.distance_scatter(
                        value.matrices["euclidean"],
                        value.matrices[b.distance],
                        basins=result.members["basin"],
                        ylabel=b.distance.replace("_", " "),
                    ),
                )
            )
        return [
            Section(
                title="Alternative distances",
                text=(
                    "Each distance clustered the same way (spectral clustering of "
                    "exp(−D²/2δ²)); ARI against the basins of the study's own distance, and "
                    "each score's Pearson r with the OOD metrics (bootstrap 95% intervals). "
                    "Barrier height and AUC come from the same stored curves; 'auc' integrates "
                    "over α, 'auc_distance' over parameter distance (step ‖θA − θB‖/(n − 1), "
                    "the paper's form); the Euclidean distance is over every floating-point "
                    "state entry; the table's 'form' column names each. "
                    "A score's sign follows which basin is the larger (c₁), so compare |r|; "
                    "ARI vs arms: agreement of each distance's basins with the training arms."
                ),
                figures=tuple(figs),
                tables=(("Distances side by side (the paper's Appendix I).", value.distances),),
                provenance=provenance(result, b.split),
            )
        ]

    def summary_lines(self, value: DistanceTables) -> list[str]:
        lines = []
        t = value.distances
        for _, r in t.iterrows():
            rs = [c for c in t.columns if c.startswith("r (")]
            first = f", r {rs[0][2:]} = {r[rs[0]]:+.3f}" if rs and pd.notna(r[rs[0]]) else ""
            lines.append(f"distance {r['distance']}: basins {r['basins']}{first}")
        return lines

    def summary_json(self, value: DistanceTables) -> dict[str, Any]:
        """One record per distance (the Appendix I table), and each one's basin per member."""
        from modeconn.analyses.base import records

        return {
            "distances": records(value.distances),
            "basins": {
                name: dict(zip(value.matrices[name].index, fit.labels.tolist(), strict=True))
                for name, fit in value.fits.items()
            },
        }
