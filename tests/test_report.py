"""The HTML report is one offline file: titles, tables, embedded PNGs, atomic writes."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from modeconn import figures
from modeconn.errors import ConfigError, DataError
from modeconn.report.html import Section, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _figure(title: str) -> Figure:
    fig = Figure(figsize=(2, 1.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [1, 0])
    ax.set_title(title)
    return fig


@pytest.fixture
def sections(tmp_path) -> list[Section]:
    png = figures.save(_figure("on disk"), tmp_path / "elsewhere" / "made-before.png")
    table = pd.DataFrame(
        {"basin": [0, 1], "members": [4, 2], "HANS-LO": [0.123456789, np.nan]},
    )
    return [
        Section(
            "Interpolation paths",
            text="Loss along linear paths.\n\nPairs across basins show a <barrier>.",
            figures=(("Loss on HANS", _figure("a")), ("Loaded from disk", png)),
            provenance={"members": "m0, m1, m2", "split": "hans", "sample seed": "0"},
        ),
        Section(
            "Basins & scores",
            tables=[("Per-basin accuracy", table)],
            figures=[("Score vs. accuracy", _figure("b"))],
            provenance={"grid": "uniform-11"},
        ),
    ]


def test_report_is_self_contained(tmp_path, sections: list[Section]) -> None:
    out = tmp_path / "report"
    path = write_report(out, sections, title="Study <1>", summary={"basins found": "2"})
    assert path == out / "report.html"
    text = path.read_text(encoding="utf-8")
    assert "<title>Study &lt;1&gt;</title>" in text
    assert "Interpolation paths" in text and "Basins &amp; scores" in text
    assert "&lt;barrier&gt;" in text and "<barrier>" not in text  # text is escaped
    assert text.count("<p>") == 2  # two paragraphs
    assert '<table class="dataframe data">' in text
    assert "0.1235" in text and "0.123456789" not in text  # 4 significant digits
    assert "basins found" in text and "uniform-11" in text
    # Three images, all embedded and decodable as PNG; nothing fetched from the network.
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3
    assert all(base64.b64decode(data).startswith(PNG) for data in images)
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text)
    assert "@import" not in text and "<script" not in text and "<link" not in text


def test_report_writes_pngs_with_stable_names(tmp_path, sections: list[Section]) -> None:
    out = tmp_path / "report"
    write_report(out, sections, title="Study")
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == [
        "01-interpolation-paths-01-loss-on-hans.png",
        "01-interpolation-paths-02-loaded-from-disk.png",
        "02-basins-scores-01-score-vs-accuracy.png",
    ]
    assert all((out / "figures" / n).read_bytes().startswith(PNG) for n in names)
    first = (out / "report.html").read_bytes()
    write_report(out, sections, title="Study")  # a rerun rewrites the same files
    assert sorted(p.name for p in (out / "figures").iterdir()) == names
    assert (out / "report.html").read_bytes() == first


def test_report_written_atomically(tmp_path, sections: list[Section]) -> None:
    out = tmp_path / "report"
    (out).mkdir()
    (out / "summary.html").write_text("old")
    path = write_report(out, sections, title="Study", filename="summary.html")
    assert path.read_text().startswith("<!DOCTYPE html>")
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_failed_write_leaves_old_report(tmp_path, monkeypatch, sections: list[Section]) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.html").write_text("old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("modeconn.report.html.os.replace", boom)
    monkeypatch.setattr("modeconn.figures.style.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(out, sections, title="Study")
    assert (out / "report.html").read_text() == "old"
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["report.html"]


def test_section_validates(tmp_path) -> None:
    with pytest.raises(ConfigError, match="title"):
        Section("  ")
    with pytest.raises(ConfigError, match="DataFrame"):
        Section("t", tables=(("caption", [[1, 2]]),))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pair"):
        Section("t", figures=(_figure("x"),))  # type: ignore[arg-type]
    not_png = tmp_path / "x.png"
    not_png.write_text("hello")
    with pytest.raises(DataError, match="not a PNG"):
        write_report(tmp_path / "r", [Section("t", figures=(("x", not_png),))], title="T")
    with pytest.raises(DataError, match="cannot read"):
        write_report(
            tmp_path / "r", [Section("t", figures=(("x", tmp_path / "no.png"),))], title="T"
        )
    with pytest.raises(ConfigError, match="filename"):
        write_report(tmp_path / "r", [], title="T", filename="../x.html")


def test_section_normalises_fields() -> None:
    section = Section("t", figures=[("c", "a.png")], provenance={"seed": 0})  # type: ignore[dict-item]
    assert section.figures[0][1].__class__.__name__.endswith("Path")
    assert section.provenance == {"seed": "0"}
