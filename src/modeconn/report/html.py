"""One self-contained HTML report of a study: sections of text, figures and tables.

A report is a list of :class:`Section` objects, each holding plain text, figures (a
:class:`~matplotlib.figure.Figure` or the path of a PNG already written) and tables
(pandas DataFrames), plus the provenance of what it shows: which members, split, sample
seed and α grid produced it. :func:`write_report` turns them into one HTML file that opens
anywhere offline: images are embedded as base64 ``data:`` URIs, the CSS is inline, and
nothing loads fonts, scripts or images from the network. Every figure is also written as
a PNG under ``out_dir/figures/`` with a stable name, for papers and slides.

The report only reads results (figures and tables made from them); it computes nothing.

>>> import tempfile, pandas as pd
>>> table = pd.DataFrame({"basin": [0, 1], "HANS-LO": [0.1234567, 0.61]})
>>> section = Section("Basins", text="Two basins.", tables=(("Per basin", table),),
...                   provenance={"split": "hans"})
>>> html = write_report(tempfile.mkdtemp(), [section], title="Demo")
>>> "0.1235" in html.read_text()
True
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd
from matplotlib.figure import Figure

from modeconn._atomic import write_bytes_atomic
from modeconn.errors import ConfigError, DataError
from modeconn.figures import save

__all__ = ["FigureLike", "Section", "write_report"]

FigureLike: TypeAlias = Figure | Path  # a figure, or the path of a PNG already written
SIGNIFICANT_DIGITS = 4  # of floats in report tables
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no boolean ==
class Section:
    """One section of a report.

    Attributes:
        title: the section heading.
        text: plain text; blank lines separate paragraphs. HTML in it is escaped, not run.
        figures: ``(caption, figure)`` pairs; a figure is a matplotlib ``Figure`` or the
            path of a PNG file.
        tables: ``(caption, DataFrame)`` pairs.
        provenance: what produced the section (members, split, sample seed, grid), shown
            as a small definition list under it. Values are stored as strings.

    Lists are accepted for ``figures`` and ``tables`` and stored as tuples.
    """

    title: str
    text: str = ""
    figures: tuple[tuple[str, FigureLike], ...] = ()
    tables: tuple[tuple[str, pd.DataFrame], ...] = ()
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.title, str) or not self.title.strip():
            raise ConfigError(f"a report Section needs a non-empty title; got {self.title!r}")
        if not isinstance(self.text, str):
            raise ConfigError(
                f"Section {self.title!r}: `text` must be a str; got {type(self.text)}"
            )
        figures = tuple(_pair(item, "figures", self.title) for item in self.figures)
        for caption, fig in figures:
            if isinstance(fig, str | os.PathLike):
                continue
            if not isinstance(fig, Figure):
                raise ConfigError(
                    f"Section {self.title!r}: figure {caption!r} must be a matplotlib Figure "
                    f"or the path of a PNG; got {type(fig)}"
                )
        figures = tuple((c, Path(f) if isinstance(f, str | os.PathLike) else f) for c, f in figures)
        tables = tuple(_pair(item, "tables", self.title) for item in self.tables)
        for caption, table in tables:
            if not isinstance(table, pd.DataFrame):
                raise ConfigError(
                    f"Section {self.title!r}: table {caption!r} must be a pandas DataFrame; "
                    f"got {type(table)}"
                )
        # Frozen: normalise through object.__setattr__, once, at construction.
        object.__setattr__(self, "figures", figures)
        object.__setattr__(self, "tables", tables)
        object.__setattr__(self, "provenance", {str(k): str(v) for k, v in self.provenance.items()})


def _pair(item: Any, what: str, title: str) -> tuple[str, Any]:
    if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[0], str):
        raise ConfigError(
            f"Section {title!r}: each entry of `{what}` must be a (caption, {what[:-1]}) pair; "
            f"got {item!r:.80}"
        )
    return item[0], item[1]


def write_report(
    out_dir: str | os.PathLike[str],
    sections: Iterable[Section],
    *,
    title: str,
    summary: Mapping[str, str] | None = None,
    filename: str = "report.html",
) -> Path:
    """Write the report as one self-contained HTML file; return its path.

    Args:
        out_dir: directory for the report; created when missing.
        sections: the sections, in order.
        title: the report's title (page title and top heading).
        summary: optional key facts (study, members, basins found, correlation) shown as a
            definition list under the title.
        filename: the HTML file's name inside ``out_dir``.

    Every figure is also written as ``out_dir/figures/<ss>-<section>-<ff>-<caption>.png``
    (section and figure numbers plus slugs of their titles), so names stay the same from
    one run to the next. The HTML is written to a temporary file and moved into place with
    :func:`os.replace`, so a reader never sees half a report.
    """
    if not isinstance(title, str) or not title.strip():
        raise ConfigError(f"the report needs a non-empty title; got {title!r}")
    if not filename or Path(filename).name != filename or not filename.endswith(".html"):
        raise ConfigError(f"`filename` must be a plain file name ending in .html; got {filename!r}")
    sections = list(sections)
    for i, section in enumerate(sections):
        if not isinstance(section, Section):
            raise ConfigError(
                f"sections[{i}] must be a modeconn.report.html.Section; got {type(section)}"
            )
    out = Path(out_dir)
    figure_dir = out / "figures"
    out.mkdir(parents=True, exist_ok=True)

    body: list[str] = [f"<header><h1>{_esc(title)}</h1>"]
    if summary:
        body.append(_definition_list(summary, "summary"))
    if len(sections) > 1:
        body.append('<nav><ol class="toc">')
        body.extend(
            f'<li><a href="#{_anchor(i, s.title)}">{_esc(s.title)}</a></li>'
            for i, s in enumerate(sections, 1)
        )
        body.append("</ol></nav>")
    body.append("</header><main>")
    for i, section in enumerate(sections, 1):
        body.append(_render_section(i, section, figure_dir))
    body.append("</main>")
    body.append(f"<footer>Written by modeconn {_esc(_version())}.</footer>")

    document = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
    return _written(out / filename, document.encode("utf-8"))


# --- rendering -----------------------------------------------------------------------------


def _render_section(index: int, section: Section, figure_dir: Path) -> str:
    parts = [f'<section id="{_anchor(index, section.title)}">', f"<h2>{_esc(section.title)}</h2>"]
    for paragraph in re.split(r"\n\s*\n", section.text.strip()):
        if paragraph.strip():
            parts.append(f"<p>{_esc(paragraph.strip())}</p>")
    for j, (caption, fig) in enumerate(section.figures, 1):
        name = f"{index:02d}-{_slug(section.title)}-{j:02d}-{_slug(caption)}.png"
        png = _figure_png(fig, figure_dir / name, section.title, caption)
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            "<figure>"
            f'<img src="data:image/png;base64,{data}" alt="{_esc(caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption>"
            "</figure>"
        )
    for caption, table in section.tables:
        parts.append(
            f'<div class="table"><p class="caption">{_esc(caption)}</p>{_table_html(table)}</div>'
        )
    if section.provenance:
        parts.append(_definition_list(section.provenance, "provenance"))
    parts.append("</section>")
    return "\n".join(parts)


def _figure_png(fig: FigureLike, dest: Path, section: str, caption: str) -> bytes:
    """Write the figure as ``dest`` (PNG) and return the PNG's bytes."""
    if isinstance(fig, Figure):
        return save(fig, dest).read_bytes()
    try:
        png = Path(fig).read_bytes()
    except OSError as exc:
        raise DataError(
            f"section {section!r}: cannot read figure {caption!r} from {fig}: {exc.strerror}"
        ) from exc
    if not png.startswith(_PNG_SIGNATURE):
        raise DataError(f"section {section!r}: figure {caption!r} at {fig} is not a PNG file")
    if Path(fig).resolve() != dest.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(dest, png)
    return png


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(
        float_format=lambda x: f"{x:.{SIGNIFICANT_DIGITS}g}",
        escape=True,
        border=0,
        na_rep="–",
        classes="data",
    )


