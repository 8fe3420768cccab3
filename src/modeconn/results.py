"""From a results store to basins: the N×N distance matrix, clusters, scores, correlations.

Everything here reads the store (and the study and member table it records), never
models, so `modeconn report STORE` rebuilds the analysis on any machine. The analyses
beyond the basins are composed on top of this by :func:`modeconn.analyses.run.analyze_study`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from modeconn.errors import ConfigError, DataError, StoreError
from modeconn.measures.barriers import curve_distance
from modeconn.stats.basins import (
    BasinFit,
    affinity,
    basin_recovery,
    basin_table,
    find_basins,
)
from modeconn.stats.inference import correlate
from modeconn.stats.landmarks import (
    SEQUENTIAL,
    Choice,
    choose_landmarks,
    landmark_basins,
    sequential_landmarks,
)
from modeconn.store import ALPHA_DECIMALS, Store
from modeconn.store.frames import labels

if TYPE_CHECKING:
    from modeconn.config.study import Study


class AnalysisValues(Protocol):
    """What :func:`modeconn.analyses.run.analyze_study` attaches to a result."""

    notes: tuple[str, ...]

    def summary_lines(self) -> list[str]: ...


@dataclass(frozen=True)
class StudyResult:
    """What a study found, with what produced it (members, splits, sample seeds, grid)."""

    study: Study
    members: pd.DataFrame  # one row per member: id, hash, arm, seeds, per-split loss/metrics
    distance: pd.DataFrame  # N×N, indexed by member id
    fit: BasinFit
    basins: pd.DataFrame  # per basin: size and mean/std of ID and OOD metrics
    correlations: pd.DataFrame  # per OOD split: Pearson/Spearman with bootstrap CIs
    recovery: float | None  # adjusted Rand index of basins vs. training arms
    arms: pd.DataFrame | None  # members per arm (rows) and basin (columns)
    notes: tuple[str, ...]  # warnings about how far the result can be trusted
    splits: dict[str, dict[str, Any]]
    grid: dict[str, Any]
    report: Path | None = None
    analyses: Any = None  # AnalysisValues: what each enabled analysis read (analyses.run)
    # basins.landmarks: the landmark member ids; `distance` is NaN on the pairs not measured
    landmarks: tuple[str, ...] | None = None
    # paths.sequential: examples each path of the basins' split saw (None: all of them)
    examples_seen: pd.Series | None = None

    @property
    def measured(self) -> pd.DataFrame:
        """N×N bool, indexed by member id: True where the pair's path was measured."""
        return self.distance.notna()

    def with_report(self, path: Path) -> StudyResult:
        return dataclasses.replace(self, report=path)

    @property
    def distance_range(self) -> tuple[float, float]:
        d = self.distance.to_numpy()
        off = d[~np.eye(len(d), dtype=bool)]
        return float(np.nanmin(off)), float(np.nanmax(off))

    def metric_column(self, split: str) -> str:
        """The member column of `split`'s metric: ``basins.metric``, else the split's own."""
        metric = self.study.basins.metric or self.splits[split]["metric"]
        return metric_column(self.members, split, metric)

    def ood_columns(self) -> dict[str, str]:
        """``{OOD split: member column}`` for every split of ``basins.ood``."""
        return {s: self.metric_column(s) for s in self.study.basins.ood}

    def _landmark_lines(self) -> list[str]:
        if self.landmarks is None:
            return []
        n = len(self.distance)
        done = (int(self.measured.to_numpy().sum()) - n) // 2
        b = self.study.basins
        how = {"nystrom": "Nyström", "triangle": "triangle bounds"}[b.landmark_completion]
        return [
            f"landmark basins: {len(self.landmarks)} landmarks ({b.landmark_choice}), {done:,} "
            f"of {n * (n - 1) // 2:,} pairs measured; the rest completed by {how} "
            "(stats.landmarks)"
        ]

    def _sequential_lines(self) -> list[str]:
        seen = self.examples_seen
        if seen is None or not len(seen):
            return []
        n = int(self.splits[self.study.basins.split]["sample_size"])
        early = float((seen < n).mean())
        return [
            f"sequential samples: paths on '{self.study.basins.split}' saw "
            f"{int(seen.min())}–{int(seen.max())} of {n} examples (median "
            f"{float(seen.median()):g}; {early:.0%} stopped early); each gap is on its "
            "path's examples (stats.sequential)"
        ]

    def summary(self) -> str:
        lo, hi = self.distance_range
        b = self.study.basins
        lines = [
            f"study {self.study.name}: {len(self.members)} members, "
            f"{b.distance} on '{b.split}' ranges {lo:.4f} – {hi:.4f}",
            *self._landmark_lines(),
            *self._sequential_lines(),
            f"basins found: {self.fit.n_basins} (sizes {', '.join(map(str, self.fit.sizes))}), "
            f"similarity scale δ = {self.fit.delta:.4g}",
            f"clustering seed {self.fit.seed}, {self.fit.centroids_from} centroids"
            + (" (basins.preset: paper)" if b.preset == "paper" else "")
            + f"; ties in the basin score: {self.fit.ties}",
        ]
        if self.recovery is not None and self.arms is not None:
            lines.append(f"basins vs. training arms: adjusted Rand index {self.recovery:.3f}")
            for arm, row in self.arms.iterrows():
                where = ", ".join(f"{int(n)} in basin {b}" for b, n in row.items() if n)
                lines.append(f"  arm {arm}: {where}")
        for _, row in self.correlations.iterrows():
            lines.append(
                f"score ↔ {row['split']} {row['metric']}: Pearson r = {row['pearson_r']:+.3f} "
                f"[{row['pearson_lo']:+.3f}, {row['pearson_hi']:+.3f}], Spearman ρ = "
                f"{row['spearman_rho']:+.3f} [{row['spearman_lo']:+.3f}, {row['spearman_hi']:+.3f}]"
            )
        if self.analyses is not None:
            lines += self.analyses.summary_lines()
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _meta_json(store: Store, key: str) -> Any:
    raw = store.get_meta(key)
    if raw is None:
        raise StoreError(
            f"store {store.path} has no '{key}' record: it was not written by `modeconn run` "
            "(or the sweep never started); run the study first"
        )
    return json.loads(raw)


