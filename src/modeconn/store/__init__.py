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

A store written by an older modeconn is upgraded in place when opened for writing, in one
transaction (:mod:`modeconn.store.schema` lists the versions); every row carries a checksum
of its values that :meth:`Store.integrity_check` verifies (:mod:`modeconn.store.integrity`).

Keys use weight hashes, not member ids: a renamed member with the same weights reuses its
rows, and a member whose weights changed never reuses a stale row. The ids stored beside
the hashes are those of the moment a row was written; the DataFrame readers label rows with
the ids of the current population instead, and leave out rows of weights no longer in it
(:mod:`modeconn.store.frames`).

Read-only: ``Store(path, readonly=True)`` never writes, and opens a store on a read-only
disk or in a folder the user cannot write (``modeconn status``, ``report`` and ``export``
use it there).

Crash safety: the file is in WAL mode and every write is one ``BEGIN IMMEDIATE``
transaction, so a writer killed at any instant (SIGKILL included) leaves the store
consistent; the next open rolls back the unfinished transaction. ``synchronous=NORMAL`` is
enough for that: in WAL mode it never corrupts the file, and a commit that has returned
survives the death of the process (it is in the operating system's cache). Only a power
loss or OS crash can forget the last few commits, which then read as units not yet done
and are recomputed — cheaper than an fsync per unit with ``FULL``.

The package: this module holds the :class:`Store`; :mod:`~modeconn.store.points` its rows,
:mod:`~modeconn.store.schema` the file format, :mod:`~modeconn.store.frames` the DataFrame
readers and export, :mod:`~modeconn.store.integrity` the checks.

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
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, SupportsIndex, TypeVar

import pandas as pd

from modeconn.errors import StoreError
from modeconn.store import frames, integrity
from modeconn.store.connect import open_readonly, open_writable
from modeconn.store.points import UNIT_WHERE as _UNIT_WHERE
from modeconn.store.points import (
    MemberPoint,
    PathPoint,
    UnitKey,
    _text,
    decode_loss,
    decode_losses,
    filter_value,
    insert_sql,
    member_row,
    path_row,
)
from modeconn.store.points import now as _now
from modeconn.store.schema import (
    ALPHA_DECIMALS,
    APPLICATION_ID,
    BUSY_TIMEOUT_S,
    CHECKPOINTS_KEY,
    CHECKSUM,
    MEMBER_COLUMNS,
    MEMBER_KEY,
    MEMBERS_KEY,
    PATH_COLUMNS,
    PATH_KEY,
    RESERVED_META_KEYS,
    SCHEMA_VERSION,
    STUDY_KEY,
    UNIT_COLUMNS,
    UNIT_KEY,
    reads,
)

__all__ = [
    "ALPHA_DECIMALS",
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "MemberPoint",
    "PathPoint",
    "Store",
    "UnitKey",
]

_P = TypeVar("_P", MemberPoint, PathPoint)


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
    readonly:
        ``True`` to open an existing store without ever writing it (SQLite ``mode=ro``),
        as ``status``, ``report`` and ``export`` do where the store cannot be written. An
        older store is read as it is (not upgraded); a write raises ``StoreError``.

    Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        study: str | None = None,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = bool(readonly)
        self._conn: sqlite3.Connection | None = None
        if study is not None:
            _text("study", study)
        self._conn = (
            open_readonly(self.path) if self.readonly else open_writable(self.path, create=create)
        )
        try:
            self.study: str | None = self._check_study(study)
        except BaseException:
            self.close()
            raise

    @reads
    def _check_study(self, study: str | None) -> str | None:
        stored = self.get_meta(STUDY_KEY)
        if study is None or stored == study or (stored is None and self.readonly):
            return stored
        if stored is None:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (STUDY_KEY, study)
                )
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (STUDY_KEY,))
                stored = str(row.fetchone()[0])
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
        if self.readonly:
            raise StoreError(
                f"store {self.path} is open read-only; open it with readonly=False (where it "
                "can be written) to change it"
            )
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
        mode = ", readonly" if self.readonly else ""
        return f"Store({str(self.path)!r}, study={self.study!r}{mode}) [{state}]"

    # -- meta ------------------------------------------------------------------------

    @reads
    def get_meta(self, key: str) -> str | None:
        """A free-form record of the ``meta`` table (e.g. the study's plan), or None.

        The store's own records read here too: ``"study_name"`` and ``"created"``.
        """
        conn = self._connection()
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a free-form ``meta`` record (last write wins), in its own transaction.

        Two records are read by the store itself and checked here: ``"members"`` (the
        current population, a JSON list of ``{"id", "hash", ...}`` with distinct hashes)
        and ``"checkpoints"`` (the same for training checkpoints); they decide which rows
        the DataFrame readers show, under which ids.
        """
        _text("meta key", key)
        if key in RESERVED_META_KEYS:
            raise StoreError(f"meta key {key!r} belongs to the store itself; pick another key name")
        if not isinstance(value, str):
            raise StoreError(
                f"meta value of {key!r} must be a string (JSON-encode it); got "
                f"{type(value).__name__}"
            )
        if key in (MEMBERS_KEY, CHECKPOINTS_KEY):  # the records rows are labelled by
            frames.check_record(self.path, key, value)
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def population(self, *, distinct: bool = True) -> list[dict[str, Any]] | None:
        """The current population's members (``id``, ``hash``, metadata), as the last sweep
        recorded them, or None; see :func:`modeconn.store.frames.population`."""
        return frames.population(self, distinct=distinct)

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

    @reads
    def get_value(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record kept under (kind, key), or None."""
        conn = self._connection()
        row = conn.execute(
            "SELECT value FROM analysis_values WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    @reads
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
            rows.append(member_row(p))
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(insert_sql("member_points", _MEMBER_STORED, "REPLACE"), rows)

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
            for name in ("member_a", "member_b", *UNIT_KEY):
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
            rows.append(path_row(p))
        with self._transaction() as conn:
            conn.execute(f"DELETE FROM path_points WHERE {_UNIT_WHERE}", key._values())
            conn.executemany(insert_sql("path_points", _PATH_STORED), rows)
            conn.execute(
                insert_sql("units", UNIT_COLUMNS, "REPLACE"),
                (key.member_a, key.member_b, *key._values(), len(rows), _now()),
            )

    # -- reads -----------------------------------------------------------------------

    @reads
    def has_unit(self, key: UnitKey) -> bool:
        """Whether ``key`` is complete in the store (member ids are not compared)."""
        conn = self._connection()
        row = conn.execute(f"SELECT 1 FROM units WHERE {_UNIT_WHERE}", key._values()).fetchone()
        return row is not None

    @reads
    def done_units(self) -> set[UnitKey]:
        """Every completed unit, with the member ids it was written under."""
        conn = self._connection()
        cursor = conn.execute(f"SELECT member_a, member_b, {', '.join(UNIT_KEY)} FROM units")
        names = ("member_a", "member_b", *UNIT_KEY)
        return {UnitKey(**dict(zip(names, row, strict=True))) for row in cursor}

    @reads
    def member_point(
        self, member_hash: str, split: str, sample_seed: SupportsIndex, sample_size: SupportsIndex
    ) -> MemberPoint | None:
        """The member point with this key, or None."""
        conn = self._connection()
        where = " AND ".join(f"{name} = ?" for name in MEMBER_KEY)
        values = (member_hash, split, sample_seed, sample_size)
        row = conn.execute(
            f"SELECT {', '.join(MEMBER_COLUMNS)} FROM member_points WHERE {where}",
            [filter_value(name, v) for name, v in zip(MEMBER_KEY, values, strict=True)],
        ).fetchone()
        return None if row is None else self._point(MemberPoint, MEMBER_COLUMNS, row)

    @reads
    def unit_points(self, key: UnitKey) -> list[PathPoint]:
        """The points of one unit sorted by α (empty when the unit is not done)."""
        conn = self._connection()
        cursor = conn.execute(
            f"SELECT {', '.join(PATH_COLUMNS)} FROM path_points WHERE {_UNIT_WHERE} ORDER BY alpha",
            key._values(),
        )
        return [self._point(PathPoint, PATH_COLUMNS, row) for row in cursor]

    @staticmethod
    def _point(cls: type[_P], columns: Sequence[str], row: Sequence[Any]) -> _P:
        values = dict(zip(columns, row, strict=True))
        values["loss"] = decode_loss(values["loss"])
        values["metrics"] = json.loads(values["metrics"])
        values["example_losses"] = decode_losses(values["example_losses"])
        return cls(**values)

    def member_points(
        self, *, with_examples: bool = False, rows: frames.Rows = "population", **filters: Any
    ) -> pd.DataFrame:
        """Member points as a DataFrame, one row per point, sorted by key.

        Columns: member_id, member_hash, split, sample_seed, sample_size, loss,
        n_examples, created, then one float column per metric name (NaN where a row lacks
        that metric), then ``example_losses`` (float32 arrays or None) if
        ``with_examples``. Filters are equalities on member_id or a key column, e.g.
        ``split="mnli"``; a list, tuple or set means "any of".

        ``rows="population"`` (the default, once a sweep has recorded its members): the
        rows of the current population's weights, under the members' current ids;
        ``rows="all"``: every row, under the ids it was written with
        (:mod:`modeconn.store.frames`).
        """
        return frames.frame(
            self,
            "member_points",
            MEMBER_COLUMNS,
            MEMBER_KEY,
            with_examples=with_examples,
            filters=filters,
            rows=rows,
        )

    def path_points(
        self, *, with_examples: bool = False, rows: frames.Rows = "population", **filters: Any
    ) -> pd.DataFrame:
        """Path points as a DataFrame, one row per point, sorted by unit key then α.

        Columns: member_a, member_b, hash_a, hash_b, path, grid, alpha, split,
        sample_seed, sample_size, loss, n_examples, created, then one float column per
        metric name, then ``example_losses`` if ``with_examples``. Filters as in
        ``member_points``, on member_a, member_b or any key column (alpha is rounded to
        ``ALPHA_DECIMALS`` before comparing). ``rows`` as in ``member_points``; in the
        population view a pair swept both ways shows once, oriented by id.
        """
        return frames.frame(
            self,
            "path_points",
            PATH_COLUMNS,
            PATH_KEY,
            with_examples=with_examples,
            filters=filters,
            rows=rows,
        )

    @reads
    def counts(self) -> dict[str, int]:
        """Rows per table: member_points, path_points, units and analysis_values."""
        with self._snapshot() as conn:
            return {
                table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in ("member_points", "path_points", "units", "analysis_values")
            }

    @reads
    def integrity_check(self) -> str:
        """``"ok"``, or what is wrong, one problem per line.

        Runs SQLite's own ``PRAGMA integrity_check``, then the store's invariant (every
        unit marker has exactly ``n_points`` path rows, and no path row lacks a marker),
        then every row's checksum (:mod:`modeconn.store.integrity`).
        """
        with self._snapshot() as conn:
            found = integrity.problems(conn)
        return "\n".join(found) if found else "ok"

    # -- export ----------------------------------------------------------------------

    def export(
        self,
        directory: str | os.PathLike[str],
        *,
        format: Literal["csv", "parquet"],
        with_examples: bool = False,
        rows: frames.Rows = "population",
    ) -> list[Path]:
        """Write ``member_points``, ``path_points`` and ``analysis_values`` files.

        The tables are the DataFrames of ``member_points()`` / ``path_points()`` (``rows``
        as there: by default the current population under its current ids) and the
        analysis records (kind, key, value as JSON text), read from one snapshot. Each
        file is written to a temporary name and moved into place, so a reader sees the old
        file or the new one, never half of one. Per-example losses (``with_examples``)
        need Parquet. Returns the three paths.
        """
        return frames.export(self, directory, format=format, with_examples=with_examples, rows=rows)


_MEMBER_STORED = (*MEMBER_COLUMNS, CHECKSUM)  # the columns an insert fills, in row order
_PATH_STORED = (*PATH_COLUMNS, CHECKSUM)