def _definition_list(items: Mapping[str, Any], css_class: str) -> str:
    rows = "".join(f"<dt>{_esc(str(k))}</dt><dd>{_esc(str(v))}</dd>" for k, v in items.items())
    return f'<dl class="{css_class}">{rows}</dl>'


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _slug(text: str, max_len: int = 40) -> str:
    """Lower-case ASCII words joined by '-': 'Loss on HANS (α=0.5)!' -> 'loss-on-hans-0-5'."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "untitled"


def _anchor(index: int, title: str) -> str:
    return f"s{index}-{_slug(title)}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modeconn")
    except PackageNotFoundError:
        return "(version unknown)"


# System fonts only: a report must render offline and load nothing from the network.
_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --rule: #d1d9e0; --band: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 60rem; padding: 1.5rem 1.25rem 3rem; color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
h1 { font-size: 1.6rem; margin: 0 0 .75rem; }
h2 { font-size: 1.25rem; margin: 2.25rem 0 .5rem; padding-bottom: .25rem;
  border-bottom: 1px solid var(--rule); }
p { margin: .5rem 0; }
nav ol.toc { margin: .5rem 0 0; padding-left: 1.25rem; }
nav a { color: #0b5cad; text-decoration: none; }
nav a:hover { text-decoration: underline; }
figure { margin: 1rem 0; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption, p.caption { color: var(--muted); font-size: .875rem; margin: .35rem 0; }
div.table { margin: 1rem 0; overflow-x: auto; }
table.data { border-collapse: collapse; font-size: .85rem;
  font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: .25rem .6rem; text-align: right;
  border-bottom: 1px solid var(--rule); }
table.data thead th { border-bottom: 2px solid var(--fg); }
table.data tbody tr:nth-child(even) { background: var(--band); }
dl { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem;
  margin: .75rem 0; }
dt { font-weight: 600; }
dd { margin: 0; }
dl.provenance { font-size: .8rem; color: var(--muted); background: var(--band);
  padding: .5rem .75rem; border-radius: 4px; }
dl.summary { font-size: .95rem; }
footer { margin-top: 3rem; color: var(--muted); font-size: .8rem; }
"""


def _written(path: Path, data: bytes) -> Path:
    write_bytes_atomic(path, data)
    return path
