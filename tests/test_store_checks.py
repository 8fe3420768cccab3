"""The store under damage and restriction: checksums, schema 2 → 3, read-only disks.

Also: an OOD metric equal across members is an undefined correlation with a note, not an
abort; and modeconn's exceptions are caught by ``except ValueError`` / ``except OSError``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_study_dict

import modeconn.errors as errors
from modeconn.analyses.run import analyze_study
from modeconn.cli import main
from modeconn.config.study import load_study, parse_study
from modeconn.results import analyze
from modeconn.store import SCHEMA_VERSION, MemberPoint, PathPoint, Store, UnitKey

# --------------------------------------------------------------------------- a small store


def _unit(a: int, b: int, bump: float) -> tuple[UnitKey, list[PathPoint]]:
    ends = dict(member_a=f"m{a}", member_b=f"m{b}", hash_a=f"h{a}", hash_b=f"h{b}")
    key = UnitKey(**ends, path="linear", grid="linear:3", split="mnli#k", sample_seed=0,
                  sample_size=4)  # fmt: skip
    return key, [
        PathPoint(
            **key.to_dict(),
            alpha=x,
            loss=0.5 + bump * (x == 0.5),  # a barrier of `bump` in the middle
            metrics={"accuracy": 0.75},
            example_losses=np.full(4, 0.5 + bump * (x == 0.5), np.float32),
            n_examples=4,
        )
        for x in (0.0, 0.5, 1.0)
    ]


def _member(i: int, split: str, accuracy: float) -> MemberPoint:
    return MemberPoint(
        member_id=f"m{i}", member_hash=f"h{i}", split=split, sample_seed=0, sample_size=4,
        loss=0.5, metrics={"accuracy": accuracy}, example_losses=np.full(4, 0.5, np.float32),
        n_examples=4,
    )  # fmt: skip


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Three members, their points on one split, and the three units between them."""
    path = tmp_path / "results.sqlite"
    with Store(path, study="s") as s:
        s.write_member_points([_member(i, "mnli#k", 0.5 + i / 10) for i in range(3)])
        for a, b in ((0, 1), (0, 2), (1, 2)):
            s.write_unit(*_unit(a, b, 0.1 * (a + b)))
    return path


# --------------------------------------------------------------------------- checksums


def test_every_row_carries_a_checksum_of_its_values(small: Path) -> None:
    conn = sqlite3.connect(small)
    for table in ("member_points", "path_points"):
        missing = conn.execute(f"SELECT count(*) FROM {table} WHERE checksum IS NULL")
        assert missing.fetchone()[0] == 0
    conn.close()
    with Store(small) as s:
        assert s.integrity_check() == "ok"


