"""One exception hierarchy. Every message names the thing (file, key, field) and the fix.

Each class also subclasses the builtin a Python user would reach for, as scikit-learn's
``NotFittedError(ValueError, AttributeError)`` does, so ``except ValueError`` catches a bad
study, split or member, and ``except OSError`` a store that cannot be read or written:

>>> issubclass(ConfigError, ValueError), issubclass(StoreError, OSError)
(True, True)
"""

from __future__ import annotations

from collections.abc import Container, Iterable


class ModeconnError(Exception):
    """Base class of every error modeconn raises on purpose."""


class ConfigError(ModeconnError, ValueError):
    """A study file or an option is invalid."""


class PopulationError(ModeconnError, ValueError):
    """A member cannot be loaded, or members do not share one architecture."""


class UnsafeCheckpointError(PopulationError):
    """A checkpoint would need arbitrary code execution (a pickle) to load."""


class DataError(ModeconnError, ValueError):
    """A data file, column, label or split is missing or malformed."""


class StoreError(ModeconnError, OSError):
    """The results store is unreadable, foreign, or from another study."""


def require_keys(data: Container[str], keys: Iterable[str], record: str) -> None:
    """Raise DataError if a `record` dict (as its ``to_dict()`` writes it) lacks any of `keys`.

    >>> require_keys({"a": 1}, ["a"], "Thing")
    """
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(
            f"a {record} record is missing keys {missing}; it must come from {record}.to_dict()"
        )
