"""What an analysis is: one module behind one small interface (torchtune's recipe protocol).

An analysis beyond the basins (alternative distances, Table 1, ε-sharpness, loss planes,
basins along training, the bootstrap over the sample, …) is one module of this package
holding one class that satisfies :class:`Analysis`, plus one line in
:mod:`modeconn.analyses.registry`. It declares

* ``key`` — its study section ``analyses.<key>``, and ``section`` — the pydantic type
  that validates it (a :class:`~modeconn.config.sections.SectionModel`, a ``RootModel``
  for a list-shaped key, or None if it takes no options); ``more_sections`` for extra
  keys it reads (the distances' ``distance_splits``); ``always = True`` if it runs
  without a section;
* ``cites`` (paper and figure/table it reproduces) and ``summary`` (what it computes),
  which ``modeconn analyses`` prints;
* ``needs_weights`` — whether :meth:`Analysis.measure` must run before it can be read.

and does three things:

* ``measure(ctx)`` — with the weights: compute what is missing and write it to the store
  as keyed records (``ctx.store.put_value(kind, key, record)``, the key built from weight
  hashes, split key and a fingerprint of the settings, never from names), skipping every
  record already present, so a rerun computes nothing and a changed input never meets a
  stale record;
* ``read(store, result, earlier)`` — from the store alone (no weights): the analysis's
  value (tables, matrices, records); ``earlier`` holds the values of the analyses before
  it in the registry (Table 1 reads ε-sharpness from there);
* ``sections(result, value)`` — its report sections (:class:`~modeconn.report.html.Section`)
  with their figures; and ``summary_lines(value)``, what ``modeconn run`` prints.

The protocol is a contract, not a base class: there is nothing to inherit. Modules here
import no torch at module level (``modeconn analyses`` and the study format load them);
``measure`` imports the engine it needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from modeconn.config import sections as _sections

if TYPE_CHECKING:
    from pydantic import BaseModel

    from modeconn.config.study import Study
    from modeconn.engine.evaluate import Evaluator
    from modeconn.engine.sweep import MemberRef
    from modeconn.population.members import Member, Population
    from modeconn.report.html import Section
    from modeconn.results import StudyResult
    from modeconn.store import Store


@dataclass(frozen=True)
class MeasureContext:
    """What ``measure`` may use: the runner's inputs, never the runner itself.

    ``splits`` are the study's prepared evaluation splits by name; ``members`` the final
    members with their weight hashes (checked against the model once); ``check_weights``
    checks another state dict (a checkpoint) against the study's model.
    """

    study: Study
    store: Store
    evaluator: Evaluator
    splits: Mapping[str, Any]
    population: Population
    members: Sequence[MemberRef]
    check_weights: Callable[[dict[str, Any], Member], None]
    progress: bool = True
    say: Callable[[str], None] = print


@runtime_checkable
class Analysis(Protocol):
    """One analysis beyond the basins; see the module docstring for each member."""

    key: str
    cites: str
    summary: str
    needs_weights: bool

    @property
    def section(self) -> type[BaseModel] | None: ...

    def measure(self, ctx: MeasureContext) -> None: ...

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> Any: ...

    def sections(self, result: StudyResult, value: Any) -> list[Section]: ...

    def summary_lines(self, value: Any) -> list[str]: ...


def study_keys(analysis: Analysis) -> dict[str, type[BaseModel]]:
    """The study sections an analysis reads: its own key first, then ``more_sections``."""
    own = {} if analysis.section is None else {analysis.key: analysis.section}
    return {**own, **getattr(analysis, "more_sections", {})}


def is_enabled(analysis: Analysis, study: Study) -> bool:
    """An analysis runs if it always does, or if the study sets one of its sections."""
    if getattr(analysis, "always", False):
        return True
    return any(_sections.is_set(study.section(k)) for k in study_keys(analysis))


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of an analysis's settings, part of its records' keys.

    >>> settings_fingerprint({"epsilon": 1e-5}) == settings_fingerprint({"epsilon": 1e-5})
    True
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def value_key(*parts: str) -> str:
    """The key of one analysis record: its parts joined by ``|``."""
    return "|".join(parts)
