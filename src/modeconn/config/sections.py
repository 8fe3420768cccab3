"""The seam between the study format and the analyses: sections validated by their owners.

A study's ``analyses`` mapping holds one section per analysis (``analyses.sharpness``,
``analyses.planes``, …). The section *classes* live with their analyses
(:mod:`modeconn.analyses`), which sit above this layer; the study format only knows
that such sections exist. The top of the package (``modeconn/__init__.py``) installs
a *provider*, a function returning ``{study key: section type}`` in registry order,
and :class:`~modeconn.config.study.Study` validates each section with its type when
a study is loaded, so a bad field is named ``analyses.<key>.<field>`` and an unknown
key is listed beside the registered ones. This module imports pydantic only.

A section is a pydantic model (or a :class:`~pydantic.RootModel` for list-shaped keys
such as ``analyses.planes``). Two optional methods let it speak to the rest of the
study without the study knowing it:

* ``check(study)`` — cross-references (split names, checkpoints); raise ``ValueError``
  with a message that starts with the section's field, e.g.
  ``"analyses.sharpness.split names split 'x' …"``;
* ``eval_splits()`` — splits that must be evaluated for every member (sharpness's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel, TypeAdapter, ValidationError

SectionTypes = Mapping[str, type[BaseModel]]

_provider: Callable[[], SectionTypes] | None = None
_cache: dict[str, type[BaseModel]] | None = None


class SectionModel(BaseModel):
    """Base of a mapping-shaped analysis section: unknown fields refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def install(provider: Callable[[], SectionTypes]) -> None:
    """Set the function that lists the registered sections (called once, lazily)."""
    global _provider, _cache
    _provider, _cache = provider, None


def refresh() -> None:
    """Forget the cached section list (after an analysis is registered at run time)."""
    global _cache
    _cache = None


def registered() -> dict[str, type[BaseModel]]:
    """``{study key: section type}`` in registry order; empty if nothing is installed."""
    global _cache
    if _cache is None:
        _cache = dict(_provider()) if _provider is not None else {}
    return _cache


def default(section: type[BaseModel]) -> Any:
    """The value of a section the study leaves out: ``[]`` for list sections, else None."""
    if issubclass(section, RootModel):
        try:
            return section.model_validate([])
        except ValidationError:
            return None
    return None


def is_set(value: Any) -> bool:
    """Whether a section asks for anything (None and empty lists do not)."""
    if value is None:
        return False
    if isinstance(value, RootModel):
        return bool(value.root)
    return True


def validate(raw: Any, format_error: Callable[[ValidationError, str], str]) -> dict[str, Any]:
    """Each registered section of ``raw`` validated by its own type, the others defaulted.

    Raises ``ValueError`` with one message for every problem, fields named in full
    (``analyses.uncertainty.samples: …``).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"analyses: expected a mapping of analysis sections; got {type(raw).__name__}"
        )
    known = registered()
    if not known:  # no analyses installed (the study format used on its own)
        return dict(raw)
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ValueError(
            f"analyses.{unknown[0]}: unknown analysis; the registered ones are "
            f"{', '.join(known)} (`modeconn analyses` lists them)"
        )
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key, section in known.items():
        value = raw.get(key)
        if value is None:
            out[key] = default(section)
            continue
        try:
            out[key] = TypeAdapter(section).validate_python(value)
        except ValidationError as err:
            problems.append(format_error(err, f"analyses.{key}"))
    if problems:
        raise ValueError("; ".join(problems))
    return out


def check(study: Any) -> None:
    """Run every set section's cross-reference ``check(study)``."""
    for value in study.analyses.values():
        if is_set(value) and hasattr(value, "check"):
            value.check(study)


def eval_splits(analyses: Mapping[str, Any]) -> list[str]:
    """Splits the set sections need evaluated for every member, in registry order."""
    out: list[str] = []
    for value in analyses.values():
        if is_set(value) and hasattr(value, "eval_splits"):
            out += value.eval_splits()
    return out
