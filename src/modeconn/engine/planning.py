"""Plan a study before running it: how many evaluations, forward passes and hours it costs.

A sweep over N members (see :mod:`modeconn.engine.sweep`) evaluates

* every member once on every evaluated split — the endpoints α = 0 and α = 1 of all its
  paths: ``N × S_eval`` *member evaluations*;
* the interior α of every pair's path on every path split: ``N(N−1)/2 × S_path`` *path
  units*, each with ``points − 2`` *interior evaluations*.

An evaluation is one forward pass over its split's fixed sample, so the work in examples
is each evaluation times its split's sample size (``sample_size``, capped by the rows the
split has; ``sample_size: null`` means all of them). The projected wall time divides the
examples by a measured throughput per worker and by the number of workers, assuming
perfect scaling and no load time (weights, data, tokenization, start-up).

The paper's MNLI study (Juneja et al. 2023): 100 members, paths on 512-example samples of
MNLI and of HANS lexical-overlap non-entailed, α = 0, 0.1, …, 1::

    pairs          100 × 99 / 2             =      4,950
    path units     4,950 × 2 splits         =      9,900
    endpoints      100 × 2 splits           =        200
    interior       9,900 × 9 interior α     =     89,100
    examples       (200 + 89,100) × 512     = 45,721,600
    at 70 ex/s     45,721,600 / 70 / 3600   =      181.4 worker-hours

>>> est = SweepEstimate(members=100, points=11, path_splits=("mnli", "hans_lo"),
...     eval_splits=("mnli", "hans_lo"), sample_sizes={"mnli": 512, "hans_lo": 512},
...     throughput=70.0)
>>> est.pairs, est.path_units, est.member_evaluations, est.interior_evaluations
(4950, 9900, 200, 89100)
>>> est.examples, round(est.worker_seconds / 3600, 1)
(45721600, 181.4)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from modeconn.errors import ConfigError
from modeconn.stats.landmarks import choose_landmarks, landmark_pairs

if TYPE_CHECKING:
    from modeconn.config.basins import BasinsConfig
    from modeconn.config.study import Study

__all__ = ["SweepEstimate", "count_members", "landmark_plan", "plan_study", "split_rows"]


def landmark_plan(n: int, basins: BasinsConfig) -> list[tuple[int, int]] | None:
    """The pairs a sweep measures under ``basins.landmarks`` (None: every pair).

    Landmarks are indices into the members sorted by id (the sweep's order), drawn by
    :func:`modeconn.stats.landmarks.choose_landmarks` with ``basins.landmark_seed``; the
    analysis (:func:`modeconn.results.analyze`) draws the same ones. m ≥ N − 1 measures
    every pair. ``landmark_choice: kmeans++`` or ``farthest`` gives None: its landmarks
    are chosen as their paths are measured (:meth:`modeconn.pipeline.StudyRunner.sweep`).
    """
    m = basins.landmarks
    if m is None or m >= n - 1 or basins.landmark_choice != "random":
        return None  # every pair, or landmarks chosen as the sweep goes
    return landmark_pairs(n, choose_landmarks(n, m, seed=basins.landmark_seed))


ASSUMPTION = (
    "assumes perfect scaling across workers and no load time "
    "(weights, data, tokenization, start-up)"
)


@dataclass(frozen=True)
class SweepEstimate:
    """The size of a study's sweep, counted from its shape alone (nothing is evaluated).

    ``eval_splits`` lists every split evaluated per member (path splits first);
    ``sample_sizes`` the declared sample size of each (``None``: the whole split);
    ``row_counts`` the rows each split has after its filters (``None`` or absent: not
    read). ``throughput`` is examples per second of one worker (``None``: no projection).
    """

    members: int
    points: int
    path_splits: tuple[str, ...]
    eval_splits: tuple[str, ...]
    sample_sizes: Mapping[str, int | None] = field(default_factory=dict, hash=False)
    row_counts: Mapping[str, int | None] = field(default_factory=dict, hash=False)
    throughput: float | None = None
    workers: int = 1
    study: str | None = None
    members_from: str | None = None
    landmarks: int | None = None
    tolerance: float | None = None
    sequential_block: int | None = None  # paths.sequential: examples per block
    sequential_min_blocks: int | None = None

    def __post_init__(self) -> None:
        for name in ("path_splits", "eval_splits"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("sample_sizes", "row_counts"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        source = f" (from {self.members_from})" if self.members_from else ""
        if isinstance(self.members, bool) or not isinstance(self.members, int):
            raise ConfigError(f"members must be an integer; got {self.members!r}{source}")
        if self.members < 2:
            raise ConfigError(
                f"a sweep needs at least 2 members (a path has two ends); got "
                f"{self.members}{source}; add members or pass --members N"
            )
        if self.points < 3:
            raise ConfigError(f"paths.points must be at least 3; got {self.points}")
        if not self.path_splits:
            raise ConfigError("paths.splits is empty; name at least one split to sweep paths on")
        missing = [s for s in self.path_splits if s not in self.eval_splits]
        if missing:
            raise ConfigError(
                f"path split {missing[0]!r} is not among the evaluated splits "
                f"{list(self.eval_splits)}; every path split is evaluated per member too"
            )
        unsized = [s for s in self.eval_splits if s not in self.sample_sizes]
        if unsized:
            raise ConfigError(
                f"split {unsized[0]!r} has no entry in sample_sizes; give its sample_size "
                "(None for the whole split)"
            )
        for name, sizes in (("sample_size", self.sample_sizes), ("row count", self.row_counts)):
            for split, n in sizes.items():
                if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
                    raise ConfigError(
                        f"split {split!r}: {name} must be a non-negative integer or None; got {n!r}"
                    )
        if self.throughput is not None and not (
            math.isfinite(self.throughput) and self.throughput > 0
        ):
            raise ConfigError(
                f"--throughput must be a positive number of examples per second; "
                f"got {self.throughput!r}"
            )
        if self.landmarks is not None and (
            isinstance(self.landmarks, bool)
            or not isinstance(self.landmarks, int)
            or self.landmarks < 1
        ):
            raise ConfigError(f"basins.landmarks must be an integer ≥ 1; got {self.landmarks!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"--workers must be a whole number ≥ 1; got {self.workers!r}")

    # ---- counts -------------------------------------------------------------------

    @property
    def all_pairs(self) -> int:
        return self.members * (self.members - 1) // 2

    @property
    def pairs(self) -> int:
        """Pairs whose paths are measured: all, or those touching a landmark."""
        m = self.landmarks
        if m is None or m >= self.members - 1:
            return self.all_pairs
        return m * (self.members - m) + m * (m - 1) // 2

    @property
    def path_units(self) -> int:
        """One unit per pair × path split."""
        return self.pairs * len(self.path_splits)

    @property
    def interior_points(self) -> int:
        """α values strictly inside (0, 1): the endpoints come from the member points."""
        return self.points - 2

    @property
    def member_evaluations(self) -> int:
        return self.members * len(self.eval_splits)

    @property
    def interior_evaluations(self) -> int:
        return self.path_units * self.interior_points

    @property
    def evaluations(self) -> int:
        return self.member_evaluations + self.interior_evaluations

    def split_evaluations(self, split: str) -> tuple[int, int]:
        """(member evaluations, interior path evaluations) on one split."""
        self._known(split)
        interior = self.pairs * self.interior_points if split in self.path_splits else 0
        return self.members, interior

    def examples_per_evaluation(self, split: str) -> int | None:
        """The split's sample: min(sample_size, rows); None when neither is known."""
        self._known(split)
        size, rows = self.sample_sizes[split], self.row_counts.get(split)
        if size is None:
            return rows
        return size if rows is None else min(size, rows)

    def split_examples(self, split: str) -> int | None:
        """Examples forwarded on one split over the whole sweep (None: sample size unknown)."""
        n = self.examples_per_evaluation(split)
        return None if n is None else n * sum(self.split_evaluations(split))

    @property
    def unknown_splits(self) -> tuple[str, ...]:
        """Splits whose sample size is unknown (``sample_size: null`` and the file unread)."""
        return tuple(s for s in self.eval_splits if self.examples_per_evaluation(s) is None)

    @property
    def examples(self) -> int | None:
        """Examples forwarded by the whole sweep; None if any split's size is unknown."""
        per_split = [self.split_examples(s) for s in self.eval_splits]
        return None if None in per_split else sum(n for n in per_split if n is not None)

    @property
    def worker_seconds(self) -> float | None:
        """Seconds of one worker at ``throughput`` (GPU-seconds when a worker is a GPU)."""
        if self.examples is None or self.throughput is None:
            return None
        return self.examples / self.throughput

    @property
    def wall_seconds(self) -> float | None:
        """Wall time on ``workers`` workers, under perfect scaling and no load time."""
        seconds = self.worker_seconds
        return None if seconds is None else seconds / self.workers

    def _known(self, split: str) -> None:
        if split not in self.eval_splits:
            raise ConfigError(
                f"split {split!r} is not evaluated in this sweep; known: {list(self.eval_splits)}"
            )

    # ---- records ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The inputs, then every derived count (JSON-ready); ``from_dict`` reads the inputs."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["path_splits"], out["eval_splits"] = list(self.path_splits), list(self.eval_splits)
        out["sample_sizes"], out["row_counts"] = dict(self.sample_sizes), dict(self.row_counts)
        out.update(
            all_pairs=self.all_pairs,
            pairs=self.pairs,
            path_units=self.path_units,
            interior_points=self.interior_points,
            member_evaluations=self.member_evaluations,
            interior_evaluations=self.interior_evaluations,
            evaluations=self.evaluations,
            per_split={
                s: {
                    "member_evaluations": self.split_evaluations(s)[0],
                    "interior_evaluations": self.split_evaluations(s)[1],
                    "examples_per_evaluation": self.examples_per_evaluation(s),
                    "examples": self.split_examples(s),
                }
                for s in self.eval_splits
            },
            examples=self.examples,
            worker_seconds=self.worker_seconds,
            wall_seconds=self.wall_seconds,
            assumption=ASSUMPTION,
        )
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepEstimate:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        """The plan as lines of text, every count with the arithmetic that gives it."""
        n, interior = self.members, self.interior_points
        s_path, s_eval = len(self.path_splits), len(self.eval_splits)
        source = f" (from {self.members_from})" if self.members_from else ""
        lines = [f"plan of study {self.study}"] if self.study else []
        lines += [
            f"members: {n:,}{source}",
            *self._pair_lines(),
            f"splits on paths: {s_path} ({', '.join(self.path_splits)}); "
            f"evaluated per member: {s_eval} ({', '.join(self.eval_splits)})",
            f"path units: {self.path_units:,} = {self.pairs:,} pairs × {s_path} path splits",
            f"member (endpoint) evaluations: {self.member_evaluations:,} = {n:,} members × "
            f"{s_eval} splits ({n:,} per split)",
            f"interior path evaluations: {self.interior_evaluations:,} = "
            f"{self.path_units:,} units × {interior} interior α "
            f"({self.pairs:,} × {interior} = {self.pairs * interior:,} per path split)",
            f"evaluations in all: {self.evaluations:,}",
        ]
        total = self.examples
        lines.append(
            f"forward passes: {total:,} examples"
            if total is not None
            else "forward passes: unknown (the sample size of "
            f"{', '.join(self.unknown_splits)} is unknown: sample_size is null and its data "
            "file was not read)"
        )
        width = max(len(s) for s in self.eval_splits)
        for s in self.eval_splits:
            members, paths = self.split_evaluations(s)
            per, rows = self.examples_per_evaluation(s), self.row_counts.get(s)
            size = "unknown" if per is None else f"{per:,}"
            of = "rows not read" if rows is None else f"of {rows:,} rows"
            evals = f"{members:,} endpoint + {paths:,} interior" if paths else f"{members:,} member"
            made = self.split_examples(s)
            line = f"  {s:<{width}}  {size} per evaluation ({of}) × ({evals} evaluations)"
            lines.append(line + (f" = {made:,}" if made is not None else ""))
        if self.tolerance is not None:
            lines.append(
                f"paths.tolerance {self.tolerance:g}: adaptive α grids evaluate a subset of "
                f"the {interior} interior α of each path (at least the coarse ones), so the "
                "interior counts above and the projection are upper bounds"
            )
        if self.sequential_block is not None:
            first = self.sequential_block * (self.sequential_min_blocks or 1)
            lines.append(
                f"paths.sequential: each path is evaluated on blocks of "
                f"{self.sequential_block} examples and stops once its convexity gap (or, with "
                f"`affinity`, its basin affinity) is known (never before {first:,} "
                "examples), so the interior counts above "
                "and the projection are upper bounds"
            )
        lines.append(self._projection())
        saving = self._saving()
        if saving is not None:
            lines.append(saving)
        return "\n".join(lines)

    def _pair_lines(self) -> list[str]:
        n = self.members
        every = f"{self.all_pairs:,} = {n:,} × {n - 1:,} / 2"
        if self.pairs == self.all_pairs:
            return [f"pairs: {every}"]
        m = self.landmarks
        assert m is not None
        return [
            f"pairs: {self.pairs:,} = {m} landmarks × {n - m:,} others + {m} × {m - 1} / 2 "
            f"among landmarks (basins.landmarks), of all {every}: "
            f"{100 * self.pairs / self.all_pairs:.1f} % of the paths"
        ]

    def all_pairs_estimate(self) -> SweepEstimate:
        """The same sweep over every pair (what landmarks save against)."""
        return replace(self, landmarks=None)

    def _saving(self) -> str | None:
        if self.pairs == self.all_pairs:
            return None
        full = self.all_pairs_estimate()
        line = (
            f"saved by landmarks: {full.evaluations - self.evaluations:,} of "
            f"{full.evaluations:,} evaluations "
            f"({100 * (1 - self.evaluations / full.evaluations):.1f} %)"
        )
        if self.wall_seconds is not None and full.wall_seconds is not None:
            line += (
                f"; {_duration(self.wall_seconds)} instead of {_duration(full.wall_seconds)} "
                f"(saves {_duration(full.wall_seconds - self.wall_seconds)})"
            )
        return line

    def _projection(self) -> str:
        if self.throughput is None:
            return "projection: give --throughput EX_PER_S (examples/s of one worker) for one"
        wall, worker = self.wall_seconds, self.worker_seconds
        if wall is None or worker is None:
            return "projection: unknown, since the number of examples is unknown"
        workers = f"{self.workers} worker" + ("s" if self.workers > 1 else "")
        return (
            f"projection: {_duration(wall)} on {workers} at {self.throughput:g} examples/s "
            f"each ({worker / 3600:,.1f} worker-hours); {ASSUMPTION}"
        )


def _duration(seconds: float) -> str:
    text = f"{seconds:,.0f} s"
    if seconds >= 3600:
        text += f" = {seconds / 3600:,.1f} h"
    elif seconds >= 60:
        text += f" = {seconds / 60:,.1f} min"
    if seconds >= 2 * 86400:
        text += f" = {seconds / 86400:,.1f} days"
    return text


# --------------------------------------------------------------------------- from a study


def count_members(study: Study) -> tuple[int, str]:
    """How many members a study sweeps, and where that number comes from.

    A `train` section decides (its members are what a run sweeps); else the
    `population.members` list; else the weight files in `population.dir`, which must exist.
    """
    if study.train is not None:
        arms = study.train.arms
        return sum(a.members for a in arms), "train arms: " + " + ".join(
            f"{a.name} {a.members}" for a in arms
        )
    assert study.population is not None, "the study validates that one of them is given"
    listed = study.member_paths()
    if listed is not None:
        return len(listed), "population.members"
    folder = study.members_dir()
    if not folder.is_dir():
        raise ConfigError(
            f"population.dir {folder} does not exist, so its members cannot be counted; "
            "pass --members N to plan a study whose members are elsewhere"
        )
    from modeconn.population.members import Population

    return len(Population.from_dir(folder)), f"population.dir {folder}"


def split_rows(study: Study, names: Sequence[str]) -> dict[str, int | None]:
    """Rows of each split after its `where` and `rows`, read from its file; None if absent.

    Digits splits are counted from the installed wheel. A missing data root or data file
    gives None (the plan says "rows not read"); a file
    that is there but wrong (a missing column, nothing left after the filters) raises, as
    the run would.
    """
    from modeconn.data.text import read_examples

    try:
        study.data_path()
        have_root = True
    except ConfigError:
        have_root = False
    out: dict[str, int | None] = {}
    for name in names:
        kind = study.split_entry(name).kind
        if kind == "digits":  # no data root: the digits ship inside an installed wheel
            out[name] = _digits_rows(study.split_entry(name))
            continue
        if kind != "text" or not have_root:
            out[name] = None  # other kinds are not counted from a file here
            continue
        spec = study.split_spec(name)
        out[name] = len(read_examples(spec)) if spec.path.is_file() else None
    return out


def _digits_rows(entry: Any) -> int:
    """Images in a digits split's part (the MNIST digits ship inside an installed wheel)."""
    from modeconn.data.digits import load_mnist_5k
    from modeconn.data.partition import partition

    labels = load_mnist_5k()[1]
    train, test = partition(labels, test_per_class=entry.test_per_class, seed=entry.partition_seed)
    return len(train if entry.part == "train" else test)


def plan_study(
    study: Study,
    *,
    members: int | None = None,
    throughput: float | None = None,
    workers: int = 1,
) -> SweepEstimate:
    """The :class:`SweepEstimate` of a study; `members` overrides the counted population."""
    if members is not None:
        n, source = members, "--members"
    else:
        n, source = count_members(study)
    names = study.eval_splits()
    seq = study.paths.sequential
    return SweepEstimate(
        members=n,
        points=study.paths.points,
        path_splits=tuple(study.paths.splits),
        eval_splits=tuple(names),
        sample_sizes={s: study.split_entry(s).sample_size for s in names},
        row_counts=split_rows(study, names),
        throughput=throughput,
        workers=workers,
        study=study.name,
        members_from=source,
        landmarks=study.basins.landmarks,
        tolerance=study.paths.tolerance,
        sequential_block=None if seq is None else seq.block,
        sequential_min_blocks=None if seq is None else seq.min_blocks,
    )