@pytest.mark.parametrize(
    ("table", "change", "named"),
    [
        ("path_points", "loss = 0.123 WHERE alpha = 0.5 AND hash_a = 'h1'", "hash_a='h1'"),
        ("path_points", "example_losses = zeroblob(16) WHERE alpha = 1.0 AND hash_a = 'h0' "
         "AND hash_b = 'h2'", "alpha=1.0"),
        ("member_points", "metrics = '{\"accuracy\": 0.99}' WHERE member_hash = 'h0'",
         "member_hash='h0'"),
        ("member_points", "sample_size = 5 WHERE member_hash = 'h2'", "sample_size=5"),
    ],
)  # fmt: skip
def test_a_value_changed_on_disk_is_found_and_named(
    small: Path, table: str, change: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(small)
    conn.execute(f"UPDATE {table} SET {change}")
    conn.commit()
    conn.close()
    with Store(small) as s:
        report = s.integrity_check()
    assert report.startswith(f"1 {table} rows do not match their checksum")
    assert named in report and "\n" not in report
    assert main(["status", str(small)]) == 0  # status reports; it does not refuse
    assert f"integrity: 1 {table} rows do not match their checksum" in capsys.readouterr().out


def _as_version_2(path: Path) -> None:
    conn = sqlite3.connect(path)
    for table in ("member_points", "path_points"):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN checksum")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_a_version_2_store_gains_checksums_in_place(small: Path) -> None:
    with Store(small) as s:
        before = (s.member_points(), s.path_points(with_examples=True))
    _as_version_2(small)
    with Store(small, readonly=True) as s:  # read-only: read as it is, not upgraded
        assert "carry no checksums" in s.integrity_check()
        assert len(s.path_points()) == 9
    with Store(small) as s:
        assert s.integrity_check() == "ok"
        after = (s.member_points(), s.path_points(with_examples=True))
    assert before[0].equals(after[0])
    assert before[1].drop(columns="example_losses").equals(after[1].drop(columns="example_losses"))
    conn = sqlite3.connect(small)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()


# --------------------------------------------------------------------------- read-only


def test_a_read_only_store_reads_and_refuses_writes(small: Path) -> None:
    with Store(small, readonly=True, study="s") as s:
        assert s.readonly and s.counts()["units"] == 3
        assert s.integrity_check() == "ok"
        with pytest.raises(errors.StoreError, match="open read-only"):
            s.set_meta("plan", "{}")
        with pytest.raises(errors.StoreError, match="belongs to study 's', not 't'"):
            Store(small, readonly=True, study="t")
    with pytest.raises(errors.StoreError, match="does not exist"):
        Store(small.parent / "none.sqlite", readonly=True)


@pytest.fixture(scope="module")
def swept(tiny_model_dir: Path, data_root: Path) -> Iterator[Path]:
    """A tiny study swept and reported (three members), in a folder others may read."""
    from modeconn.models.hf import load_classifier

    root = Path(tempfile.mkdtemp(prefix="modeconn-ro-"))
    try:
        model = load_classifier(tiny_model_dir, ["entailment", "neutral", "contradiction"])
        (root / "members").mkdir()
        for i in range(3):
            state = {k: v + 0.02 * i if v.is_floating_point() else v
                     for k, v in model.state_dict().items()}  # fmt: skip
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()},
                      str(root / "members" / f"m{i}.safetensors"))  # fmt: skip
        study = tiny_study_dict(tiny_model_dir, data_root, root / "out")
        del study["train"]
        study["population"] = {"dir": str(root / "members")}
        (root / "study.yaml").write_text(yaml.safe_dump(study))
        assert main(["run", str(root / "study.yaml"), "--quiet"]) == 0
        yield root / "out"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _read_only_commands(store_dir: Path, elsewhere: Path) -> list[list[str]]:
    return [
        ["status", str(store_dir)],
        ["export", str(store_dir), "--out", str(elsewhere / "csv")],
        ["report", str(store_dir), "--out", str(elsewhere / "report")],
    ]


