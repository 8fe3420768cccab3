"""Tests of the results store: round trips, idempotence, atomicity, foreign files, crashes."""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modeconn.store as store_module
from modeconn.errors import StoreError
from modeconn.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    MemberPoint,
    PathPoint,
    Store,
    UnitKey,
)

N_EXAMPLES = 8


def _counts(members: int, paths: int, units: int) -> dict[str, int]:
    return {"member_points": members, "path_points": paths, "units": units, "analysis_values": 0}


def member(i: int = 0, *, split: str = "mnli", loss: float = 0.5, **kw: object) -> MemberPoint:
    values: dict[str, object] = dict(
        member_id=f"seed{i}",
        member_hash=f"hash{i}",
        split=split,
        sample_seed=0,
        sample_size=N_EXAMPLES,
        loss=loss,
        metrics={"accuracy": 0.75, "f1": 0.5},
        example_losses=np.linspace(0, 1, N_EXAMPLES, dtype=np.float32),
        n_examples=N_EXAMPLES,
    )
    values.update(kw)
    return MemberPoint(**values)  # type: ignore[arg-type]


def unit_key(i: int = 0, *, split: str = "mnli", grid: str = "linear:5") -> UnitKey:
    return UnitKey(
        member_a=f"seed{i}",
        member_b="seed_ref",
        hash_a=f"hash{i}",
        hash_b="hash_ref",
        path="linear",
        grid=grid,
        split=split,
        sample_seed=0,
        sample_size=N_EXAMPLES,
    )


def unit(
    i: int = 0,
    *,
    alphas: Sequence[float] | None = None,
    offset: float = 0.0,
    split: str = "mnli",
    grid: str = "linear:5",
) -> tuple[UnitKey, list[PathPoint]]:
    """Unit i: member i → a reference member, 5 points α = 0, 0.25, …, 1 unless `alphas`."""
    key = unit_key(i, split=split, grid=grid)
    points = [
        PathPoint(
            **key.to_dict(),
            alpha=float(a),
            loss=float(a) * (1 - float(a)) + offset,  # a bump in the middle of the path
            metrics={"accuracy": 1.0 - float(a) / 2},
            example_losses=np.full(N_EXAMPLES, a, dtype=np.float32),
            n_examples=N_EXAMPLES,
        )
        for a in (np.linspace(0, 1, 5) if alphas is None else alphas)
    ]
    return key, points


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "results.sqlite", study="test") as s:
        yield s


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --------------------------------------------------------------------------- round trips


def test_member_point_round_trip(store: Store) -> None:
    point = member(loss=math.nan)  # a diverged evaluation: NaN loss is kept as NaN
    without_examples = member(1, example_losses=None)
    store.write_member_points([point, without_examples])
    back = store.member_point("hash0", "mnli", 0, N_EXAMPLES)
    assert back == point
    assert back is not None and back.example_losses is not None
    assert back.example_losses.dtype == np.float32
    assert store.member_point("hash1", "mnli", 0, N_EXAMPLES) == without_examples
    assert store.member_point("hash0", "hans", 0, N_EXAMPLES) is None

    frame = store.member_points()
    assert list(frame.columns) == [
        "member_id",
        "member_hash",
        "split",
        "sample_seed",
        "sample_size",
        "loss",
        "n_examples",
        "created",
        "accuracy",
        "f1",
    ]
    assert frame["member_id"].tolist() == ["seed0", "seed1"]
    assert math.isnan(frame["loss"].iloc[0]) and frame["loss"].iloc[1] == 0.5
    assert frame["accuracy"].tolist() == [0.75, 0.75]
    with_examples = store.member_points(with_examples=True, member_id="seed0")
    np.testing.assert_array_equal(with_examples["example_losses"].iloc[0], point.example_losses)


