"""The kill harness, small: SIGKILL a real `modeconn run` 3 times, resume, compare.

The full harness (20 kills, local or Ray backend) is ``benchmarks/kill_harness.py``; this
runs the same code with 3 kills on the local backend and 4 tiny members (6 pairs × 2
splits = 12 units at 11 α).
"""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from kill_harness import run_harness


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