def _in_a_child(run: Callable[[], int], *, uid: int | None) -> tuple[int, str]:
    """Run in a forked child (as `uid` if given); its result and what it printed."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read_fd)
            sys.stdout = sys.stderr = open(write_fd, "w")  # noqa: SIM115 - closed by _exit
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            code = run()
        except BaseException as e:  # report anything, then leave without pytest's cleanup
            print(f"child failed: {type(e).__name__}: {e}", flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as out:
        text = out.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_status_report_export_work_on_a_store_in_an_unwritable_folder(
    swept: Path, tmp_path: Path
) -> None:
    # warm every import on a writable copy: the child may not read root's files
    warm = tmp_path / "warm"
    shutil.copytree(swept, warm / "out")
    for argv in _read_only_commands(warm / "out", warm):
        assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in swept.iterdir() if p.is_file()}
    elsewhere = Path(tempfile.mkdtemp(prefix="modeconn-out-"))
    try:
        os.chmod(elsewhere, 0o777)
        is_root = os.geteuid() == 0
        for path in (swept.parent, swept):  # readable by all, writable by the owner only …
            os.chmod(path, 0o755)
        if not is_root:  # … and not even by the owner, who then runs the commands itself
            os.chmod(swept, 0o555)
        for argv in _read_only_commands(swept, elsewhere):
            code, printed = _in_a_child(lambda a=argv: main(a), uid=65534 if is_root else None)
            assert code == 0, (argv, printed)
            if argv[0] == "status":
                assert "opened: read-only" in printed and "integrity: ok" in printed
                assert "path units 3/3" in printed
        assert (elsewhere / "csv" / "path_points.csv").is_file()
        assert (elsewhere / "report" / "report.html").is_file()
        # the report's default folder is beside the store, which cannot be written: one line
        code, printed = _in_a_child(
            lambda: main(["report", str(swept)]), uid=65534 if is_root else None
        )
        assert code == 2, printed
        line = [ln for ln in printed.splitlines() if ln.startswith("modeconn: error:")]
        assert len(line) == 1 and "Traceback" not in printed, printed
        assert f"{swept}/report" in line[0] and "(EACCES)" in line[0]
    finally:
        os.chmod(swept, 0o755)
        shutil.rmtree(elsewhere, ignore_errors=True)
    assert {p.name: p.read_bytes() for p in swept.iterdir() if p.is_file()} == before


# --------------------------------------------------------------------------- constant OOD metric


@pytest.mark.parametrize("distances", [False, True], ids=["basins", "with-distances"])
def test_an_ood_metric_equal_across_members_is_an_undefined_correlation(
    tiny_study: Path, tmp_path: Path, distances: bool
) -> None:
    """Six members in two clear basins; every one gets 0.5 on hans_lo.

    With ``analyses.distances`` enabled, its table's r on hans_lo is undefined too (NaN)
    and the report is still written."""
    study = load_study(tiny_study)
    if distances:
        data = yaml.safe_load(tiny_study.read_text())
        data["analyses"] = {"distances": ["barrier_height", "auc"]}
        study = parse_study(data, base_dir=tiny_study.parent)
    keys = {"mnli": "mnli#k", "hans_lo": "hans_lo#k", "hans_sub": "hans_sub#k"}
    path = tmp_path / "results.sqlite"
    n, basin = 6, [0, 0, 0, 1, 1, 1]
    with Store(path, study=study.name) as s:
        s.set_meta("study", study.model_dump_json(exclude={"base_dir"}))
        s.set_meta("members", json.dumps([{"id": f"m{i}", "hash": f"h{i}", "arm": None,
                                           "head_seed": i, "data_seed": i, "step": None}
                                          for i in range(n)]))  # fmt: skip
        s.set_meta("splits", json.dumps({name: {"key": key, "sample_seed": 0, "sample_size": 4,
                                                "metric": "accuracy", "role": None}
                                         for name, key in keys.items()}))  # fmt: skip
        s.set_meta("grid", json.dumps({"grid": "linear:3", "alphas": [0.0, 0.5, 1.0]}))
        for name, key in keys.items():
            acc = {"mnli": 0.8, "hans_lo": 0.5, "hans_sub": 0.3}[name]
            vary = name != "hans_lo"  # hans_lo: the same for every member
            s.write_member_points(
                [_member(i, key, acc + vary * (0.01 * i + 0.1 * basin[i])) for i in range(n)]
            )
        for key in (keys["mnli"], keys["hans_lo"]):
            for a in range(n):
                for b in range(a + 1, n):
                    unit_key, points = _unit(a, b, 0.0 if basin[a] == basin[b] else 1.0)
                    fields = dict(unit_key.to_dict(), split=key)
                    s.write_unit(
                        UnitKey(**fields),
                        [
                            PathPoint(**dict(p.to_dict(), split=key, grid="linear:3"))
                            for p in points
                        ],
                    )
        result = analyze_study(s, study) if distances else analyze(s)
        from modeconn.report.study import write_study_report

        report = write_study_report(s, result, tmp_path / "report")
    rows = result.correlations.set_index("split")
    assert np.isnan(rows.loc["hans_lo", "pearson_r"]) and np.isnan(
        rows.loc["hans_lo", "pearson_lo"]
    )
    assert np.isfinite(rows.loc["hans_sub", "pearson_r"])
    notes = [n for n in result.notes if "'hans_lo'" in n]
    assert len(notes) == 1 and "same accuracy on 'hans_lo' (0.5)" in notes[0]
    assert "undefined" in notes[0]
    assert result.fit.n_basins == 2 and report.is_file()
    assert "hans_lo" in result.summary()
    if distances:
        table = result.analyses["distances"].distances.set_index("distance")
        assert list(table.index) == ["convexity_gap", "barrier_height", "auc"]
        assert table["r (hans_lo)"].isna().all() and table["r lo (hans_lo)"].isna().all()
        assert np.isfinite(table["r (hans_sub)"]).all()
        assert "Alternative distances" in report.read_text()


# --------------------------------------------------------------------------- exceptions


def test_modeconn_errors_are_the_builtins_users_catch(tmp_path: Path) -> None:
    for cls in (errors.ConfigError, errors.DataError, errors.PopulationError,
                errors.UnsafeCheckpointError):  # fmt: skip
        assert issubclass(cls, errors.ModeconnError) and issubclass(cls, ValueError)
    assert issubclass(errors.StoreError, errors.ModeconnError)
    assert issubclass(errors.StoreError, OSError)
    with pytest.raises(ValueError, match="a study must be a mapping"):
        parse_study([])
    text = tmp_path / "notes.txt"
    text.write_text("not a store\n" * 20)
    with pytest.raises(OSError, match="not an SQLite database"):
        Store(text)
    err = errors.StoreError("store x is locked")
    assert str(err) == "store x is locked" and err.errno is None


@pytest.mark.parametrize(
    "module",
    ["modeconn.store", "modeconn.store.schema", "modeconn.config.yamlfile", "modeconn.errors",
     "modeconn.stats.inference", "modeconn.population.weights"],
)  # fmt: skip
def test_doctests(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
