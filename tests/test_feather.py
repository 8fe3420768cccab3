"""The BERTs-of-a-feather table: loader, summary, its two figures and the example."""

from __future__ import annotations

import csv
import doctest
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats
from tolerances import RTOL

import modeconn.data.feather
from modeconn import figures
from modeconn.data import feather
from modeconn.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
SUBCASES = 30  # 5 subcases × 3 heuristics × (entailed, non-entailed)


@pytest.fixture(scope="module")
def csv_path(data_root: Path) -> Path:
    return data_root / "mnli" / "feather_berts_accuracies.csv"


@pytest.fixture(scope="module")
def frame(csv_path: Path) -> pd.DataFrame:
    return feather.load_feather_accuracies(csv_path)


@pytest.fixture(scope="module")
def raw_rows(csv_path: Path) -> list[list[str]]:
    """The file as the csv module reads it: an independent view of the same cells."""
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def edited(csv_path: Path, tmp_path: Path, edit) -> Path:
    """A copy of the real file with its lines passed through ``edit(lines) -> lines``."""
    lines = csv_path.read_text(encoding="utf-8-sig").splitlines()
    out = tmp_path / "feather.csv"
    out.write_text("\ufeff" + "\r\n".join(edit(lines)) + "\r\n", encoding="utf-8")
    return out


def test_doctests():
    assert doctest.testmod(modeconn.data.feather).failed == 0
    for fn in (figures.metric_histogram, figures.correlation_matrix):
        finder = doctest.DocTestFinder()
        runner = doctest.DocTestRunner()
        for test in finder.find(fn, globs={"pd": pd, **vars(figures)}):
            runner.run(test)
        assert runner.failures == 0 and runner.tries > 0


# --------------------------------------------------------------------------- loader


def test_loader_gives_exactly_runs_0_to_99(frame: pd.DataFrame, raw_rows: list[list[str]]):
    assert frame.shape == (100, 7 + 1 + SUBCASES)
    assert frame.index.name == "run"
    assert frame.index.tolist() == list(range(100))
    assert frame.index.dtype == np.int64
    assert (frame.dtypes == np.float64).all()
    assert not frame.isna().any().any()
    assert list(frame.columns[:8]) == [*feather.FIGURE_COLUMNS, "overall_accuracy"]
    assert "ln_subject_object_swap" in frame.columns and "sn_np_s" in frame.columns
    # The file has 100 run rows, then blank and summary rows, all dropped.
    assert len(raw_rows) > 101
    trailing = [r[0] for r in raw_rows[101:]]
    assert {"Minimum", "Maximum", "Mean", "Standard deviation", ""} >= set(trailing)
    # Spot checks against the cells as the csv module reads them.
    header = raw_rows[0]
    for row in (raw_rows[1], raw_rows[42], raw_rows[100]):
        run = int(row[0].removeprefix("Run "))
        for raw_name, value in zip(header[1:], row[1:], strict=True):
            assert frame.loc[run, feather.clean_name(raw_name)] == float(value)


def test_summary_matches_the_files_own_summary_rows(frame, raw_rows):
    header = [feather.clean_name(c) for c in raw_rows[0][1:]]
    own = {r[0]: [float(v) for v in r[1:]] for r in raw_rows[101:] if r[0]}
    s = feather.summary(frame)
    for label, col, tol in (
        ("Minimum", "min", 0.0),
        ("Maximum", "max", 0.0),
        ("Mean", "mean", 1e-8),  # the file rounds to 9 decimals
        ("Standard deviation", "sd", 1e-8),  # ddof = 1 in the file too
    ):
        np.testing.assert_allclose(s.loc[header, col], own[label], rtol=0, atol=tol, err_msg=label)


def test_summary_matches_numpy_and_scipy():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.exponential(size=40), "b": rng.normal(size=40)})
    df.loc[3, "b"] = np.nan  # skipped, column by column
    s = feather.summary(df)
    assert list(s.columns) == ["n", "mean", "sd", "min", "max", "median", "skewness"]
    assert s.index.name == "column"
    for name in df.columns:
        v = df[name].dropna().to_numpy()
        assert s.loc[name, "n"] == v.size
        assert s.loc[name, "mean"] == pytest.approx(np.mean(v), rel=RTOL)
        assert s.loc[name, "sd"] == pytest.approx(np.std(v, ddof=1), rel=RTOL)
        assert s.loc[name, "median"] == pytest.approx(np.median(v), rel=RTOL)
        assert s.loc[name, "skewness"] == pytest.approx(stats.skew(v, bias=False), rel=1e-6)
        assert (s.loc[name, "min"], s.loc[name, "max"]) == (v.min(), v.max())
    with pytest.raises(DataError, match=r"numeric columns; \['c'\]"):
        feather.summary(df.assign(c="x"))
    with pytest.raises(DataError, match="DataFrame"):
        feather.summary([1, 2, 3])  # type: ignore[arg-type]


