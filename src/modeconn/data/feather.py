"""The 100 "BERTs of a feather": per-run MNLI and HANS accuracies of McCoy et al. 2020.

McCoy, Min & Linzen (2020, "BERTs of a feather do not generalize together") fine-tuned
BERT-base on MNLI 100 times (runs 0–99, seed = run number) and found the runs alike in
distribution (MNLI dev accuracy 83.6–84.8 %) but wildly different on HANS (McCoy et al.
2019), the diagnostic set built from three syntactic heuristics — lexical overlap (LO),
subsequence and constituent — each with entailed and non-entailed examples. A model that
*uses* a heuristic gets the entailed half right and the non-entailed half wrong, so
non-entailed accuracy measures how far a run escapes the heuristic.

Juneja et al. 2023 ("Linear Connectivity Reveals Generalization Strategies") cluster these
same 100 models by the barriers between them and find that the clusters line up with
HANS-LO non-entailed accuracy. This module reads the released per-run table
(``mnli/feather_berts_accuracies.csv`` of the shared data) so the population's spread and
the correlations between its metrics can be checked without any model:

- :func:`load_feather_accuracies` → one row per run (index ``run``), one float column per
  metric, with clean snake_case names (:func:`clean_name`): ``mnli_dev_acc``,
  ``lexical_entailed`` … ``constituent_nonent``, ``overall_accuracy`` and the 30 subcases
  (``ln_subject_object_swap``, …; ``ln``/``le`` = lexical-overlap non-entailed/entailed,
  ``sn``/``se`` subsequence, ``cn``/``ce`` constituent).
- :func:`summary` → mean, sd, min, max, median and skewness of each column.

The figures are :func:`modeconn.figures.metric_histogram` and
:func:`modeconn.figures.correlation_matrix`; ``examples/feather_berts.py`` draws both.

Pure pandas/numpy: no torch, no plotting.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from modeconn.errors import DataError

__all__ = [
    "FIGURE_COLUMNS",
    "HANS_CON",
    "HANS_LO",
    "HANS_SUB",
    "LABELS",
    "MNLI",
    "N_RUNS",
    "REQUIRED_COLUMNS",
    "SUBSETS",
    "clean_name",
    "load_feather_accuracies",
    "summary",
]

N_RUNS = 100  # runs 0–99 in McCoy et al.'s release

# Columns the loader insists on, as the file spells them; every other column is kept too.
REQUIRED_COLUMNS = (
    "Run",
    "MNLI dev acc.",
    "Lexical (entailed)",
    "Subseq (entailed)",
    "Constituent (entailed)",
    "Lexical (nonent)",
    "Subseq (nonent)",
    "Constituent (nonent)",
)

MNLI = "mnli_dev_acc"
HANS_LO = "lexical_nonent"  # the paper's OOD axis: HANS lexical overlap, non-entailed
HANS_SUB = "subseq_nonent"
HANS_CON = "constituent_nonent"
# The six HANS subsets: heuristic × (entailed, non-entailed).
SUBSETS = (
    "lexical_entailed",
    "subseq_entailed",
    "constituent_entailed",
    HANS_LO,
    HANS_SUB,
    HANS_CON,
)
# MNLI dev accuracy and the six subsets: the variables of the correlation matrix.
FIGURE_COLUMNS = (MNLI, *SUBSETS)
# Short display names for figures and printed tables.
LABELS = {
    MNLI: "MNLI dev",
    "lexical_entailed": "HANS-LO ent.",
    "subseq_entailed": "HANS-SUB ent.",
    "constituent_entailed": "HANS-CON ent.",
    HANS_LO: "HANS-LO non-ent.",
    HANS_SUB: "HANS-SUB non-ent.",
    HANS_CON: "HANS-CON non-ent.",
    "overall_accuracy": "HANS overall",
}

_RUN = re.compile(r"Run\s+(\d+)")


def clean_name(raw: str) -> str:
    """A column name as a snake_case identifier: lower case, runs of other characters → ``_``.

    >>> clean_name("MNLI dev acc."), clean_name("Lexical (nonent)"), clean_name("sn_NP/S")
    ('mnli_dev_acc', 'lexical_nonent', 'sn_np_s')
    """
    return re.sub(r"[^0-9a-z]+", "_", raw.strip().lower()).strip("_")


def _read(path: Path) -> pd.DataFrame:
    """Every cell as stripped text, under the header's names as written (not de-duplicated).

    Blank lines are kept as rows, so that row i is line i + 2 of the file.
    """
    try:
        cells = pd.read_csv(
            path,
            encoding="utf-8-sig",
            header=None,  # pandas would rename a repeated header name to "name.1"
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
        )
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such file. The per-run table is mnli/feather_berts_accuracies.csv "
            "of the shared data folder (../shared/data, or MODECONN_DATA)."
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8 CSV") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path} is not a readable CSV table: {exc}") from None
    header = [str(c).strip() for c in cells.iloc[0]]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: column {repeated[0]!r} appears twice in the header")
    body = cells.iloc[1:].map(str.strip).reset_index(drop=True)
    return body.set_axis(header, axis=1)


def _run_rows(raw: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[int]]:
    """The rows up to the last "Run <n>" row, and their run numbers.

    Everything after the last run row (blank rows, the release's summary rows) is dropped;
    a row before it that is not a run row is an error.
    """
    cells = raw["Run"].tolist()
    matches = [_RUN.fullmatch(c) for c in cells]
    runs = [int(m.group(1)) for m in matches if m is not None]
    if not runs:
        first = f" (the first reads {cells[0]!r})" if cells else ""
        raise DataError(
            f"{path} has no run rows: no value of column 'Run' reads 'Run <number>'{first}"
        )
    last = max(i for i, m in enumerate(matches) if m is not None)
    for i in range(last):
        if matches[i] is None:
            what = "is blank" if not cells[i] else f"has Run {cells[i]!r}"
            raise DataError(
                f"{path}, line {i + 2} {what} but run rows follow it (the last on line "
                f"{last + 2}); every row before the summary must read 'Run <number>'"
            )
    return raw.iloc[: last + 1], runs


def _check_runs(runs: list[int], path: Path, n_runs: int | None) -> None:
    seen: dict[int, int] = {}
    for i, r in enumerate(runs):
        if r in seen:
            raise DataError(
                f"{path}: run {r} appears twice (lines {seen[r] + 2} and {i + 2}); keep one row "
                "per run"
            )
        seen[r] = i
    if n_runs is None:
        return
    missing = sorted(set(range(n_runs)) - set(runs))
    extra = sorted(set(runs) - set(range(n_runs)))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing runs {missing[:10]}{' …' if len(missing) > 10 else ''}")
        if extra:
            parts.append(f"unexpected runs {extra[:10]}{' …' if len(extra) > 10 else ''}")
        raise DataError(
            f"{path} holds {len(runs)} runs but must hold runs 0–{n_runs - 1}: "
            f"{'; '.join(parts)}. Pass n_runs=None to read a partial table."
        )


def load_feather_accuracies(
    path: str | os.PathLike[str], *, n_runs: int | None = N_RUNS
) -> pd.DataFrame:
    """Read McCoy et al.'s per-run accuracy table into one clean numeric row per run.

    The file (UTF-8 with a byte-order mark) has a header, one row per run with ``Run``
    reading ``Run 0`` … ``Run 99``, then blank rows and the release's own Minimum, Maximum,
    Mean and Standard deviation rows. Everything after the last run row is dropped.

    Args:
        path: the CSV file, e.g. ``../shared/data/mnli/feather_berts_accuracies.csv``.
        n_runs: the file must hold exactly runs 0 … ``n_runs − 1``; ``None`` accepts any
            set of distinct run numbers (for slices of the table).

    Returns:
        A DataFrame indexed by ``run`` (int, ascending), one float64 column per metric of
        the file, named by :func:`clean_name` (``mnli_dev_acc``, ``lexical_nonent``, …),
        every value an accuracy in [0, 1].

    Raises:
        DataError: naming the file and the column, line or run at fault when the file is
            missing, is not CSV, lacks a column of :data:`REQUIRED_COLUMNS`, has a
            non-run row among the runs, repeats or misses a run, or has a value that is
            not a number in [0, 1].
    """
    path = Path(path)
    raw = _read(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        shown = list(raw.columns[:10]) + (["…"] if len(raw.columns) > 10 else [])
        raise DataError(
            f"{path} has no column {', '.join(repr(c) for c in missing)}; its columns are "
            f"{shown}. Is this McCoy et al.'s feather_berts_accuracies.csv?"
        )
    names = {c: clean_name(c) for c in raw.columns if c != "Run"}
    seen: dict[str, str] = {}
    for raw_name, name in names.items():
        if not name or name in seen:
            raise DataError(
                f"{path}: column {raw_name!r} cleans to {name!r}"
                + (f", as does column {seen[name]!r}" if name in seen else "")
                + "; give every column a distinct name"
            )
        seen[name] = raw_name

    rows, runs = _run_rows(raw, path)
    _check_runs(runs, path, n_runs)

    out: dict[str, np.ndarray] = {}
    for raw_name, name in names.items():
        text = rows[raw_name]
        values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)  # (n_runs,)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            cell = text.iloc[i]
            what = "is empty" if not cell else f"reads {cell!r}, not a number"
            raise DataError(f"{path}, column {raw_name!r}, run {runs[i]} (line {i + 2}) {what}")
        off = np.flatnonzero((values < 0.0) | (values > 1.0))
        if off.size:
            i = int(off[0])
            raise DataError(
                f"{path}, column {raw_name!r}, run {runs[i]} (line {i + 2}): {values[i]} is not "
                "an accuracy in [0, 1] (a percentage? divide the column by 100)"
            )
        out[name] = values
    frame = pd.DataFrame(out, index=pd.Index(runs, name="run", dtype=np.int64))
    return frame.sort_index()


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Distribution of each column: n, mean, sd, min, max, median and skewness.

    ``sd`` is the sample standard deviation (ddof = 1), as the release's own "Standard
    deviation" row; ``skewness`` is the bias-corrected sample skewness G₁ (pandas
    ``skew``, = ``scipy.stats.skew(bias=False)``): 0 for a symmetric spread, positive for
    a tail to high values. NaN values are skipped, column by column.

    Returns:
        One row per column of ``frame`` (index ``column``).

    >>> summary(pd.DataFrame({"acc": [0.1, 0.2, 0.6]})).round(3)  # doctest: +NORMALIZE_WHITESPACE
            n  mean     sd  min  max  median  skewness
    column
    acc     3   0.3  0.265  0.1  0.6     0.2     1.458
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"summary needs a pandas DataFrame of numbers; got {type(frame)}")
    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(
            f"summary needs numeric columns; {bad} are not (dtype "
            f"{frame[bad[0]].dtype}). Load the table with load_feather_accuracies."
        )
    table = pd.DataFrame(
        {
            "n": frame.count(),
            "mean": frame.mean(),
            "sd": frame.std(ddof=1),
            "min": frame.min(),
            "max": frame.max(),
            "median": frame.median(),
            "skewness": frame.skew(),
        }
    )
    table.index.name = "column"
    return table
