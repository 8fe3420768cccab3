"""Basins plus every analysis a study enables: the one place the two are composed.

>>> from modeconn.analyses.run import analyze_study          # doctest: +SKIP
>>> with Store("runs/demo/results.sqlite", create=False) as store:  # doctest: +SKIP
...     result = analyze_study(store)
>>> result.analyses["distances"].distances                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modeconn.analyses import registry
from modeconn.results import StudyResult, analyze
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study


@dataclass(frozen=True)
class Analyses:
    """What each enabled analysis read, by its key, with its summary lines and notes.

    ``analyses["distances"]`` is the distances analysis's value. For convenience the
    fields of each value (and each value under its own key) read as attributes:
    ``analyses.matrices``, ``analyses.cluster_stats``, ``analyses.sharpness``; a name
    no enabled analysis provides reads as None.
    """

    values: dict[str, Any] = field(default_factory=dict)
    lines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        values = self.__dict__.get("values", {})
        for value in values.values():
            if dataclasses.is_dataclass(value) and name in {
                f.name for f in dataclasses.fields(value)
            }:
                return getattr(value, name)
        return values.get(name)

    def summary_lines(self) -> list[str]:
        """What a terminal user reads after a run."""
        return list(self.lines)


def read_analyses(store: Store, result: StudyResult) -> Analyses:
    """Every analysis the study enables, read from the store in registry order."""
    values: dict[str, Any] = {}
    lines: list[str] = []
    notes: list[str] = []
    for a in registry.enabled(result.study):
        value = a.read(store, result, values)
        values[a.key] = value
        lines += a.summary_lines(value)
        notes += getattr(value, "notes", ())
    return Analyses(values, tuple(lines), tuple(notes))


def analyze_study(store: Store, study: Study | None = None) -> StudyResult:
    """The basins (:func:`modeconn.results.analyze`) and every analysis the study enables.

    ``study`` is the study whose analyses to read (a runner passes its own, so two
    studies sharing one store each see their own); by default the store's record.
    """
    result = analyze(store, study)
    analyses = read_analyses(store, result)
    return dataclasses.replace(result, analyses=analyses, notes=result.notes + analyses.notes)