def test_clean_name():
    assert feather.clean_name(" MNLI dev acc. ") == "mnli_dev_acc"
    assert feather.clean_name("ln_subject/object_swap") == "ln_subject_object_swap"
    assert feather.clean_name("Constituent (nonent)") == "constituent_nonent"


def _replace_cell(lines, run, column_index, value):
    out = []
    for line in lines:
        cells = line.split(",")
        if cells[0] == f"Run {run}":
            cells[column_index] = value
        out.append(",".join(cells))
    return out


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda ls: [ls[0].replace("Lexical (nonent)", "Lexical (non-ent)"), *ls[1:]],
            r"feather\.csv has no column 'Lexical \(nonent\)'",
        ),
        (
            lambda ls: _replace_cell(ls, 17, 5, "abc"),
            r"feather\.csv, column 'Lexical \(nonent\)', run 17 \(line 19\) reads 'abc', not a",
        ),
        (
            lambda ls: _replace_cell(ls, 3, 1, ""),
            r"column 'MNLI dev acc\.', run 3 \(line 5\) is empty",
        ),
        (
            lambda ls: _replace_cell(ls, 5, 1, "84.5"),
            r"run 5 \(line 7\): 84\.5 is not an accuracy in \[0, 1\]",
        ),
        (lambda ls: [*ls[:11], ",,,", *ls[11:]], r"line 12 is blank but run rows follow it"),
        (lambda ls: [*ls[:11], "Mean,0.5", *ls[11:]], r"line 12 has Run 'Mean'"),
        (lambda ls: [ls[0], ls[1], *ls[1:]], r"run 0 appears twice \(lines 2 and 3\)"),
        (lambda ls: [ls[0], *ls[1:43], *ls[44:]], r"holds 99 runs .* missing runs \[42\]"),
        (
            lambda ls: [*ls[:2], ls[2].replace("Run 1,", "Run 100,"), *ls[3:]],
            r"unexpected runs \[100\]",
        ),
        (lambda ls: [ls[0], *ls[101:]], r"has no run rows"),
        (
            lambda ls: [ls[0].replace("Overall accuracy", "Subseq (nonent)"), *ls[1:]],
            r"column 'Subseq \(nonent\)' appears twice in the header",
        ),
        (
            lambda ls: [ls[0].replace("Overall accuracy", "subseq (NONENT)"), *ls[1:]],
            r"column 'subseq \(NONENT\)' cleans to 'subseq_nonent', as does column 'Subseq",
        ),
    ],
    ids=[
        "missing-column",
        "not-a-number",
        "empty-cell",
        "percentage",
        "blank-among-runs",
        "summary-among-runs",
        "duplicate-run",
        "missing-run",
        "extra-run",
        "no-runs",
        "duplicate-name",
        "clashing-names",
    ],
)
def test_malformed_file_is_a_named_data_error(csv_path, tmp_path, edit, match):
    bad = edited(csv_path, tmp_path, edit)
    with pytest.raises(DataError, match=match):
        feather.load_feather_accuracies(bad)


