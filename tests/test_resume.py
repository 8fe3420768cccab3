"""SIGKILL a real `modeconn run` midway, rerun it, and compare with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from conftest import tiny_study_dict

from modeconn.config.study import load_study
from modeconn.pipeline import StudyRunner
from modeconn.store import Store


def _units(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM units").fetchone()[0])
    except sqlite3.Error:
        return 0


def _rows(store_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store(store_path, create=False) as store:
        assert store.integrity_check() == "ok"
        paths = store.path_points().drop(columns=["created"])
        members = store.member_points().drop(columns=["created"])
    return (
        paths.sort_values(["hash_a", "hash_b", "split", "alpha"]).reset_index(drop=True),
        members.sort_values(["member_hash", "split"]).reset_index(drop=True),
    )


def test_killed_sweep_resumes_to_the_uninterrupted_store(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    # reference: train 6 tiny members and sweep them without interruption
    ref = tiny_study_dict(
        tiny_model_dir, data_root, tmp_path / "ref", members=3, sample=96, points=11
    )
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(ref))
    runner = StudyRunner(load_study(tmp_path / "ref.yaml"), progress=False)
    runner.sweep()
    total = runner.plan(Store(runner.study.store_path())).n_units
    members_dir = runner.study.members_dir()

    # the same members, swept by a real process that is SIGKILLed twice
    killed = dict(ref, output_dir=str(tmp_path / "killed"), population={"dir": str(members_dir)})
    killed.pop("train")
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(killed))
    store = tmp_path / "killed" / "results.sqlite"
    cmd = [sys.executable, "-m", "modeconn.cli", "run", str(tmp_path / "killed.yaml"), "--quiet"]
    seen = []
    for target in (total // 4, (2 * total) // 3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _units(store) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        seen.append(_units(store))
    assert 0 < seen[0] < total and seen[0] <= seen[1] < total, (seen, total)

    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    got_paths, got_members = _rows(store)
    want_paths, want_members = _rows(runner.study.store_path())
    assert not got_paths.duplicated(["hash_a", "hash_b", "split", "alpha"]).any()
    pd.testing.assert_frame_equal(got_paths, want_paths, check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(got_members, want_members, check_exact=False, rtol=1e-6)
