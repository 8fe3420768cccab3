"""The store's file format: tables, keys, schema versions, and how a file is recognised.

A modeconn store is an SQLite file marked with ``PRAGMA application_id = APPLICATION_ID``
and versioned with ``PRAGMA user_version = SCHEMA_VERSION``. The versions so far:

1. ``meta``, ``member_points``, ``path_points`` and ``units``.
2. adds ``analysis_values`` (records of analyses beyond the paths).
3. adds a ``checksum`` column to ``member_points`` and ``path_points``: a BLAKE2b digest of
   every stored value of the row but its ``created`` time (:func:`row_checksum`), which
   :meth:`Store.integrity_check <modeconn.store.Store.integrity_check>` recomputes, so a
   loss changed on disk after it was written is found.

An older store is brought up to date in place, in one transaction, when it is opened for
writing (:data:`MIGRATIONS`); one opened read-only is read as it is.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from modeconn.errors import StoreError

APPLICATION_ID = 0x4D434F4E  # b"MCON": marks a SQLite file as a modeconn store
SCHEMA_VERSION = 3  # PRAGMA user_version; bump with a migration when the tables change
OLDEST_READABLE = 2  # a read-only store must have analysis_values (version 2 or later)
ALPHA_DECIMALS = 12  # α is stored rounded, so keys compare exactly
BUSY_TIMEOUT_S = 30.0  # how long a write waits for a reader's checkpoint or a stray writer

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
STUDY_KEY = "study_name"  # meta keys the store itself owns; set_meta refuses them
RESERVED_META_KEYS = frozenset((STUDY_KEY, "created"))
MEMBERS_KEY = "members"  # meta: [{"id", "hash", ...}] of the current population
CHECKPOINTS_KEY = "checkpoints"  # meta: [{"id", "hash", ...}] of training checkpoints

# Column order of each table: the dataclasses, the SQL and the DataFrames all follow these.
MEMBER_KEY = ("member_hash", "split", "sample_seed", "sample_size")
MEMBER_COLUMNS = (
    "member_id",
    *MEMBER_KEY,
    "loss",
    "metrics",
    "example_losses",
    "n_examples",
    "created",
)
UNIT_KEY = ("hash_a", "hash_b", "path", "grid", "split", "sample_seed", "sample_size")
PATH_KEY = (*UNIT_KEY, "alpha")
PATH_COLUMNS = (
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
UNIT_COLUMNS = ("member_a", "member_b", *UNIT_KEY, "n_points", "completed")
CHECKSUM = "checksum"
# the columns a row's checksum covers: all of them but the time it was written
CHECKED = {
    "member_points": tuple(c for c in MEMBER_COLUMNS if c != "created"),
    "path_points": tuple(c for c in PATH_COLUMNS if c != "created"),
}
FILTERS = {
    "member_points": frozenset(("member_id", *MEMBER_KEY)),
    "path_points": frozenset(("member_a", "member_b", *PATH_KEY)),
}
DTYPES = {
    "alpha": "float64",
    "loss": "float64",
    "created": "float64",
    "sample_seed": "int64",
    "sample_size": "int64",
    "n_examples": "int64",
}  # DataFrame dtypes; every other column is text
# A metric may not be called like a column: it becomes a column of its own when read.
RESERVED_METRIC_NAMES = frozenset(MEMBER_COLUMNS + PATH_COLUMNS + UNIT_COLUMNS + (CHECKSUM,))

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
# index serves both point look-ups and "all rows of this unit". The checksum is nullable
# only because SQLite's ALTER TABLE cannot add a NOT NULL column to a version-2 table;
# every write fills it.
SCHEMA = (
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
        checksum TEXT,
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
        checksum TEXT,
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


# --------------------------------------------------------------------------- checksums


def row_checksum(values: Sequence[object]) -> str:
    """A 16-hex-digit BLAKE2b digest of a row's stored values, in column order.

    Each value is tagged with its type and length-prefixed, so no two different rows
    share a byte stream; a float is written exactly (``float.hex``) after ``+ 0.0``
    (SQLite may store −0.0 as the integer 0 and read it back as 0.0).

    >>> row_checksum(["m0", 0.5, None, b"\\x00"]) == row_checksum(["m0", 0.5, None, b"\\x00"])
    True
    >>> row_checksum(["m0", 0.5]) == row_checksum(["m0", 0.25])
    False
    """
    digest = hashlib.blake2b(digest_size=8)
    for value in values:
        if value is None:
            digest.update(b"N")
            continue
        if isinstance(value, float):
            raw = (value + 0.0).hex().encode() if math.isfinite(value) else repr(value).encode()
            tag = b"F"
        elif isinstance(value, int):
            raw, tag = str(value).encode(), b"I"
        elif isinstance(value, str):
            raw, tag = value.encode("utf-8"), b"S"
        elif isinstance(value, bytes | bytearray | memoryview):
            raw, tag = bytes(value), b"B"
        else:
            raise StoreError(f"a stored value of type {type(value).__name__} has no checksum")
        digest.update(tag + len(raw).to_bytes(8, "little") + raw)
    return digest.hexdigest()


def _backfill_checksums(conn: sqlite3.Connection) -> None:
    """Version 2 → 3: add the checksum column and fill it for every existing row."""
    for table, columns in CHECKED.items():
        present = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
        if CHECKSUM not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {CHECKSUM} TEXT")
        rows = conn.execute(f"SELECT rowid, {', '.join(columns)} FROM {table}").fetchall()
        conn.executemany(
            f"UPDATE {table} SET {CHECKSUM} = ? WHERE rowid = ?",
            [(row_checksum(row[1:]), row[0]) for row in rows],
        )


def _statements(*sql: str) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        for statement in sql:
            conn.execute(statement)

    return run


# version → what brings a store of that version to the next one, inside one transaction
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _statements(*_VALUES_SCHEMA),
    2: _backfill_checksums,
}


# --------------------------------------------------------------------------- read errors

_Args = ParamSpec("_Args")
_R = TypeVar("_R")


def reads(method: Callable[_Args, _R]) -> Callable[_Args, _R]:
    """A read that meets a damaged file raises ``StoreError`` naming it, not sqlite3's error.

    The first argument is the store (anything with a ``path``). The header probe at
    opening cannot see a damaged page inside the file; the first read of that page can
    ("database disk image is malformed").
    """

    @wraps(method)
    def read(*args: _Args.args, **kwargs: _Args.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as e:
            path: Any = getattr(args[0], "path", "?")
            if isinstance(e, sqlite3.OperationalError):  # locked, I/O: the file may be fine
                raise StoreError(
                    f"reading store {path} failed: {e}; check that it is on a local, readable disk"
                ) from e
            raise StoreError(
                f"store {path} is damaged ({e}); nothing was written to it: restore a "
                "copy, or move it aside and re-run into a new output directory"
            ) from e

    return read
