"""Opening a store file: create it, recognise it, upgrade it, or read it without writing.

An existing file is probed read-only before anything is written to it (:func:`probe`), so
a text file, another application's SQLite database or a store of a newer modeconn is
refused untouched. A writable store is put in WAL mode and upgraded in place to
``SCHEMA_VERSION``; a read-only one (:func:`open_readonly`) is read as it is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from modeconn.errors import StoreError, path_kind
from modeconn.store.points import now
from modeconn.store.schema import (
    APPLICATION_ID,
    BUSY_TIMEOUT_S,
    HEADER_SIZE,
    MIGRATIONS,
    OLDEST_READABLE,
    SCHEMA,
    SCHEMA_VERSION,
    SQLITE_MAGIC,
)


def foreign(path: Path, what: str) -> StoreError:
    return StoreError(
        f"{path} is {what}, not a modeconn results store; it was left untouched. "
        "Pass another path (another output directory or --store)"
    )


def _read_header(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(HEADER_SIZE)
    except OSError as e:
        raise StoreError(f"cannot read store {path}: {e.strerror}; check its permissions") from e


_CANNOT_INIT = (8, 14)  # SQLITE_READONLY, SQLITE_CANTOPEN: the -shm index cannot be made


def connect_readonly(path: Path, *, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection that can never write ``path``, even where its folder is read-only.

    ``mode=ro`` first: it sees a live writer's commits. Reading a WAL-mode file that way
    needs its ``-shm`` index, which SQLite cannot create in a folder it may not write (or
    on a read-only disk); the file is then opened ``immutable=1``, which is exact when no
    ``-wal`` file holds commits not yet folded into the database — and refused otherwise.
    """
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        return conn
    except sqlite3.OperationalError as e:
        conn.close()
        if getattr(e, "sqlite_errorcode", 0) & 0xFF not in _CANNOT_INIT:
            raise
        reason = str(e)
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(
            f"store {path} cannot be read here ({reason}): its folder is read-only and "
            f"{wal.name} holds commits not yet folded into it; copy the store with its "
            "-wal file to a writable folder and read it there"
        )
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=timeout, isolation_level=None)


def probe(path: Path) -> tuple[int, int, int]:
    """(application_id, user_version, number of schema objects), read without writing."""
    header = _read_header(path)
    if len(header) < HEADER_SIZE or not header.startswith(SQLITE_MAGIC):
        raise foreign(path, "not an SQLite database")
    # The header's application_id (big-endian at byte 68) can lag behind an uncommitted
    # WAL, so it only settles "foreign" here; the exact values come from a read-only query.
    header_app = int.from_bytes(header[68:72], "big", signed=True)
    if header_app not in (0, APPLICATION_ID):
        raise foreign(path, f"an SQLite database of another application (id {header_app:#x})")
    try:
        conn = connect_readonly(path, timeout=5.0)
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            n_objects = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise foreign(path, f"an unreadable SQLite database ({e})") from e
    return int(app), int(version), int(n_objects)


def _check_kind(path: Path) -> None:
    """A store is a regular file (or nothing yet): a folder, a named pipe (reading it would
    wait forever) or a device is refused before SQLite opens it."""
    kind = path_kind(path)
    if kind == "a folder":
        raise StoreError(
            f"store {path} is a directory; pass a file path such as {path / 'results.sqlite'}"
        )
    if kind not in (None, "a file"):
        raise StoreError(
            f"store {path} is {kind}, not a file; pass results.sqlite or the study's output "
            "folder (nothing was written)"
        )


def open_writable(path: Path, *, create: bool) -> sqlite3.Connection:
    """A read-write connection to the store at ``path``: created, or recognised and upgraded."""
    _check_kind(path)
    fresh = not path.exists() or path.stat().st_size == 0
    if not path.exists():
        if not create:
            raise StoreError(
                f"store {path} does not exist; check the path, or run the sweep to create it"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    if not fresh:
        app, version, n_objects = probe(path)
        if app == APPLICATION_ID:
            _check_version(path, version)
        elif n_objects:
            raise foreign(path, "an SQLite database of another application (id 0)")
        else:
            fresh = True  # an empty SQLite file, e.g. left by a kill before our init
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open store {path}: {e}; check the path and permissions") from e
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
            _initialize(path, conn)
        else:
            _migrate(conn)
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(
            f"cannot open store {path}: {e}; check that the disk is local and writable "
            "(read-only commands open it read-only)"
        ) from e
    except BaseException:
        conn.close()
        raise
    return conn


def open_readonly(path: Path) -> sqlite3.Connection:
    """A connection that never writes: the store must exist and be version 2 or later."""
    _check_kind(path)
    if not path.exists():
        raise StoreError(f"store {path} does not exist; check the path")
    app, version, n_objects = probe(path)
    if app != APPLICATION_ID:
        what = "an empty SQLite database" if not n_objects else "an SQLite database of "
        raise foreign(path, what if not n_objects else what + "another application (id 0)")
    _check_version(path, version)
    if version < OLDEST_READABLE:
        raise StoreError(
            f"store {path} has schema version {version}, which is read only after an "
            "upgrade; open it once where it can be written (e.g. `modeconn status` on a "
            "writable copy) and read it again"
        )
    try:
        conn = connect_readonly(path)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open store {path} read-only: {e}") from e
    return conn


def _check_version(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {version}, newer than this modeconn "
            f"reads ({SCHEMA_VERSION}); upgrade modeconn, or use another --store"
        )
    if version < SCHEMA_VERSION and not all(
        v in MIGRATIONS for v in range(version, SCHEMA_VERSION)
    ):
        raise StoreError(
            f"store {path} has schema version {version}, older than this modeconn "
            f"({SCHEMA_VERSION}) and with no migration; re-run into a new --store"
        )


def _initialize(path: Path, conn: sqlite3.Connection) -> None:
    """Create the tables, mark the file as ours and set the schema version, atomically.

    Two processes may race to create the same store: the second finds the work done
    inside its own write lock and stops.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        if app == APPLICATION_ID:
            conn.execute("ROLLBACK")
            _check_version(path, conn.execute("PRAGMA user_version").fetchone()[0])
            _migrate(conn)
            return
        if app != 0 or conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
            raise foreign(path, "an SQLite database of another application")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO meta (key, value) VALUES ('created', ?)", (repr(now()),))
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store of an older schema version up to this one, atomically."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another may have won
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