def population(store: Store) -> list[dict[str, Any]]:
    """The current members (id, hash, metadata) as the last sweep recorded them.

    Rows are read by these hashes and labelled with these ids (:mod:`modeconn.store.frames`);
    two ids with the same weights raise ``PopulationError`` naming both.
    """
    members = store.population()
    if members is None:
        _meta_json(store, "members")  # raises, naming the missing record
    assert members is not None
    return members


def study_from_store(store: Store) -> Study:
    """The study a store records (written by the last ``modeconn run``), typed again."""
    from modeconn.config.study import parse_study  # the study format loads on use

    try:
        return parse_study(_meta_json(store, "study"), source=f"{store.path} (its 'study' record)")
    except ConfigError as err:
        raise StoreError(
            f"{err}; the store was written by another version of modeconn: rerun the study"
        ) from None


def member_table(store: Store) -> pd.DataFrame:
    """Members with their metadata and, per split, loss and metrics (columns split.name).

    ``init_seed`` is always a column: the seed a member's whole model was drawn from
    (``vary: init``), None where the member shares the study's initialisation or the store
    predates the field (a rerun of ``modeconn run`` records it from the sidecars).
    """
    members = pd.DataFrame(population(store)).set_index("id")
    if "init_seed" not in members.columns:
        cols = list(members.columns)
        at = cols.index("data_seed") + 1 if "data_seed" in cols else len(cols)
        members.insert(at, "init_seed", None)
    # Python ints and None (object), not floats with NaN: a seed reads as 3, not 3.0
    members["init_seed"] = pd.Series(
        [None if pd.isna(v) else int(v) for v in members["init_seed"]],
        index=members.index,
        dtype=object,
    )
    splits = _meta_json(store, "splits")
    points = store.member_points()
    for name, info in splits.items():
        sel = points[
            (points["split"] == info["key"])
            & (points["sample_seed"] == info["sample_seed"])
            & (points["sample_size"] == info["sample_size"])
        ].set_index("member_hash")
        cols = ["loss", *[c for c in ("accuracy", "f1", "mcc") if c in sel.columns]]
        for col in cols:
            members[f"{name}.{col}"] = members["hash"].map(sel[col]) if len(sel) else np.nan
    return members


