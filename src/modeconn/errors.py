"""One exception hierarchy. Every message names the thing (file, key, field) and the fix.

Each class also subclasses the builtin a Python user would reach for, as scikit-learn's
``NotFittedError(ValueError, AttributeError)`` does, so ``except ValueError`` catches a bad
study, split or member, and ``except OSError`` a store that cannot be read or written:

>>> issubclass(ConfigError, ValueError), issubclass(StoreError, OSError)
(True, True)
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Container, Iterable


class ModeconnError(Exception):
    """Base class of every error modeconn raises on purpose."""


class ConfigError(ModeconnError, ValueError):
    """A study file or an option is invalid."""


class PopulationError(ModeconnError, ValueError):
    """A member cannot be loaded, or members do not share one architecture."""


class UnsafeCheckpointError(PopulationError):
    """A checkpoint would need arbitrary code execution (a pickle) to load."""

    @classmethod
    def refused(cls, path: object, err: BaseException, *, fix: str) -> UnsafeCheckpointError:
        """The error for a file ``torch.load(weights_only=True)`` refused with ``err``.

        Torch's own message advises retrying with ``weights_only=False``; that would run
        whatever code the file holds, so this one says the opposite and keeps only the
        reason (the global the pickle needs).

        >>> err = Exception("Re-run with `weights_only` set to `False`. GLOBAL posix.system")
        >>> print(UnsafeCheckpointError.refused("m.pt", err, fix="save_file(...)"))
        ... # doctest: +NORMALIZE_WHITESPACE
        m.pt cannot be loaded with torch.load(weights_only=True) (its pickle needs
        posix.system); modeconn refuses to unpickle arbitrary objects: never load it with
        weights_only=False, which runs any code the file holds; re-save it as safetensors
        from a trusted environment: save_file(...)
        """
        return cls(
            f"{path} cannot be loaded with torch.load(weights_only=True) "
            f"({_unpickler_reason(err)}); modeconn refuses to unpickle arbitrary objects: "
            "never load it with weights_only=False, which runs any code the file holds; "
            f"re-save it as safetensors from a trusted environment: {fix}"
        )


class DataError(ModeconnError, ValueError):
    """A data file, column, label or split is missing or malformed."""


class StoreError(ModeconnError, OSError):
    """The results store is unreadable, foreign, or from another study."""


def _unpickler_reason(err: BaseException) -> str:
    """The short reason inside torch's long multi-paragraph weights-only error."""
    message = str(err)
    found = re.search(r"GLOBAL (\S+)", message)
    if found:
        return f"its pickle needs {found.group(1)}"
    boilerplate = ("Weights only load failed", "Check the documentation")
    paragraphs = [p for p in message.split("\n\n") if p.strip()]
    reasons = [
        p
        for p in paragraphs
        if not p.strip().startswith(boilerplate) and "weights_only" not in p  # no bad advice
    ]
    text = " ".join((reasons[0] if reasons else "a pickle that needs code to load").split())
    return text if len(text) <= 200 else text[:199] + "…"


def require_keys(data: Container[str], keys: Iterable[str], record: str) -> None:
    """Raise DataError if a `record` dict (as its ``to_dict()`` writes it) lacks any of `keys`.

    >>> require_keys({"a": 1}, ["a"], "Thing")
    """
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(
            f"a {record} record is missing keys {missing}; it must come from {record}.to_dict()"
        )


_KINDS = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def path_kind(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is (symbolic links followed), in words; None when nothing is there.

    A path a user passes must be of the kind the command expects: reading a named pipe
    would wait forever, and a device is no study, store or weight file. Callers name the
    kind in their error.

    >>> path_kind("/"), path_kind("/no/such/path")
    ('a folder', None)
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "neither a file nor a folder"  # pragma: no cover - every POSIX type is above
