"""The README quotes what the demo prints: its block equals `modeconn report` of a warm store.

The demo's printed output in README.md ("What the demo prints") is the block that starts
with ``study demo-mnli:``. This test recomputes it from the demo's results store alone
(``modeconn report STORE``: basins, correlations, analyses, no weights and no training)
and compares the two, with the home folder written as ``~`` as the README does.

It needs a warm demo store, so it is ``slow`` and skips without one:

    make demo                 # once: trains, sweeps, and fills ~/.cache/modeconn/demo-mnli
    make readme-demo          # rewrites the README block from that store, then checks it

or by hand: ``MODECONN_WRITE_DOCS=1 pytest -m slow tests/test_readme_demo.py`` rewrites the
block, plain ``pytest -m slow tests/test_readme_demo.py`` checks it.
``MODECONN_DEMO_STORE`` points at another demo output folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import modeconn.cli as cli
from modeconn._atomic import write_text_atomic

README = Path(__file__).resolve().parents[1] / "README.md"
FIRST_LINE = "study demo-mnli:"


def demo_folder() -> Path:
    """The demo's output folder: ``MODECONN_DEMO_STORE``, else the one `modeconn demo` uses."""
    given = os.environ.get("MODECONN_DEMO_STORE")
    return Path(given).expanduser() if given else cli._cache_dir() / "demo-mnli"


def quoted_block(text: str) -> tuple[int, int]:
    """Start and end offsets of the README's fenced block that begins with the demo's output."""
    for m in re.finditer(r"^```\n(.*?)^```$", text, flags=re.M | re.S):
        if m.group(1).startswith(FIRST_LINE):
            return m.start(1), m.end(1)
    raise AssertionError(f"README.md has no fenced block starting with {FIRST_LINE!r}")


def printed(folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What `modeconn report FOLDER` prints, with the home folder written as ``~``."""
    capsys.readouterr()
    assert cli.main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    return out.replace(str(Path.home()), "~").rstrip("\n") + "\n"


def test_quoted_block_is_found() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = quoted_block(text)
    assert text[start:end].startswith(FIRST_LINE)


@pytest.mark.slow
def test_readme_quotes_what_the_demo_prints(capsys: pytest.CaptureFixture[str]) -> None:
    folder = demo_folder()
    if not (folder / "results.sqlite").is_file():
        pytest.skip(f"no warm demo store in {folder}: run `modeconn demo` first")
    now = printed(folder, capsys)
    text = README.read_text(encoding="utf-8")
    start, end = quoted_block(text)
    if os.environ.get("MODECONN_WRITE_DOCS") == "1":
        text = text[:start] + now + text[end:]
        write_text_atomic(README, text)
        start, end = quoted_block(text)
    assert text[start:end] == now, (
        "README.md quotes another demo output than the code prints now: "
        "MODECONN_WRITE_DOCS=1 pytest -m slow tests/test_readme_demo.py (or make readme-demo)"
    )