class Curves(dict[tuple[str, str], pd.DataFrame]):
    """Pair of member ids → its curve (path points sorted by α).

    Iterating gives each pair once, in the orientation it was swept; looking up the other
    orientation — ``curves[(B, A)]``, ``curves.get((B, A))``, ``(B, A) in curves`` — gives
    the same curve read backwards (α → 1 − α: θ(α) of A→B is θ(1 − α) of B→A), so a pair
    whose orientation changed with a rename is found without recomputing it.
    """

    def __missing__(self, key: tuple[str, str]) -> pd.DataFrame:
        a, b = key
        if dict.__contains__(self, (b, a)):
            return _reversed(dict.__getitem__(self, (b, a)))
        raise KeyError(key)

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return dict.__contains__(self, key) or dict.__contains__(self, (key[1], key[0]))


def curves(store: Store, split: str, *, with_examples: bool = False) -> Curves:
    """Each pair's path points on `split`, sorted by α, keyed by the members' current ids.

    Rows are those of the current weights (a retrained or replaced member's old rows are
    left out), labelled with today's ids (:mod:`modeconn.store.frames`); either orientation
    of a pair can be looked up (:class:`Curves`). ``with_examples`` adds the per-example
    losses (column ``example_losses``).
    """
    splits = _meta_json(store, "splits")
    grid = _meta_json(store, "grid")["grid"]
    info = splits[split]
    pts = store.path_points(
        split=info["key"],
        grid=grid,
        sample_seed=info["sample_seed"],
        sample_size=info["sample_size"],
        with_examples=with_examples,
    )
    found = Curves(
        ((str(a), str(b)), g.sort_values("alpha"))
        for (a, b), g in pts.groupby(["member_a", "member_b"])
    )
    names = labels(store) or {}
    for g in list(found.values()):  # a checkpoint identical to a member answers to both names
        ha, hb = str(g["hash_a"].iloc[0]), str(g["hash_b"].iloc[0])
        for a in names.get(ha, []):
            for b in names.get(hb, []):
                if (a, b) not in found:
                    found[(a, b)] = g
    return found


def _reversed(curve: pd.DataFrame) -> pd.DataFrame:
    """The curve of (A, B) as the curve of (B, A): θ(α) of one is θ(1 − α) of the other."""
    out = curve.rename(
        columns={
            "member_a": "member_b",
            "member_b": "member_a",
            "hash_a": "hash_b",
            "hash_b": "hash_a",
        }
    )
    out["alpha"] = (1.0 - out["alpha"]).round(ALPHA_DECIMALS) + 0.0
    return out.sort_values("alpha")


def landmark_ids(ids: list[str], landmarks: int | None, seed: int) -> tuple[str, ...] | None:
    """The landmark members of `ids` the sweep measured (None: every pair was measured).

    The sweep draws indices into the ids sorted (:func:`modeconn.engine.planning.landmark_plan`).
    """
    order = sorted(ids)
    if landmarks is None or landmarks >= len(order) - 1:
        return None
    return tuple(order[i] for i in choose_landmarks(len(order), landmarks, seed=seed))