def test_path_unit_round_trip(store: Store) -> None:
    key, points = unit(0)
    store.write_unit(key, points)
    assert store.has_unit(key)
    assert store.done_units() == {key}
    assert store.unit_points(key) == points
    assert not store.has_unit(unit_key(1))

    frame = store.path_points(with_examples=True)
    assert frame["alpha"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # loss = α(1 − α): 0, 0.1875, 0.25, 0.1875, 0
    assert frame["loss"].tolist() == [0.0, 0.1875, 0.25, 0.1875, 0.0]
    assert frame["accuracy"].tolist() == [1.0, 0.875, 0.75, 0.625, 0.5]
    assert "metrics" not in frame.columns
    for a, losses in zip(frame["alpha"], frame["example_losses"], strict=True):
        np.testing.assert_array_equal(losses, np.full(N_EXAMPLES, a, np.float32))
    assert "example_losses" not in store.path_points().columns
    assert store.counts() == _counts(0, 5, 1)


def test_unit_key_ignores_member_ids() -> None:
    renamed = UnitKey(**{**unit_key(0).to_dict(), "member_a": "renamed"})
    assert renamed == unit_key(0) and hash(renamed) == hash(unit_key(0))
    assert unit_key(0) != unit_key(1)
    assert UnitKey.from_dict(unit_key(0).to_dict()).member_a == "seed0"


def test_to_dict_from_dict_round_trip() -> None:
    point = member()
    assert MemberPoint.from_dict(point.to_dict()) == point
    _, points = unit(0)
    assert PathPoint.from_dict(points[1].to_dict()) == points[1]
    assert points[1].unit_key == unit_key(0)


@settings(max_examples=15, deadline=None)
@given(
    loss=st.floats(allow_nan=True, allow_infinity=True),
    metric=st.floats(allow_nan=True, allow_infinity=True),
    alpha=st.floats(min_value=-2, max_value=3),
)
def test_any_float_round_trips(loss: float, metric: float, alpha: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "r.sqlite") as s:
        point = member(loss=loss, metrics={"m": metric})
        s.write_member_points([point])
        assert s.member_point("hash0", "mnli", 0, N_EXAMPLES) == point
        key, points = unit(0, alphas=[alpha], offset=loss)
        s.write_unit(key, points)
        assert s.unit_points(key) == points


# --------------------------------------------------------------------------- idempotence


def test_rewriting_member_points_replaces_without_duplicates(store: Store) -> None:
    store.write_member_points([member(0), member(1)])
    store.write_member_points([member(0, loss=0.25)])  # the last write of a key wins
    assert store.counts()["member_points"] == 2
    back = store.member_point("hash0", "mnli", 0, N_EXAMPLES)
    assert back is not None and back.loss == 0.25
    with pytest.raises(StoreError, match="twice"):
        store.write_member_points([member(2), member(2)])
    assert store.counts()["member_points"] == 2


def test_rewriting_a_unit_replaces_it_whole(store: Store) -> None:
    key, points = unit(0)
    store.write_unit(key, points)
    store.write_unit(key, points)
    assert store.counts() == _counts(0, 5, 1)
    # A rewrite with fewer points leaves exactly those: no stale rows from the first write.
    key, fewer = unit(0, alphas=[0.0, 1.0], offset=1.0)
    store.write_unit(key, fewer)
    assert store.unit_points(key) == fewer
    assert store.counts() == _counts(0, 2, 1)
    assert store.integrity_check() == "ok"


def test_alpha_is_rounded_into_one_key(store: Store) -> None:
    key, points = unit(0, alphas=[0.1 + 0.2])
    assert points[0].alpha == 0.3
    store.write_unit(key, points)
    assert len(store.path_points(alpha=0.3)) == 1
    with pytest.raises(StoreError, match="twice"):
        store.write_unit(*unit(0, alphas=[0.3, 0.1 + 0.2]))


def test_points_must_match_their_unit(store: Store) -> None:
    key, points = unit(0)
    with pytest.raises(StoreError, match="member_a='seed1' but its unit has member_a='seed0'"):
        store.write_unit(key, points[:2] + unit(1)[1][:1])
    with pytest.raises(StoreError, match="no points"):
        store.write_unit(key, [])
    assert store.counts() == _counts(0, 0, 0)


def test_invalid_points_name_the_field() -> None:
    with pytest.raises(StoreError, match="example_losses has 3 entries but n_examples is 8"):
        member(example_losses=[1.0, 2.0, 3.0])
    with pytest.raises(StoreError, match="metric name 'loss' clashes"):
        member(metrics={"loss": 1.0})
    with pytest.raises(StoreError, match="sample_size must be >= 0"):
        member(sample_size=-1)
    with pytest.raises(StoreError, match="member_hash must be a non-empty string"):
        member(member_hash="")


# --------------------------------------------------------------------------- atomicity


def test_sql_failure_mid_unit_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path) as s:
        key, points = unit(0)
        s.write_unit(key, points)
        # A trigger makes the unit marker's insert fail after the path rows went in.
        conn = raw(path)
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON units BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        with pytest.raises(StoreError, match="boom"):
            s.write_unit(*unit(1))
        with pytest.raises(StoreError, match="boom"):
            s.write_unit(key, unit(0, offset=5.0)[1])  # a failed rewrite keeps the old unit
        conn.execute("DROP TRIGGER boom")
        conn.close()
        assert s.done_units() == {key}
        assert s.unit_points(key) == points
        assert s.counts() == _counts(0, 5, 1)
        s.write_unit(*unit(1))  # the store is still usable
        assert s.counts()["units"] == 2


