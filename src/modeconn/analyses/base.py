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

One method is optional: ``summary_json(value) -> dict``, the analysis's headline numbers
for ``modeconn report STORE --json`` (:mod:`modeconn.report.json`), built from plain
records (:func:`records`). An analysis without it gets :func:`summary_json`'s generic
default: its value taken apart field by field (tables as records, series as mappings).

The protocol is a contract, not a base class: there is nothing to inherit. Modules here
import no torch at module level (``modeconn analyses`` and the study format load them);
``measure`` imports the engine it needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
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

    # optional, so left out of the protocol (isinstance checks every member):
    # def summary_json(self, value: Any) -> dict[str, Any]: ...  (see summary_json below)


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


def summary_json(analysis: Analysis, value: Any) -> dict[str, Any]:
    """What ``modeconn report --json`` shows of one analysis: its own ``summary_json(value)``
    if it has one, else the whole value taken apart by :func:`jsonable` (None, nothing to
    show, as ``{}``; a value that is not a mapping as ``{"value": ...}``). Always plain
    JSON types, NaN as None.

    >>> class Bare:
    ...     key = "bare"
    >>> summary_json(Bare(), {"r": float("nan"), "n": 3})
    {'r': None, 'n': 3}
    """
    own = getattr(analysis, "summary_json", None)
    out = jsonable(own(value) if own is not None else value)
    if out is None:
        return {}
    return out if isinstance(out, dict) else {"value": out}


def records(frame: Any, *, index: str | None = None) -> list[dict[str, Any]]:
    """A table as JSON records, one per row, columns in order; ``index`` names a column
    for the index (kept first), else a default 0…n−1 index is dropped and any other kept
    under its own name.

    >>> import pandas as pd
    >>> records(pd.DataFrame({"a": [1.0, float("nan")]}, index=pd.Index(["x", "y"], name="id")))
    [{'id': 'x', 'a': 1.0}, {'id': 'y', 'a': None}]
    """
    import pandas as pd

    if not isinstance(index, str) and isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index(drop=True)
    else:
        frame = frame.rename_axis(index or frame.index.name or "index").reset_index()
    out = jsonable(frame.to_dict(orient="records"))
    assert isinstance(out, list)
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` in JSON's types: NaN and ±inf as None, numpy scalars and arrays as Python
    numbers and lists, tables as :func:`records`, series as ``{index: value}``,
    dataclasses and mappings as dicts (keys as strings, order kept), sets sorted, objects
    with ``to_dict()`` by it, anything else by ``str``.

    >>> jsonable({"x": (1, float("inf")), 2: {"b"}})
    {'x': [1, None], '2': ['b']}
    """
    import numpy as np
    import pandas as pd

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, pd.DataFrame):
        return records(obj)
    if isinstance(obj, pd.Series):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return [jsonable(v) for v in sorted(obj, key=str)]
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if callable(getattr(obj, "to_dict", None)):
        return jsonable(obj.to_dict())
    if isinstance(obj, PurePath):
        return str(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)