def sequential_ids(
    store: Store, split: str, metric: str, m: int, seed: int, choice: Choice = "kmeans++"
) -> tuple[str, ...]:
    """The landmarks ``basins.landmark_choice: kmeans++ | farthest`` drew, redrawn from
    the store.

    The sweep drew each next landmark from the measured rows of the landmarks so far
    (:func:`modeconn.stats.landmarks.sequential_landmarks`); the same draw on the same
    stored curves gives the same landmarks. A chosen landmark with a missing path means
    the sweep is incomplete.
    """
    partial = distance_matrix(store, split=split, metric=metric, missing_ok=True)
    order = sorted(partial.index)
    d = partial.loc[order, order].to_numpy()

    def row(i: int) -> np.ndarray:
        if not np.all(np.isfinite(d[i])):
            raise DataError(
                f"landmark {order[i]} lacks paths on split '{split}' in {store.path}: the "
                "sweep is incomplete; rerun `modeconn run` (it resumes)"
            )
        return d[i]

    marks = sequential_landmarks(len(order), m, seed=seed, row=row, method=choice)
    return tuple(order[i] for i in marks)


def distance_matrix(
    store: Store,
    *,
    split: str,
    metric: str,
    landmarks: tuple[str, ...] | None = None,
    missing_ok: bool = False,
) -> pd.DataFrame:
    """The N×N matrix of `metric` over every pair's curve on `split`, indexed by member id.

    With ``landmarks`` only the pairs touching a landmark must be present; every other
    entry is NaN (not measured). ``missing_ok`` gives NaN for any pair not in the store.
    """
    ids = [m["id"] for m in population(store)]
    index = {m: i for i, m in enumerate(ids)}
    d = np.zeros((len(ids), len(ids)))
    found = curves(store, split)
    marks = set(landmarks) if landmarks is not None else None
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            if marks is not None and a not in marks and b not in marks:
                d[index[a], index[b]] = d[index[b], index[a]] = np.nan
                continue
            g = found.get((a, b))
            if g is None and missing_ok:
                d[index[a], index[b]] = d[index[b], index[a]] = np.nan
                continue
            if g is None:
                raise DataError(
                    f"no path {a}–{b} on split '{split}' in {store.path}: the sweep is "
                    "incomplete; rerun `modeconn run` (it resumes)"
                )
            value = curve_distance(g["loss"].to_numpy(), g["alpha"].to_numpy(), metric)
            d[index[a], index[b]] = d[index[b], index[a]] = value
    return pd.DataFrame(d, index=ids, columns=ids)


def metric_column(members: pd.DataFrame, split: str, metric: str) -> str:
    """The member-table column holding `metric` on `split` (e.g. "hans_lo.accuracy")."""
    col = f"{split}.{metric}"
    if col not in members.columns:
        have = sorted(c.split(".", 1)[1] for c in members.columns if c.startswith(f"{split}."))
        raise DataError(
            f"metric '{metric}' was not computed on split '{split}' (it has: "
            f"{', '.join(have)}); set basins.metric to one of those or leave it unset"
        )
    return col