def test_exception_mid_unit_rolls_back(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    key, points = unit(0)

    def interrupted() -> float:  # called for the marker, after the rows were inserted
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_now", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_unit(key, points)
    monkeypatch.undo()
    assert not store.has_unit(key)
    assert store.counts() == _counts(0, 0, 0)


# --------------------------------------------------------------------------- opening


def test_text_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database\n" * 20)
    with pytest.raises(StoreError, match=r"notes\.txt is not an SQLite database"):
        Store(path)
    path.write_bytes(b"tiny")
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store(path)
    assert path.read_bytes() == b"tiny"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("application_id", [0x12345678, 0])
def test_other_sqlite_database_is_refused_untouched(tmp_path: Path, application_id: int) -> None:
    path = tmp_path / "other.db"
    conn = raw(path)
    conn.execute(f"PRAGMA application_id = {application_id}")
    conn.execute("CREATE TABLE things (x)")
    conn.execute("INSERT INTO things VALUES (1)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"other\.db is an SQLite database of another"):
        Store(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    Store(path).close()
    conn = raw(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(
        StoreError, match=rf"newer than this modeconn reads \({SCHEMA_VERSION}\); upgrade modeconn"
    ) as info:
        Store(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


def test_store_is_marked_as_modeconn(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    Store(path).close()
    conn = raw(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_study_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    Store(path, study="y").close()
    with pytest.raises(StoreError, match="belongs to study 'y', not 'x'; use another output"):
        Store(path, study="x")
    with Store(path) as s:  # no study given: no check
        assert s.study == "y"
    # A store created without a study adopts the first one it is opened with.
    loose = tmp_path / "loose.sqlite"
    Store(loose).close()
    Store(loose, study="x").close()
    with pytest.raises(StoreError, match="belongs to study 'x', not 'z'"):
        Store(loose, study="z")


def test_meta_records(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path, study="y") as s:
        assert s.get_meta("plan") is None
        s.set_meta("plan", '{"grid": "linear:11"}')
        s.set_meta("study", '{"name": "y", "seeds": 4}')  # free-form: not the study check
        with pytest.raises(StoreError, match="belongs to the store itself"):
            s.set_meta("study_name", "z")
    with Store(path, study="y", create=False) as s:
        assert s.get_meta("plan") == '{"grid": "linear:11"}'
        assert s.get_meta("study_name") == "y"


def test_create_false_needs_an_existing_store(tmp_path: Path) -> None:
    path = tmp_path / "missing.sqlite"
    with pytest.raises(StoreError, match=r"missing\.sqlite does not exist"):
        Store(path, create=False)
    assert not path.exists()
    Store(tmp_path / "sub" / "dir" / "r.sqlite").close()  # parents are created
    Store(tmp_path / "sub" / "dir" / "r.sqlite", create=False).close()


def test_closed_store_says_so(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.sqlite")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        s.counts()


def test_concurrent_reader_sees_commits(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with Store(path, study="s") as writer, Store(path, study="s", create=False) as reader:
        assert reader.counts()["units"] == 0
        writer.write_unit(*unit(0))
        assert reader.has_unit(unit_key(0))
        assert reader.integrity_check() == "ok"


def test_integrity_check_reports_broken_units(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with Store(path) as s:
        s.write_unit(*unit(0))
        s.write_unit(*unit(1))
        conn = raw(path)
        conn.execute("DELETE FROM units WHERE hash_a = 'hash0'")
        conn.execute("DELETE FROM path_points WHERE hash_a = 'hash1' AND alpha = 0.5")
        conn.close()
        report = s.integrity_check()
    assert "5 path_points rows belong to no unit marker" in report
    assert "has 4 path rows, its marker says 5" in report


# --------------------------------------------------------------------------- reads


def test_filters(store: Store) -> None:
    store.write_unit(*unit(0, split="mnli"))
    store.write_unit(*unit(1, split="hans"))
    store.write_unit(*unit(2, split="hans", grid="linear:3", alphas=[0.0, 0.5, 1.0]))
    assert len(store.path_points(split="hans")) == 8
    assert len(store.path_points(split="hans", grid="linear:5")) == 5
    assert len(store.path_points(member_a=["seed0", "seed2"])) == 8
    assert len(store.path_points(member_a=[])) == 0
    assert len(store.path_points(alpha=0.5)) == 3
    assert len(store.path_points(sample_seed=np.int64(0), alpha=np.float32(0.5))) == 3
    with pytest.raises(StoreError, match="cannot filter path_points by 'loss'"):
        store.path_points(loss=0.0)
    store.write_member_points([member(0), member(1, split="hans", metrics={"mcc": 0.1})])
    frame = store.member_points()
    assert frame["mcc"].isna().tolist() == [True, False]  # NaN where a row lacks the metric
    assert store.member_points(split="hans")["member_id"].tolist() == ["seed1"]
    assert store.member_point("hash1", "hans", np.int64(0), np.int64(N_EXAMPLES)) is not None


# --------------------------------------------------------------------------- export


def _filled(store: Store) -> None:
    store.write_member_points([member(0), member(1, metrics={"mcc": 0.25})])
    store.write_unit(*unit(0))
    store.write_unit(*unit(1, split="hans"))


def test_export_csv_equals_frames(store: Store, tmp_path: Path) -> None:
    _filled(store)
    store.put_value("sharpness", "hash0", {"value": 1.5})
    paths = store.export(tmp_path / "out", format="csv")
    assert [p.name for p in paths] == [
        "member_points.csv",
        "path_points.csv",
        "analysis_values.csv",
    ]
    values = pd.read_csv(paths[2])
    assert values[["kind", "key"]].values.tolist() == [["sharpness", "hash0"]]
    assert json.loads(values["value"][0]) == {"value": 1.5}
    for path, frame in zip(paths, [store.member_points(), store.path_points()], strict=False):
        text_columns = {c: str for c in frame.columns if frame[c].dtype.kind not in "if"}
        back = pd.read_csv(path, dtype=text_columns)
        pd.testing.assert_frame_equal(back, frame)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "analysis_values.csv",
        "member_points.csv",
        "path_points.csv",
    ]  # no temporary files left behind


def test_export_parquet_equals_frames(store: Store, tmp_path: Path) -> None:
    _filled(store)
    paths = store.export(tmp_path / "out", format="parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), store.member_points())
    pd.testing.assert_frame_equal(pd.read_parquet(paths[1]), store.path_points())
    paths = store.export(tmp_path / "out", format="parquet", with_examples=True)
    back = pd.read_parquet(paths[1])
    frame = store.path_points(with_examples=True)
    pd.testing.assert_frame_equal(back.drop(columns="example_losses"), store.path_points())
    for got, want in zip(back["example_losses"], frame["example_losses"], strict=True):
        np.testing.assert_array_equal(np.asarray(got, np.float32), want)
    with pytest.raises(StoreError, match="use format='parquet'"):
        store.export(tmp_path / "out", format="csv", with_examples=True)


# --------------------------------------------------------------------------- crashes
#
# A writer process is SIGKILLed at a random moment, and the store reopened. The fast test
# forks the writer from this process (no interpreter start-up: `import modeconn` loads
# torch, seconds per process); the slow one starts fresh interpreters, and also kills them
# while they create the store.


def _write_units_forever(path: str, report: Callable[[int], object]) -> None:
    """Write 41-point units into the store at `path` until killed; report each commit."""
    import numpy as np

    from modeconn.store import PathPoint, Store, UnitKey

    alphas = np.linspace(0, 1, 41)
    with Store(path, study="kill") as store:
        for i in range(10**6):
            key = UnitKey(
                member_a=f"m{i}",
                member_b="ref",
                hash_a=f"h{i}",
                hash_b="href",
                path="linear",
                grid="linear:41",
                split="dev",
                sample_seed=0,
                sample_size=256,
            )
            if store.has_unit(key):
                continue  # resume: skip what a killed run already finished
            points = [
                PathPoint(
                    **key.to_dict(),
                    alpha=a,
                    loss=a,
                    metrics={"acc": a},
                    example_losses=np.full(256, a, np.float32),
                    n_examples=256,
                )
                for a in alphas
            ]
            store.write_unit(key, points)
            report(i)  # only after the commit returned


_WRITER_SCRIPT = (
    "from __future__ import annotations\n"
    + textwrap.dedent(inspect.getsource(_write_units_forever))
    + "\nimport sys\n_write_units_forever(sys.argv[1], lambda i: print(i, flush=True))\n"
)


def _check_after_kill(path: Path, committed: set[int]) -> int:
    with Store(path, study="kill", create=False) as s:
        assert s.integrity_check() == "ok"
        done = s.done_units()
    conn = raw(path)
    # Every unit marker has exactly its 41 rows, each intact (loss == α, blob = α × 256).
    per_unit = conn.execute(
        "SELECT u.hash_a, u.n_points, count(p.alpha), sum(abs(p.loss - p.alpha) < 1e-9), "
        "sum(length(p.example_losses)) FROM units u LEFT JOIN path_points p "
        "ON p.hash_a = u.hash_a AND p.hash_b = u.hash_b GROUP BY u.hash_a"
    ).fetchall()
    for _, n_points, n_rows, n_intact, n_bytes in per_unit:
        assert n_points == n_rows == n_intact == 41 and n_bytes == 41 * 256 * 4
    # No row exists without its marker.
    orphans = conn.execute(
        "SELECT count(*) FROM path_points p WHERE p.hash_a NOT IN (SELECT hash_a FROM units)"
    ).fetchone()[0]
    conn.close()
    assert orphans == 0
    # A unit whose commit returned before the kill survived it.
    assert {f"h{i}" for i in committed} <= {k.hash_a for k in done}
    return len(done)


def _fork_writer_and_kill(path: Path, rng: random.Random) -> set[int]:
    """Fork a writer, SIGKILL it a random moment after its first commit; what it committed."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_fd)
            _write_units_forever(str(path), lambda i: os.write(write_fd, f"{i}\n".encode()))
        finally:
            os._exit(1)
    os.close(write_fd)
    with os.fdopen(read_fd) as reports:
        first = reports.readline()
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        rest = reports.read()
    assert first, "the forked writer died before its first commit"
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return {int(line) for line in [first, *rest.split()]}


def _run_writer_and_kill(
    path: Path, rng: random.Random, *, wait_ready: bool, delay: tuple[float, float]
) -> set[int]:
    """Start a writer interpreter, SIGKILL it after a random delay; what it committed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    if wait_ready:  # the writer is up and committing
        lines.append(proc.stdout.readline())
        assert lines[0], proc.stderr.read()
    time.sleep(rng.uniform(*delay))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lines += proc.stdout.read().split()
    proc.stdout.close()
    proc.stderr.close()
    return {int(line) for line in lines}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_mid_write_leaves_complete_units_only(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    rng = random.Random(20240611)
    n_done = 0
    for _ in range(4):
        committed = _fork_writer_and_kill(path, rng)
        now_done = _check_after_kill(path, committed)
        assert now_done > n_done  # each run resumed and added units
        n_done = now_done


@pytest.mark.slow
def test_sigkill_of_fresh_interpreters(tmp_path: Path) -> None:
    rng = random.Random(7)
    # Killed at any moment from process start: during imports, while the store is being
    # created, or mid-unit. Each reopen must find a consistent (possibly empty) store.
    for round_ in range(4):
        path = tmp_path / f"fresh{round_}.sqlite"
        committed = _run_writer_and_kill(path, rng, wait_ready=False, delay=(3.0, 9.0))
        if path.exists():
            _check_after_kill(path, committed)
    # Kills of runs that resume one store.
    path = tmp_path / "resumed.sqlite"
    for _ in range(4):
        committed = _run_writer_and_kill(path, rng, wait_ready=True, delay=(0.0, 0.3))
        _check_after_kill(path, committed)


# --------------------------------------------------------------------------- analysis values


def test_analysis_values_round_trip_and_last_write_wins(tmp_path: Path) -> None:
    with Store(tmp_path / "r.sqlite") as s:
        assert s.get_value("sharpness", "h1") is None
        s.put_value("sharpness", "h1", {"value": 1.5, "steps": [1, 2]})
        s.put_value("sharpness", "h2", {"value": 2.5})
        s.put_value("sharpness", "h1", {"value": 0.5})  # replaces, never duplicates
        s.put_value("euclidean", "h1|h2", {"distance": 3.0})
        assert s.get_value("sharpness", "h1") == {"value": 0.5}
        assert s.values("sharpness") == {"h1": {"value": 0.5}, "h2": {"value": 2.5}}
        assert s.counts()["analysis_values"] == 3
        with pytest.raises(StoreError, match="JSON-able"):
            s.put_value("sharpness", "h3", {"value": float("nan")})
        assert s.integrity_check() == "ok"


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Store(path, study="s") as s:
        s.write_member_points([member()])
    # make it a version-1 store: no analysis_values table
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE analysis_values")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Store(path, study="s") as s:
        assert s.counts()["member_points"] == 1  # the old rows are kept
        s.put_value("sharpness", "h", {"value": 1.0})
        assert s.get_value("sharpness", "h") == {"value": 1.0}
    conn = sqlite3.connect(path)
    # upgraded through every migration (1 → 2 → 3 since the checksums came)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()