def test_partial_table_with_n_runs_none(csv_path, tmp_path):
    part = edited(csv_path, tmp_path, lambda ls: [ls[0], *ls[1:43], *ls[44:]])  # no run 42
    got = feather.load_feather_accuracies(part, n_runs=None)
    assert len(got) == 99 and 42 not in got.index


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        feather.load_feather_accuracies(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv is not a readable CSV"):
        feather.load_feather_accuracies(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("Run,MNLI dev acc.\nRun 0,0.8\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv is not UTF-8"):
        feather.load_feather_accuracies(latin)


# --------------------------------------------------------------------------- figures


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_correlation_matrix_equals_pandas_and_scipy(frame, method):
    sub = frame[list(feather.FIGURE_COLUMNS)]
    fig = figures.correlation_matrix(sub, method=method)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    drawn = np.asarray(ax.images[0].get_array())  # (7, 7)
    np.testing.assert_allclose(drawn, sub.corr(method=method).to_numpy(), rtol=RTOL, atol=1e-12)
    ref = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}
    cols = list(sub.columns)
    for i, a in enumerate(cols):
        for j, b in enumerate(cols):
            want = 1.0 if i == j else ref[method](sub[a], sub[b]).statistic
            assert drawn[i, j] == pytest.approx(want, rel=1e-9, abs=1e-12)
    # Diverging map centred at 0: symmetric limits; one annotation per cell, as printed.
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    assert ax.images[0].get_cmap().name.startswith(figures.DIVERGING_CMAP)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 49
    assert texts[cols.index(feather.HANS_LO)] == f"{drawn[0, cols.index(feather.HANS_LO)]:.2f}"
    assert [t.get_text() for t in ax.get_xticklabels()] == cols


def test_correlation_matrix_undefined_cells_and_errors():
    f = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.5, 0.5, 0.5], "c": [4, 1, 3, 2]})
    ax = figures.correlation_matrix(f).axes[0]
    assert np.ma.is_masked(ax.images[0].get_array()[0, 1])
    assert ax.texts[1].get_text() == "n/a"
    assert ax.texts[2].get_text() == "−0.40"  # typographic minus; r(a, c) = −0.4
    with pytest.raises(ConfigError, match="method must be one of"):
        figures.correlation_matrix(f, method="cosine")
    with pytest.raises(DataError, match="at least two columns"):
        figures.correlation_matrix(f[["a"]])
    with pytest.raises(DataError, match=r"numeric; \['d'\]"):
        figures.correlation_matrix(f.assign(d="x"))
    with pytest.raises(DataError, match="at least 3 rows"):
        figures.correlation_matrix(f.iloc[:2])


def test_metric_histogram_counts(frame):
    values = frame[feather.HANS_LO]
    fig = figures.metric_histogram(values, xlabel="HANS-LO non-ent.")
    ax = fig.axes[0]
    counts, edges = np.histogram(values.to_numpy(), bins=20)
    bars = list(ax.containers[0])
    assert [b.get_height() for b in bars] == counts.tolist()
    np.testing.assert_allclose([b.get_x() for b in bars], edges[:-1], rtol=RTOL)
    np.testing.assert_allclose([b.get_x() + b.get_width() for b in bars], edges[1:], rtol=RTOL)
    assert sum(b.get_height() for b in bars) == 100
    lines = {line.get_gid(): line.get_xdata()[0] for line in ax.lines}
    assert lines["median"] == pytest.approx(values.median(), rel=RTOL)
    assert lines["mean"] == pytest.approx(values.mean(), rel=RTOL)
    assert ax.get_xlabel() == "HANS-LO non-ent."


def test_metric_histogram_edges_nan_and_axes():
    # Edges [0, .5, 1]: 0.1, 0.2 in the first bin; 0.5 and 1.0 in the last (closed) one.
    fig = figures.metric_histogram([0.1, np.nan, 0.2, 0.5, 1.0], xlabel="x", bins=[0, 0.5, 1])
    assert [b.get_height() for b in fig.axes[0].containers[0]] == [2, 2]
    host = Figure()
    ax = host.add_subplot()
    assert figures.metric_histogram([1, 2, 3], xlabel="x", ax=ax) is host
    with pytest.raises(DataError, match="no value to histogram"):
        figures.metric_histogram([np.nan], xlabel="x")
    with pytest.raises(DataError, match="positive number of bins"):
        figures.metric_histogram([1, 2], xlabel="x", bins=0)
    with pytest.raises(DataError, match="increasing"):
        figures.metric_histogram([1, 2], xlabel="x", bins=[1, 1])
    with pytest.raises(DataError, match="1-D"):
        figures.metric_histogram([[1, 2]], xlabel="x")


# --------------------------------------------------------------------------- example


def test_example_prints_the_numbers_and_writes_two_pngs(tmp_path, csv_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "feather_example", REPO / "examples" / "feather_berts.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--out", str(tmp_path), "--data", str(csv_path), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "100 runs (0–99)" in out
    assert "HANS-LO non-ent.     8 of 100" in out
    assert "MNLI dev vs HANS-LO non-ent.   r = +0.487" in out
    assert "HANS-LO non-ent. vs HANS-SUB non-ent.  r = +0.781" in out
    for name in ("hans_lo_nonent_histogram.png", "correlation_matrix.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
