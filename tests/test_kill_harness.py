"""The kill harness, small: SIGKILL a real `modeconn run` 3 times, resume, compare.

The full harness (20 kills, local, process or Ray backend) is
``benchmarks/kill_harness.py``; this runs the same code with 3 kills on the local backend
and 4 tiny members (6 pairs × 2 splits = 12 units at 11 α), then 2 kills (SIGKILL, then
SIGTERM) of a ``sweep.backend: process`` run, checking that no worker outlives its driver.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from kill_harness import run_harness


@pytest.mark.slow  # 40 s; tests/test_resume.py kills and resumes a sweep in the default suite
def test_three_kills_are_survived_and_the_resumed_store_equals_the_reference(
    data_root: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    result = run_harness(
        tmp_path, kills=3, backend="local", members=4, sample=48, data=data_root, say=lines.append
    )
    report = "\n".join(lines)
    assert 1 <= result.kills <= 3 and result.kills + result.rounds >= 3, report
    assert result.survived == result.kills, report
    assert result.rounds_equal == result.rounds >= 1, report
    assert result.orphans == 0, report
    assert result.ok, report


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_process_worker_outlives_its_killed_driver(
    data_root: Path, tmp_path: Path, sig: int
) -> None:
    """`sweep.backend: process`: two kills mid-sweep; every worker of the run is gone within
    5 s of the driver's death (SIGKILL: the workers notice by themselves; SIGTERM: the
    driver shuts its pool down), and the resumed store equals the reference."""
    lines: list[str] = []
    result = run_harness(
        tmp_path,
        kills=2,
        backend="process",
        members=4,
        sample=48,
        data=data_root,
        sig=sig,
        grace=5.0,
        say=lines.append,
    )
    report = "\n".join(lines)
    assert result.kills >= 1, report
    assert result.orphans == 0, report
    assert result.ok, report
