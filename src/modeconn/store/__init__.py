"""The results store: one SQLite file holding every evaluated point of a study.

A sweep evaluates the loss along linear paths θ(α) = α·θA + (1−α)·θB between pairs of
members, and each member on its own (the endpoints, once per member and split, never
once per pair). Both kinds of result land here, keyed by what produced them:

* ``member_points`` — one row per (member_hash, split, sample_seed, sample_size).
* ``path_points`` — one row per (hash_a, hash_b, path, grid, split, sample_seed,
  sample_size, alpha). α is rounded to ``ALPHA_DECIMALS`` decimals so that 0.1 + 0.2 and
  0.3 are one key.
* ``units`` — one marker per completed unit of work (a pair × path × grid × split ×
  sample), written in the same transaction as the unit's path rows. A unit is therefore
  either completely present or absent, and ``done_units()`` is what a resumed sweep skips.
* ``meta`` — key → text records: the study name the store belongs to, and whatever a
  caller keeps with ``set_meta`` (e.g. the study's plan as JSON).
* ``analysis_values`` — one JSON record per (kind, key): results of analyses beyond the
  paths, each keyed by what produced it (e.g. ``kind="sharpness"``, key = member hash,
  split and settings; ``kind="euclidean"``, key = the two hashes), written one record per
  transaction so a killed analysis resumes from the last record (``put_value``).

A store written by an older modeconn (schema version 1, without ``analysis_values``) is
upgraded in place when opened: the table is added in one transaction, and nothing else
changes.

Keys use weight hashes, not member ids: a renamed member with the same weights reuses its
rows, and a member whose weights changed never reuses a stale row. Member ids are stored
beside the hashes for reading.

Crash safety: the file is in WAL mode and every write is one ``BEGIN IMMEDIATE``
transaction, so a writer killed at any instant (SIGKILL included) leaves the store
consistent; the next open rolls back the unfinished transaction. ``synchronous=NORMAL`` is
enough for that: in WAL mode it never corrupts the file, and a commit that has returned
survives the death of the process (it is in the operating system's cache). Only a power
loss or OS crash can forget the last few commits, which then read as units not yet done
and are recomputed — cheaper than an fsync per unit with ``FULL``.

Concurrency: one writing process per store; any number of readers may open it at the same
time (WAL readers see the last committed state and never block the writer). WAL needs
shared memory, so keep the file on a local disk, not a network filesystem. A ``Store`` is
for the thread that opened it.

>>> import tempfile, pathlib
>>> from modeconn.store import MemberPoint, Store
>>> with tempfile.TemporaryDirectory() as tmp, Store(pathlib.Path(tmp) / "r.sqlite") as s:
...     s.write_member_points([MemberPoint(member_id="seed0", member_hash="ab12",
...         split="mnli", sample_seed=0, sample_size=64, loss=0.41,
...         metrics={"accuracy": 0.85}, n_examples=64)])
...     s.member_point("ab12", "mnli", 0, 64).metrics
{'accuracy': 0.85}
"""

from __future__ import annotations

import json
import math
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import wraps
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, ParamSpec, Self, SupportsIndex, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from modeconn._atomic import open_atomic
from modeconn.errors import StoreError

__all__ = [
    "ALPHA_DECIMALS",
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "MemberPoint",
    "PathPoint",
    "Store",
    "UnitKey",
]

APPLICATION_ID = 0x4D434F4E  # b"MCON": marks a SQLite file as a modeconn store
SCHEMA_VERSION = 2  # PRAGMA user_version; bump with a migration when the tables change
ALPHA_DECIMALS = 12  # α is stored rounded, so keys compare exactly
BUSY_TIMEOUT_S = 30.0  # how long a write waits for a reader's checkpoint or a stray writer

_SQLITE_MAGIC = b"SQLite format 3\x00"
_STUDY_KEY = "study_name"  # meta keys the store itself owns; set_meta refuses them
_RESERVED_META_KEYS = frozenset((_STUDY_KEY, "created"))
_HEADER_SIZE = 100