def analyze(store: Store, study: Study | None = None) -> StudyResult:
    """Distance matrix → basins → scores → correlations, from what the store holds.

    ``study`` is the study to read the basins' settings from (a runner passes its own);
    by default the one the store records. The analyses beyond the basins are not run
    here: :func:`modeconn.analyses.run.analyze_study` adds them.
    """
    study = study if study is not None else study_from_store(store)
    splits = _meta_json(store, "splits")
    grid = _meta_json(store, "grid")
    b = study.basins
    members = member_table(store)
    ids = [m["id"] for m in population(store)]
    marks: tuple[str, ...] | None
    if b.landmark_choice in SEQUENTIAL and b.landmarks is not None and b.landmarks < len(ids) - 1:
        marks = sequential_ids(
            store, b.split, b.distance, b.landmarks, b.landmark_seed, b.landmark_choice
        )
    else:
        marks = landmark_ids(ids, b.landmarks, b.landmark_seed)
    distance = distance_matrix(store, split=b.split, metric=b.distance, landmarks=marks)
    seen = None
    if study.paths.sequential is not None:
        seen = pd.Series(
            {k: int(g["n_examples"].min()) for k, g in curves(store, b.split).items()},
            dtype="int64",
        )
    d = distance.to_numpy()
    if marks is None:
        fit = find_basins(d, **b.fit_options())
    else:
        where = [int(distance.index.get_loc(m)) for m in marks]  # type: ignore[arg-type]
        fit = landmark_basins(d, where, completion=b.landmark_completion, **b.fit_options())
        d = np.where(np.isnan(d), np.nanmedian(d), d)  # for the notes' similarity spread
    members["basin"] = fit.labels
    members["score"] = fit.scores
    # each split is judged by its own metric (accuracy, F1 or MCC) unless the study names one
    cols = {
        s: metric_column(members, s, b.metric or splits[s]["metric"]) for s in [b.split, *b.ood]
    }
    table = basin_table(fit.labels, {c: members[c].to_numpy(dtype=float) for c in cols.values()})
    rows, undefined = [], []
    for s in b.ood:
        col = cols[s]
        y = members[col].to_numpy(dtype=float)
        c = correlate(fit.scores, y, n_boot=b.bootstrap, seed=b.seed, constant="undefined")
        if not c.defined:
            flat = (
                f"every member has the same {col.rsplit('.', 1)[1]} on '{s}' ({y[0]:.4g})"
                if np.all(y == y[0])
                else "every member has the same basin score"
            )
            undefined.append(
                f"{flat}: the correlation of the basin score with '{s}' is undefined (NaN); "
                "a larger or harder sample of that split can tell the members apart"
            )
        rows.append({"split": s, "metric": col.rsplit(".", 1)[1], **c.to_dict()})
    correlations = pd.DataFrame(rows)
    if len(correlations):
        correlations = _flatten_ci(correlations)
    arms = members["arm"]
    recovery = (
        basin_recovery(fit.labels, arms.astype(str).to_numpy())
        if arms.notna().all() and arms.nunique() > 1
        else None
    )
    crosstab = None
    if recovery is not None:
        crosstab = pd.crosstab(members["arm"], members["basin"]).rename_axis(
            index="arm", columns="basin"
        )
    return StudyResult(
        notes=_notes(fit, d, len(members)) + tuple(undefined),
        study=study,
        members=members,
        distance=distance,
        fit=fit,
        basins=table,
        correlations=correlations,
        recovery=recovery,
        arms=crosstab,
        splits=splits,
        grid=grid,
        landmarks=marks,
        examples_seen=seen,
    )


# Below this spread of the off-diagonal similarities the spectral clustering works near
# float precision (S ≈ 1 − D²/2δ² with D²/2δ² under 1e-6). A merely small spread is no
# sign of noise: the normalised Laplacian sees relative differences, and on every
# population measured (docs/method.md, "Similarity scale δ") δ = 1 gave the very basins
# of δ = median while every similarity was above 0.99. Whether the basins are noise is
# what the bootstrap over the sample measures (analyses.uncertainty, which says so).
_FLAT_SIMILARITY = 1e-6


def _notes(fit: BasinFit, distance: np.ndarray, n: int) -> tuple[str, ...]:
    notes = []
    s = affinity(distance, delta=fit.delta)
    off = s[~np.eye(n, dtype=bool)]
    if off.size and float(off.max() - off.min()) < _FLAT_SIMILARITY:
        notes.append(
            f"the similarity exp(−D²/2δ²) varies by less than {_FLAT_SIMILARITY:g} across "
            f"pairs at δ = {fit.delta:.4g}: the clustering works near float precision; try "
            "basins.delta: median"
        )
    if min(fit.sizes) < 2:
        notes.append("a basin holds a single member: its mean and spread say little")
    if n < 10:
        notes.append(f"only {n} members: correlations and their intervals are rough")
    return tuple(notes)


def _flatten_ci(frame: pd.DataFrame) -> pd.DataFrame:
    """Split (lo, hi) interval columns into two scalar columns each."""
    out = frame.copy()
    for col in list(out.columns):
        first = out[col].iloc[0]
        if isinstance(first, (list, tuple)) and len(first) == 2:
            stem = col.removesuffix("_ci")  # None (no usable resample) reads as NaN
            out[f"{stem}_lo"] = [np.nan if v[0] is None else v[0] for v in out[col]]
            out[f"{stem}_hi"] = [np.nan if v[1] is None else v[1] for v in out[col]]
            out = out.drop(columns=col)
    return out
