"""Importing modeconn, reading a study and asking the CLI for help load no torch.

Each check runs in a fresh interpreter (this test process has torch loaded already) and
looks at ``sys.modules`` after the import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "transformers")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = _run(code).stdout.strip().splitlines()
    return [m for m in (out[-1].split(",") if out else []) if m]


@pytest.mark.parametrize(
    "statement",
    [
        "import modeconn",
        "import modeconn.config.study",
        "from modeconn.config.study import load_study, builtin_study_path; "
        "load_study(builtin_study_path('demo-mnli'))",
        "import modeconn.engine.spec, modeconn.data.base, modeconn.models",
    ],
)
def test_import_loads_no_torch(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_cli_help_loads_no_torch() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['modeconn', '--help']\n"
        "try:\n"
        "    runpy.run_module('modeconn.cli', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = _run(code).stdout.strip().splitlines()
    assert "usage" in "\n".join(out).lower()
    assert out[-1] == "LOADED="


def test_cli_help_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modeconn.cli", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=120,
        check=True,
    )
    assert "usage" in result.stdout.lower()