# Column order of each table: the dataclasses, the SQL and the DataFrames all follow these.
_MEMBER_KEY = ("member_hash", "split", "sample_seed", "sample_size")
_MEMBER_COLUMNS = (
    "member_id",
    *_MEMBER_KEY,
    "loss",
    "metrics",
    "example_losses",
    "n_examples",
    "created",
)
_UNIT_KEY = ("hash_a", "hash_b", "path", "grid", "split", "sample_seed", "sample_size")
_PATH_KEY = (*_UNIT_KEY, "alpha")
_PATH_COLUMNS = (
    "member_a",
    "member_b",
    "hash_a",
    "hash_b",
    "path",
    "grid",
    "alpha",
    "split",
    "sample_seed",
    "sample_size",
    "loss",
    "metrics",
    "example_losses",
    "n_examples",
    "created",
)
_UNIT_COLUMNS = ("member_a", "member_b", *_UNIT_KEY, "n_points", "completed")
_FILTERS = {
    "member_points": frozenset(("member_id", *_MEMBER_KEY)),
    "path_points": frozenset(("member_a", "member_b", *_PATH_KEY)),
}
_DTYPES = {
    "alpha": "float64",
    "loss": "float64",
    "created": "float64",
    "sample_seed": "int64",
    "sample_size": "int64",
    "n_examples": "int64",
}  # DataFrame dtypes; every other column is text
# A metric may not be called like a column: it becomes a column of its own when read.
_RESERVED_METRIC_NAMES = frozenset(_MEMBER_COLUMNS + _PATH_COLUMNS + _UNIT_COLUMNS)

_VALUES_SCHEMA = (
    """CREATE TABLE analysis_values (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (kind, key)
    ) STRICT""",
)

# The primary key of path_points lists the unit key first and alpha last, so that one
# index serves both point look-ups and "all rows of this unit".
_SCHEMA = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT""",
    """CREATE TABLE member_points (
        member_id TEXT NOT NULL,
        member_hash TEXT NOT NULL,
        split TEXT NOT NULL,
        sample_seed INTEGER NOT NULL,
        sample_size INTEGER NOT NULL,
        loss REAL,
        metrics TEXT NOT NULL,
        example_losses BLOB,
        n_examples INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (member_hash, split, sample_seed, sample_size)
    ) STRICT""",
    """CREATE TABLE path_points (
        member_a TEXT NOT NULL,
        member_b TEXT NOT NULL,
        hash_a TEXT NOT NULL,
        hash_b TEXT NOT NULL,
        path TEXT NOT NULL,
        grid TEXT NOT NULL,
        alpha REAL NOT NULL,
        split TEXT NOT NULL,
        sample_seed INTEGER NOT NULL,
        sample_size INTEGER NOT NULL,
        loss REAL,
        metrics TEXT NOT NULL,
        example_losses BLOB,
        n_examples INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (hash_a, hash_b, path, grid, split, sample_seed, sample_size, alpha)
    ) STRICT""",
    """CREATE TABLE units (
        member_a TEXT NOT NULL,
        member_b TEXT NOT NULL,
        hash_a TEXT NOT NULL,
        hash_b TEXT NOT NULL,
        path TEXT NOT NULL,
        grid TEXT NOT NULL,
        split TEXT NOT NULL,
        sample_seed INTEGER NOT NULL,
        sample_size INTEGER NOT NULL,
        n_points INTEGER NOT NULL,
        completed REAL NOT NULL,
        PRIMARY KEY (hash_a, hash_b, path, grid, split, sample_seed, sample_size)
    ) STRICT""",
    *_VALUES_SCHEMA,
)
# version → statements that bring a store of that version to the next one
_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _VALUES_SCHEMA}


def _now() -> float:
    """Wall-clock seconds since the epoch (a seam for tests)."""
    return time.time()


# --------------------------------------------------------------------------- validation


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{name} must be a non-empty string; got {value!r}")
    return value


def _integer(name: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise StoreError(f"{name} must be an integer; got the bool {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise StoreError(f"{name} must be an integer; got {value!r}") from None
    if minimum is not None and number < minimum:
        raise StoreError(f"{name} must be >= {minimum}; got {number}")
    return number


def _real(name: str, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StoreError(f"{name} must be a number; got {value!r}") from None


def _round_alpha(value: object) -> float:
    alpha = _real("alpha", value)
    if not math.isfinite(alpha):
        raise StoreError(f"alpha must be finite; got {alpha}")
    return round(alpha, ALPHA_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _metrics(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise StoreError(f"metrics must be a mapping name -> float; got {type(value).__name__}")
    metrics: dict[str, float] = {}
    for name in sorted(value, key=str):
        _text("a metric name", name)
        if name in _RESERVED_METRIC_NAMES:
            raise StoreError(
                f"metric name {name!r} clashes with a store column of the same name; "
                f"rename the metric (e.g. {name + '_metric'!r})"
            )
        metrics[name] = _real(f"metric {name!r}", value[name])
    return metrics


def _example_losses(value: object, n_examples: int) -> npt.NDArray[np.float32] | None:
    if value is None:
        return None
    # Always a private read-only copy: the dataclass is frozen, and the caller's array
    # (say a view into a torch buffer) must neither change under us nor be frozen by us.
    losses = np.array(value, dtype=np.float32, copy=True)
    if losses.ndim != 1:
        raise StoreError(f"example_losses must be 1-D (n_examples,); got shape {losses.shape}")
    if losses.shape[0] != n_examples:
        raise StoreError(
            f"example_losses has {losses.shape[0]} entries but n_examples is {n_examples}; "
            "pass one loss per evaluated example"
        )
    losses.setflags(write=False)
    return losses


def _same(a: object, b: object) -> bool:
    """Field equality that treats two NaNs, and equal arrays, as the same."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _points_equal(a: object, b: object) -> bool:
    return type(a) is type(b) and all(
        _same(getattr(a, f.name), getattr(b, f.name))
        for f in fields(a)  # type: ignore[arg-type]
    )


