"""Is a store sound? SQLite's own check, the unit invariant, and every row's checksum.

Three layers, each catching what the one before cannot:

1. ``PRAGMA integrity_check``: the file's pages and indexes (a damaged page, a torn write).
2. The unit invariant: every unit marker has exactly ``n_points`` path rows, and no path
   row lacks a marker (a unit is written whole or not at all).
3. Checksums (schema version 3): each row's :func:`~modeconn.store.schema.row_checksum`
   is recomputed from its values, so a loss, metric or per-example loss changed after it
   was written — a flipped bit, a hand edit — is named with the row it is in.
"""

from __future__ import annotations

import sqlite3

from modeconn.store.schema import CHECKED, CHECKSUM, MEMBER_KEY, PATH_KEY, UNIT_KEY, row_checksum

_SHOWN = 3  # rows named per problem; the rest are counted


def problems(conn: sqlite3.Connection) -> list[str]:
    """What is wrong with the store open on ``conn`` (read inside one snapshot), if anything."""
    found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    if found != ["ok"]:
        return found
    found = []
    join = " AND ".join(f"p.{c} = u.{c}" for c in UNIT_KEY)
    orphans = conn.execute(
        f"SELECT count(*) FROM path_points p WHERE NOT EXISTS (SELECT 1 FROM units u WHERE {join})"
    ).fetchone()[0]
    if orphans:
        found.append(f"{orphans} path_points rows belong to no unit marker")
    short = conn.execute(
        f"SELECT {', '.join('u.' + c for c in UNIT_KEY)}, u.n_points, "
        f"(SELECT count(*) FROM path_points p WHERE {join}) AS n FROM units u "
        "WHERE n != u.n_points"
    ).fetchall()
    for *key, expected, n in short:
        found.append(
            f"unit {dict(zip(UNIT_KEY, key, strict=True))} has {n} path rows, "
            f"its marker says {expected}"
        )
    return found + _checksums(conn)


def _checksums(conn: sqlite3.Connection) -> list[str]:
    found = []
    for table, columns in CHECKED.items():
        names = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
        if CHECKSUM not in names:
            found.append(
                f"{table} rows carry no checksums (a schema version 2 store opened read-only); "
                "open it once where it can be written (e.g. `modeconn status` on a writable "
                "copy) to add them"
            )
            continue
        key = MEMBER_KEY if table == "member_points" else PATH_KEY
        bad, missing, shown = 0, 0, list[str]()
        for row in conn.execute(f"SELECT {CHECKSUM}, {', '.join(columns)} FROM {table}"):
            stored, values = row[0], row[1:]
            if stored is None:
                missing += 1
                continue
            if stored != row_checksum(values):
                bad += 1
                if len(shown) < _SHOWN:
                    record = dict(zip(columns, values, strict=True))
                    shown.append(", ".join(f"{c}={_short(record[c])}" for c in key))
        if bad:
            more = f" (and {bad - len(shown)} more)" if bad > len(shown) else ""
            found.append(
                f"{bad} {table} rows do not match their checksum (a value changed after it "
                f"was written): {'; '.join(shown)}{more}; restore a copy of the store, or move "
                "it aside and rerun `modeconn run` to recompute its rows"
            )
        if missing:
            found.append(f"{missing} {table} rows have no checksum; rerun to rewrite them")
    return found


def _short(value: object) -> str:
    """A key value as shown in a problem: weight hashes cut to 12 hex digits."""
    if isinstance(value, str) and len(value) > 16:
        return repr(value[:12] + "…")
    return repr(value)