def _to_dict(point: MemberPoint | PathPoint) -> dict[str, Any]:
    out: dict[str, Any] = {f.name: getattr(point, f.name) for f in fields(point)}
    out["metrics"] = dict(point.metrics)
    losses = point.example_losses
    out["example_losses"] = None if losses is None else [float(x) for x in losses]
    return out


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, kw_only=True, eq=False)
class MemberPoint:
    """One member evaluated on one (sampled) split: a row of ``member_points``.

    ``sample_size`` is the number of examples the split was sampled down to (by
    ``sample_seed``); it is part of the key, so give "whole split" a fixed sentinel (0 by
    convention). ``loss`` may be NaN (a diverged evaluation), stored as NULL.
    ``example_losses`` is None or one float32 loss per evaluated example,
    shape ``(n_examples,)``. ``created`` defaults to the construction time.
    """

    member_id: str
    member_hash: str
    split: str
    sample_seed: int
    sample_size: int
    loss: float
    metrics: dict[str, float]
    example_losses: npt.NDArray[np.float32] | None = None
    n_examples: int
    created: float = field(default_factory=_now)

    def __post_init__(self) -> None:
        n_examples = _integer("n_examples", self.n_examples, minimum=0)
        values = {
            "member_id": _text("member_id", self.member_id),
            "member_hash": _text("member_hash", self.member_hash),
            "split": _text("split", self.split),
            "sample_seed": _integer("sample_seed", self.sample_seed),
            "sample_size": _integer("sample_size", self.sample_size, minimum=0),
            "loss": _real("loss", self.loss),
            "metrics": _metrics(self.metrics),
            "example_losses": _example_losses(self.example_losses, n_examples),
            "n_examples": n_examples,
            "created": _real("created", self.created),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def key(self) -> tuple[str, str, int, int]:
        """The primary key: (member_hash, split, sample_seed, sample_size)."""
        return (self.member_hash, self.split, self.sample_seed, self.sample_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (example losses as a list of floats or None)."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemberPoint:
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return _points_equal(self, other)

    __hash__ = None  # type: ignore[assignment]  # holds a dict and an array


@dataclass(frozen=True, kw_only=True)
class UnitKey:
    """One unit of work: a pair × path × grid × split × sample.

    Equality and hashing use the key fields only (the weight hashes, not the member ids),
    so a planned key is found in ``done_units()`` whatever the members are called now.
    ``member_a`` / ``member_b`` ride along to be written into the unit marker. The pair is
    ordered: (A, B) and (B, A) are different units, with α running opposite ways.
    """

    member_a: str = field(compare=False)
    member_b: str = field(compare=False)
    hash_a: str
    hash_b: str
    path: str
    grid: str
    split: str
    sample_seed: int
    sample_size: int

    def __post_init__(self) -> None:
        for name in ("member_a", "member_b", "hash_a", "hash_b", "path", "grid", "split"):
            object.__setattr__(self, name, _text(name, getattr(self, name)))
        object.__setattr__(self, "sample_seed", _integer("sample_seed", self.sample_seed))
        object.__setattr__(
            self, "sample_size", _integer("sample_size", self.sample_size, minimum=0)
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitKey:
        return cls(**data)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _UNIT_KEY)


@dataclass(frozen=True, kw_only=True, eq=False)
class PathPoint:
    """One point θ(α) of a path between members A and B on one split: a row of
    ``path_points``.

    ``alpha`` is rounded to ``ALPHA_DECIMALS`` decimals on construction, so the point
    holds exactly what the store keeps. ``path`` names the kind of path (``"linear"``),
    ``grid`` the α grid it belongs to (``"linear:11"``). The other fields are as in
    ``MemberPoint``.
    """

    member_a: str
    member_b: str
    hash_a: str
    hash_b: str
    path: str
    grid: str
    alpha: float
    split: str
    sample_seed: int
    sample_size: int
    loss: float
    metrics: dict[str, float]
    example_losses: npt.NDArray[np.float32] | None = None
    n_examples: int
    created: float = field(default_factory=_now)

    def __post_init__(self) -> None:
        n_examples = _integer("n_examples", self.n_examples, minimum=0)
        values: dict[str, object] = {
            name: _text(name, getattr(self, name))
            for name in ("member_a", "member_b", "hash_a", "hash_b", "path", "grid", "split")
        }
        values.update(
            alpha=_round_alpha(self.alpha),
            sample_seed=_integer("sample_seed", self.sample_seed),
            sample_size=_integer("sample_size", self.sample_size, minimum=0),
            loss=_real("loss", self.loss),
            metrics=_metrics(self.metrics),
            example_losses=_example_losses(self.example_losses, n_examples),
            n_examples=n_examples,
            created=_real("created", self.created),
        )
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def unit_key(self) -> UnitKey:
        """The unit this point belongs to."""
        return UnitKey(
            member_a=self.member_a,
            member_b=self.member_b,
            **{name: getattr(self, name) for name in _UNIT_KEY},
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (example losses as a list of floats or None)."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathPoint:
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return _points_equal(self, other)

    __hash__ = None  # type: ignore[assignment]  # holds a dict and an array


# --------------------------------------------------------------------------- encoding


def _encode_losses(losses: npt.NDArray[np.float32] | None) -> bytes | None:
    return None if losses is None else losses.astype("<f4", copy=False).tobytes()


def _decode_losses(blob: bytes | None) -> npt.NDArray[np.float32] | None:
    if blob is None:
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)  # a writable native copy


def _encode_loss(loss: float) -> float | None:
    return None if math.isnan(loss) else loss  # SQLite would store NaN as NULL anyway


def _decode_loss(loss: float | None) -> float:
    return math.nan if loss is None else float(loss)


def _encode_metrics(metrics: Mapping[str, float]) -> str:
    return json.dumps(metrics, sort_keys=True)  # NaN / Infinity survive as JSON5 tokens


def _member_row(p: MemberPoint) -> tuple[Any, ...]:
    return (
        p.member_id,
        p.member_hash,
        p.split,
        p.sample_seed,
        p.sample_size,
        _encode_loss(p.loss),
        _encode_metrics(p.metrics),
        _encode_losses(p.example_losses),
        p.n_examples,
        p.created,
    )


def _path_row(p: PathPoint) -> tuple[Any, ...]:
    return (
        p.member_a,
        p.member_b,
        p.hash_a,
        p.hash_b,
        p.path,
        p.grid,
        p.alpha,
        p.split,
        p.sample_seed,
        p.sample_size,
        _encode_loss(p.loss),
        _encode_metrics(p.metrics),
        _encode_losses(p.example_losses),
        p.n_examples,
        p.created,
    )


def _filter_value(column: str, value: object) -> object:
    """A look-up value in the form the column stores (numpy ints become ints, α rounded)."""
    if column == "alpha":
        return _round_alpha(value)
    if _DTYPES.get(column) == "int64":
        return _integer(column, value)
    return _text(column, value)


def _insert_sql(table: str, columns: Sequence[str], verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


_UNIT_WHERE = " AND ".join(f"{name} = ?" for name in _UNIT_KEY)
_P = TypeVar("_P", MemberPoint, PathPoint)


# --------------------------------------------------------------------------- opening


def _read_header(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(_HEADER_SIZE)
    except OSError as e:
        raise StoreError(f"cannot read store {path}: {e.strerror}; check its permissions") from e


_Args = ParamSpec("_Args")
_R = TypeVar("_R")


def _reads(method: Callable[_Args, _R]) -> Callable[_Args, _R]:
    """A read that meets a damaged file raises ``StoreError`` naming it, not sqlite3's error.

    The header probe at opening cannot see a damaged page inside the file; the first read
    of that page can ("database disk image is malformed").
    """

    @wraps(method)
    def read(*args: _Args.args, **kwargs: _Args.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as e:
            store = args[0]
            assert isinstance(store, Store)
            if isinstance(e, sqlite3.OperationalError):  # locked, I/O: the file may be fine
                raise StoreError(
                    f"reading store {store.path} failed: {e}; check that it is on a local, "
                    "readable disk"
                ) from e
            raise StoreError(
                f"store {store.path} is damaged ({e}); nothing was written to it: restore a "
                "copy, or move it aside and re-run into a new output directory"
            ) from e

    return read


def _foreign(path: Path, what: str) -> StoreError:
    return StoreError(
        f"{path} is {what}, not a modeconn results store; it was left untouched. "
        "Pass another path (another output directory or --store)"
    )


def _probe(path: Path) -> tuple[int, int, int]:
    """(application_id, user_version, number of schema objects), read without writing."""
    header = _read_header(path)
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise _foreign(path, "not an SQLite database")
    # The header's application_id (big-endian at byte 68) can lag behind an uncommitted
    # WAL, so it only settles "foreign" here; the exact values come from a read-only query.
    header_app = int.from_bytes(header[68:72], "big", signed=True)
    if header_app not in (0, APPLICATION_ID):
        raise _foreign(path, f"an SQLite database of another application (id {header_app:#x})")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            n_objects = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise _foreign(path, f"an unreadable SQLite database ({e})") from e
    return int(app), int(version), int(n_objects)


# --------------------------------------------------------------------------- the store


class Store:
    """A modeconn results store (one SQLite file), opened for reading and writing.

    Parameters
    ----------
    path:
        The SQLite file. Created (with its parent directories) when missing, unless
        ``create=False``. An existing file must be a modeconn store: a text file, another
        application's SQLite database, or a store written by a newer modeconn raises
        ``StoreError`` and is never modified.
    study:
        The study the store belongs to. A new store records it; a store recorded for
        another study raises ``StoreError``; a store with no study recorded adopts it.
        ``None`` skips the check.
    create:
        ``False`` to require an existing store (``StoreError`` when missing).

    Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, study: str | None = None, create: bool = True
    ) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        if study is not None:
            _text("study", study)
        self._conn = self._open(create=create)
        try:
            self.study: str | None = self._check_study(study)
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------

    def _open(self, *, create: bool) -> sqlite3.Connection:
        path = self.path
        if path.is_dir():
            raise StoreError(
                f"store {path} is a directory; pass a file path such as {path / 'results.sqlite'}"
            )
        fresh = not path.exists() or path.stat().st_size == 0
        if not path.exists():
            if not create:
                raise StoreError(
                    f"store {path} does not exist; check the path, or run the sweep to create it"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        if not fresh:
            app, version, n_objects = _probe(path)
            if app == APPLICATION_ID:
                self._check_version(version)
            elif n_objects:
                raise _foreign(path, "an SQLite database of another application (id 0)")
            else:
                fresh = True  # an empty SQLite file, e.g. left by a kill before our init
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(
                f"cannot open store {path}: {e}; check the path and permissions"
            ) from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"store {path} cannot use WAL mode (got journal_mode={mode}); "
                    "put it on a local disk, not a network filesystem"
                )
            conn.execute("PRAGMA synchronous = NORMAL")  # why NORMAL: see the module docs
            if fresh:
                self._initialize(conn)
            else:
                self._migrate(conn)
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(
                f"cannot open store {path}: {e}; check that the disk is local and writable"
            ) from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this modeconn "
                f"reads ({SCHEMA_VERSION}); upgrade modeconn, or use another --store"
            )
        if version < SCHEMA_VERSION and not all(
            v in _MIGRATIONS for v in range(version, SCHEMA_VERSION)
        ):
            raise StoreError(
                f"store {self.path} has schema version {version}, older than this modeconn "
                f"({SCHEMA_VERSION}) and with no migration; re-run into a new --store"
            )

    def _initialize(self, conn: sqlite3.Connection) -> None:
        """Create the tables, mark the file as ours and set the schema version, atomically.

        Two processes may race to create the same store: the second finds the work done
        inside its own write lock and stops.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            if app == APPLICATION_ID:
                conn.execute("ROLLBACK")
                self._check_version(conn.execute("PRAGMA user_version").fetchone()[0])
                return
            if app != 0 or conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                raise _foreign(self.path, "an SQLite database of another application")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO meta (key, value) VALUES ('created', ?)", (repr(_now()),))
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring a store of an older schema version up to this one, atomically."""
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another may have won
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @_reads
    def _check_study(self, study: str | None) -> str | None:
        conn = self._connection()
        stored = self.get_meta(_STUDY_KEY)
        if study is None or stored == study:
            return stored
        if stored is None:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (_STUDY_KEY, study)
                )
                stored = str(
                    conn.execute("SELECT value FROM meta WHERE key = ?", (_STUDY_KEY,)).fetchone()[
                        0
                    ]
                )
            if stored == study:
                return stored
        raise StoreError(
            f"store {self.path} belongs to study {stored!r}, not {study!r}; "
            "use another output directory or --store"
        )

    # -- plumbing --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed; open a new Store to use it")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits, or none of it (also on KeyboardInterrupt)."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise StoreError(
                    f"store {self.path} stayed locked for {BUSY_TIMEOUT_S:.0f} s: another "
                    "process is writing to it; only one sweep may write to a store at a time"
                ) from e
            raise StoreError(
                f"writing to store {self.path} failed: {e}; check free disk space and "
                "permissions (nothing of this write was kept)"
            ) from e
        except sqlite3.Error as e:
            raise StoreError(
                f"writing to store {self.path} failed: {e} (nothing of this write was kept)"
            ) from e

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close the file (idempotent). The last connection to close checkpoints the WAL."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"Store({str(self.path)!r}, study={self.study!r}) [{state}]"

    # -- meta ------------------------------------------------------------------------

    @_reads
    def get_meta(self, key: str) -> str | None:
        """A free-form record of the ``meta`` table (e.g. the study's plan), or None.

        The store's own records read here too: ``"study_name"`` and ``"created"``.
        """
        conn = self._connection()
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a free-form ``meta`` record (last write wins), in its own transaction."""
        _text("meta key", key)
        if key in _RESERVED_META_KEYS:
            raise StoreError(f"meta key {key!r} belongs to the store itself; pick another key name")
        if not isinstance(value, str):
            raise StoreError(
                f"meta value of {key!r} must be a string (JSON-encode it); got "
                f"{type(value).__name__}"
            )
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- analysis values -------------------------------------------------------------

    def put_value(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        """Keep one analysis record (a JSON-able mapping) under (kind, key); last write wins."""
        _text("value kind", kind)
        _text("value key", key)
        try:
            text = json.dumps(dict(value), allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise StoreError(
                f"analysis value {kind}/{key} must be a JSON-able mapping of finite numbers, "
                f"strings and lists (use None for a missing number): {e}"
            ) from None
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO analysis_values (kind, key, value, created) "
                "VALUES (?, ?, ?, ?)",
                (kind, key, text, _now()),
            )

    @_reads
    def get_value(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record kept under (kind, key), or None."""
        conn = self._connection()
        row = conn.execute(
            "SELECT value FROM analysis_values WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    @_reads
    def values(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every record of one kind, by key."""
        conn = self._connection()
        rows = conn.execute(
            "SELECT key, value FROM analysis_values WHERE kind = ? ORDER BY key", (kind,)
        ).fetchall()
        return {str(k): dict(json.loads(v)) for k, v in rows}

    # -- writes ----------------------------------------------------------------------

    def write_member_points(self, points: Sequence[MemberPoint]) -> None:
        """Write member points in one transaction; a point whose key exists replaces it.

        Replace, not ignore: the last write of a key wins, and no key is ever duplicated.
        Two points with the same key in one call raise ``StoreError``.
        """
        rows, seen = [], set()
        for p in points:
            if not isinstance(p, MemberPoint):
                raise StoreError(f"write_member_points takes MemberPoint; got {type(p).__name__}")
            if p.key in seen:
                raise StoreError(f"member point {p.key} appears twice in one write; keep one")
            seen.add(p.key)
            rows.append(_member_row(p))
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(_insert_sql("member_points", _MEMBER_COLUMNS, "REPLACE"), rows)

    def write_unit(self, key: UnitKey, points: Sequence[PathPoint]) -> None:
        """Write one unit — all its path points and its marker — in one transaction.

        Every point must belong to ``key`` (same member ids, hashes, path, grid, split and
        sample), with distinct α, and there must be at least one. Re-writing a unit
        replaces it whole: its old rows are deleted first, so a unit holds exactly the
        points of its last write. On any error nothing of the write is kept.
        """
        if not isinstance(key, UnitKey):
            raise StoreError(f"write_unit takes a UnitKey; got {type(key).__name__}")
        if not points:
            raise StoreError(f"unit {key} has no points; a unit needs at least one alpha")
        rows, alphas = [], set()
        for p in points:
            if not isinstance(p, PathPoint):
                raise StoreError(f"write_unit takes PathPoint; got {type(p).__name__}")
            for name in ("member_a", "member_b", *_UNIT_KEY):
                if getattr(p, name) != getattr(key, name):
                    raise StoreError(
                        f"a point at alpha={p.alpha} has {name}={getattr(p, name)!r} but its "
                        f"unit has {name}={getattr(key, name)!r}; write each unit's points "
                        "under their own UnitKey"
                    )
            if p.alpha in alphas:
                raise StoreError(
                    f"unit {key} has alpha={p.alpha} twice (after rounding to "
                    f"{ALPHA_DECIMALS} decimals); keep one point per alpha"
                )
            alphas.add(p.alpha)
            rows.append(_path_row(p))
        with self._transaction() as conn:
            conn.execute(f"DELETE FROM path_points WHERE {_UNIT_WHERE}", key._values())
            conn.executemany(_insert_sql("path_points", _PATH_COLUMNS), rows)
            conn.execute(
                _insert_sql("units", _UNIT_COLUMNS, "REPLACE"),
                (key.member_a, key.member_b, *key._values(), len(rows), _now()),
            )

    # -- reads -----------------------------------------------------------------------

    @_reads
    def has_unit(self, key: UnitKey) -> bool:
        """Whether ``key`` is complete in the store (member ids are not compared)."""
        conn = self._connection()
        row = conn.execute(f"SELECT 1 FROM units WHERE {_UNIT_WHERE}", key._values()).fetchone()
        return row is not None

    @_reads
    def done_units(self) -> set[UnitKey]:
        """Every completed unit, with the member ids it was written under."""
        conn = self._connection()
        cursor = conn.execute(f"SELECT member_a, member_b, {', '.join(_UNIT_KEY)} FROM units")
        names = ("member_a", "member_b", *_UNIT_KEY)
        return {UnitKey(**dict(zip(names, row, strict=True))) for row in cursor}

    @_reads
    def member_point(
        self, member_hash: str, split: str, sample_seed: SupportsIndex, sample_size: SupportsIndex
    ) -> MemberPoint | None:
        """The member point with this key, or None."""
        conn = self._connection()
        where = " AND ".join(f"{name} = ?" for name in _MEMBER_KEY)
        values = (member_hash, split, sample_seed, sample_size)
        row = conn.execute(
            f"SELECT {', '.join(_MEMBER_COLUMNS)} FROM member_points WHERE {where}",
            [_filter_value(name, v) for name, v in zip(_MEMBER_KEY, values, strict=True)],
        ).fetchone()
        return None if row is None else self._point(MemberPoint, _MEMBER_COLUMNS, row)

    @_reads
    def unit_points(self, key: UnitKey) -> list[PathPoint]:
        """The points of one unit sorted by α (empty when the unit is not done)."""
        conn = self._connection()
        cursor = conn.execute(
            f"SELECT {', '.join(_PATH_COLUMNS)} FROM path_points WHERE {_UNIT_WHERE} "
            "ORDER BY alpha",
            key._values(),
        )
        return [self._point(PathPoint, _PATH_COLUMNS, row) for row in cursor]

    @staticmethod
    def _point(cls: type[_P], columns: Sequence[str], row: Sequence[Any]) -> _P:
        values = dict(zip(columns, row, strict=True))
        values["loss"] = _decode_loss(values["loss"])
        values["metrics"] = json.loads(values["metrics"])
        values["example_losses"] = _decode_losses(values["example_losses"])
        return cls(**values)

    def member_points(self, *, with_examples: bool = False, **filters: Any) -> pd.DataFrame:
        """Member points as a DataFrame, one row per point, sorted by key.

        Columns: member_id, member_hash, split, sample_seed, sample_size, loss,
        n_examples, created, then one float column per metric name (NaN where a row lacks
        that metric), then ``example_losses`` (float32 arrays or None) if
        ``with_examples``. Filters are equalities on member_id or a key column, e.g.
        ``split="mnli"``; a list, tuple or set means "any of".
        """
        return self._frame("member_points", _MEMBER_COLUMNS, _MEMBER_KEY, with_examples, filters)

    def path_points(self, *, with_examples: bool = False, **filters: Any) -> pd.DataFrame:
        """Path points as a DataFrame, one row per point, sorted by unit key then α.

        Columns: member_a, member_b, hash_a, hash_b, path, grid, alpha, split,
        sample_seed, sample_size, loss, n_examples, created, then one float column per
        metric name, then ``example_losses`` if ``with_examples``. Filters as in
        ``member_points``, on member_a, member_b or any key column (alpha is rounded to
        ``ALPHA_DECIMALS`` before comparing).
        """
        return self._frame("path_points", _PATH_COLUMNS, _PATH_KEY, with_examples, filters)

    @_reads
    def _frame(
        self,
        table: str,
        columns: Sequence[str],
        order: Sequence[str],
        with_examples: bool,
        filters: Mapping[str, Any],
    ) -> pd.DataFrame:
        conn = self._connection()
        where, params = self._where(table, filters)
        selected = [c for c in columns if c != "example_losses" or with_examples]
        cursor = conn.execute(
            f"SELECT {', '.join(selected)} FROM {table}{where} ORDER BY {', '.join(order)}",
            params,
        )
        data: dict[str, list[Any]] = {c: [] for c in selected}
        for row in cursor:
            for name, value in zip(selected, row, strict=True):
                data[name].append(value)
        metric_rows: list[dict[str, float]] = [json.loads(m) for m in data.pop("metrics")]
        blobs = data.pop("example_losses", None)
        # One Series per column, built once: NULL losses read as NaN, empty frames keep dtypes.
        out: dict[str, pd.Series] = {
            name: pd.Series(values, dtype=_DTYPES.get(name, str)) for name, values in data.items()
        }
        for metric in sorted({name for metrics in metric_rows for name in metrics}):
            out[metric] = pd.Series([m.get(metric, math.nan) for m in metric_rows], dtype="float64")
        if blobs is not None:
            out["example_losses"] = pd.Series([_decode_losses(b) for b in blobs], dtype=object)
        return pd.DataFrame(out)

    @staticmethod
    def _where(table: str, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        allowed = _FILTERS[table]
        clauses, params = [], []
        for name, value in filters.items():
            if name not in allowed:
                raise StoreError(
                    f"cannot filter {table} by {name!r}; filter by one of {sorted(allowed)}"
                )
            many = isinstance(value, list | tuple | set | frozenset)
            values = [_filter_value(name, v) for v in (value if many else [value])]
            if not values:
                clauses.append("0")  # "any of nothing" matches no row
            elif len(values) == 1:
                clauses.append(f"{name} = ?")
            else:
                clauses.append(f"{name} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params

    @_reads
    def counts(self) -> dict[str, int]:
        """Rows per table: member_points, path_points, units and analysis_values."""
        with self._snapshot() as conn:
            return {
                table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in ("member_points", "path_points", "units", "analysis_values")
            }

    @_reads
    def integrity_check(self) -> str:
        """``"ok"``, or what is wrong, one problem per line.

        Runs SQLite's own ``PRAGMA integrity_check`` and then the store's invariant: every
        unit marker has exactly ``n_points`` path rows, and no path row lacks a marker.
        """
        with self._snapshot() as conn:
            problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                return "\n".join(problems)
            join = " AND ".join(f"p.{c} = u.{c}" for c in _UNIT_KEY)
            orphans = conn.execute(
                "SELECT count(*) FROM path_points p WHERE NOT EXISTS "
                f"(SELECT 1 FROM units u WHERE {join})"
            ).fetchone()[0]
            if orphans:
                problems.append(f"{orphans} path_points rows belong to no unit marker")
            short = conn.execute(
                f"SELECT {', '.join('u.' + c for c in _UNIT_KEY)}, u.n_points, "
                f"(SELECT count(*) FROM path_points p WHERE {join}) AS n FROM units u "
                "WHERE n != u.n_points"
            ).fetchall()
            for *key, expected, found in short:
                problems.append(
                    f"unit {dict(zip(_UNIT_KEY, key, strict=True))} has {found} path rows, "
                    f"its marker says {expected}"
                )
        return "ok" if problems == ["ok"] else "\n".join(problems[1:])

    # -- export ----------------------------------------------------------------------

    def export(
        self,
        directory: str | os.PathLike[str],
        *,
        format: Literal["csv", "parquet"],
        with_examples: bool = False,
    ) -> list[Path]:
        """Write ``member_points``, ``path_points`` and ``analysis_values`` files.

        The tables are the DataFrames of ``member_points()`` / ``path_points()`` and the
        analysis records (kind, key, value as JSON text), read from one snapshot. Each
        file is written to a temporary name and moved into place, so a reader sees the old
        file or the new one, never half of one. Per-example losses (``with_examples``)
        need Parquet. Returns the three paths.
        """
        if format not in ("csv", "parquet"):
            raise StoreError(f"export format must be 'csv' or 'parquet'; got {format!r}")
        if with_examples and format == "csv":
            raise StoreError("CSV cannot hold per-example losses; use format='parquet'")
        out_dir = Path(directory)
        out_dir.mkdir(parents=True, exist_ok=True)
        with self._snapshot():
            tables = {
                "member_points": self.member_points(with_examples=with_examples),
                "path_points": self.path_points(with_examples=with_examples),
                "analysis_values": pd.DataFrame(
                    self._connection()
                    .execute("SELECT kind, key, value, created FROM analysis_values ORDER BY 1, 2")
                    .fetchall(),
                    columns=["kind", "key", "value", "created"],
                ),
            }
        written = []
        for name, frame in tables.items():
            target = out_dir / f"{name}.{format}"
            _atomic_write(target, frame, format)
            written.append(target)
        return written


def _atomic_write(target: Path, frame: pd.DataFrame, format: Literal["csv", "parquet"]) -> None:
    """Write ``frame`` as CSV or Parquet through :func:`modeconn._atomic.open_atomic`."""
    with open_atomic(target) as handle:
        if format == "csv":
            handle.write(frame.to_csv(index=False).encode("utf-8"))
        else:
            frame.to_parquet(handle, index=False)
