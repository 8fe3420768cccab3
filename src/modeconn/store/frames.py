"""Reading a store as DataFrames, in the terms of the current population, and exporting it.

**Rows belong to weights; ids are labels.** Every row is keyed by weight hashes; the
member ids stored beside them are those the weights had *when the row was written*. A
member retrained under the same id, a file replaced by new weights, a member renamed, two
members whose names were swapped: in each case the stored ids say nothing reliable about
the population of today. So the readers here select rows by the hashes of the current
population — the ``members`` meta record the sweep writes (id and hash of every member,
then the ``checkpoints`` record of a trajectory analysis) — and label them with the ids
those hashes carry now:

* a row of weights that are no longer in the population is left out (it stays in the
  store, and ``rows="all"`` shows it with the ids it was written under);
* a renamed member's rows read under its new name, and nothing is recomputed;
* where a pair was swept in both orientations (A→B and, after a rename, B→A), one unit
  is shown: the one oriented as the sweep orients it now (by id), the other is its mirror.

A store with no ``members`` record (one filled through the Python API) is read as it is.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from modeconn._atomic import open_atomic
from modeconn.errors import PopulationError, StoreError
from modeconn.store.points import decode_losses, filter_value
from modeconn.store.schema import (
    CHECKPOINTS_KEY,
    DTYPES,
    FILTERS,
    MEMBERS_KEY,
    UNIT_KEY,
    reads,
)

if TYPE_CHECKING:
    from modeconn.store import Store

Rows = Literal["population", "all"]
_ID_COLUMNS = {"member_id": "member_hash", "member_a": "hash_a", "member_b": "hash_b"}


def check_record(path: object, key: str, raw: str) -> None:
    """Refuse a ``members`` (or ``checkpoints``) record that could not label rows.

    It must be a JSON list of objects with string ``id`` and ``hash``, and no two members
    may have the same weights (``PopulationError`` naming both ids): a population of
    distinct models, so that every hash has one id.
    """
    records = _parse(path, key, raw)
    if key != MEMBERS_KEY:
        return
    seen: dict[str, str] = {}
    for m in records:
        if m["hash"] in seen:
            raise PopulationError(
                f"members {seen[m['hash']]!r} and {m['id']!r} have the same weights (hash "
                f"{m['hash'][:12]}…); a population needs distinct models: remove one of them "
                f"(or retrain it with another seed); store {path} keeps its rows"
            )
        seen[m["hash"]] = m["id"]


def _records(store: Store, key: str) -> list[dict[str, Any]]:
    raw = store.get_meta(key)
    return [] if raw is None else _parse(store.path, key, raw)


def _parse(path: object, key: str, raw: str) -> list[dict[str, Any]]:
    try:
        records = json.loads(raw)
        ok = isinstance(records, list) and all(
            isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("hash"), str)
            for r in records
        )
    except ValueError:
        ok = False
    if not ok:
        raise StoreError(
            f"store {path}: the '{key}' record is not a JSON list of {{id, hash}} objects; "
            "rerun `modeconn run` to rewrite it"
        )
    return list(records)


def population(store: Store, *, distinct: bool = True) -> list[dict[str, Any]] | None:
    """The current population as the store records it (``id``, ``hash``, metadata), or None.

    None when no sweep has recorded one. With ``distinct``, two ids with the same weights
    raise ``PopulationError``: their rows cannot be told apart, and a correlation over both
    counts one model twice.
    """
    raw = store.get_meta(MEMBERS_KEY)
    if raw is None:
        return None
    if distinct:
        check_record(store.path, MEMBERS_KEY, raw)
    return _parse(store.path, MEMBERS_KEY, raw)


def labels(store: Store) -> dict[str, list[str]] | None:
    """Weight hash → the ids it carries now (members first, then checkpoints), or None.

    A hash has one id among the members; a checkpoint identical to a final member (the
    last step of its run) carries both names.
    """
    members = population(store, distinct=False)
    if members is None:
        return None
    out: dict[str, list[str]] = {}
    for record in [*members, *_records(store, CHECKPOINTS_KEY)]:
        ids = out.setdefault(record["hash"], [])
        if record["id"] not in ids:
            ids.append(record["id"])
    return out


def _where(table: str, filters: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    allowed = FILTERS[table]
    clauses, params = [], []
    for name, value in filters.items():
        if name not in allowed:
            raise StoreError(
                f"cannot filter {table} by {name!r}; filter by one of {sorted(allowed)}"
            )
        many = isinstance(value, list | tuple | set | frozenset)
        values = [filter_value(name, v) for v in (value if many else [value])]
        if not values:
            clauses.append("0")  # "any of nothing" matches no row
        elif len(values) == 1:
            clauses.append(f"{name} = ?")
        else:
            clauses.append(f"{name} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    return clauses, params


@reads
def frame(
    store: Store,
    table: str,
    columns: Sequence[str],
    order: Sequence[str],
    *,
    with_examples: bool,
    filters: Mapping[str, Any],
    rows: Rows,
) -> pd.DataFrame:
    """One table as a DataFrame (see ``Store.member_points`` / ``Store.path_points``)."""
    if rows not in ("population", "all"):
        raise StoreError(f"rows must be 'population' or 'all'; got {rows!r}")
    current = labels(store) if rows == "population" else None
    sql_filters = dict(filters)
    id_filters: dict[str, Any] = {}
    if current is not None:  # ids are today's labels: compare them after relabelling
        id_filters = {c: sql_filters.pop(c) for c in list(sql_filters) if c in _ID_COLUMNS}
        for c, v in id_filters.items():
            _where(table, {c: v})  # the same validation as an SQL filter
    clauses, params = _where(table, sql_filters)
    if current is not None:
        hashes = sorted(current)
        for column in {_ID_COLUMNS[c] for c in columns if c in _ID_COLUMNS}:
            clauses.append(f"{column} IN ({', '.join('?' for _ in hashes)})" if hashes else "0")
            params.extend(hashes)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    selected = [c for c in columns if c != "example_losses" or with_examples]
    cursor = store._connection().execute(
        f"SELECT {', '.join(selected)} FROM {table}{where} ORDER BY {', '.join(order)}", params
    )
    data: dict[str, list[Any]] = {c: [] for c in selected}
    for row in cursor:
        for name, value in zip(selected, row, strict=True):
            data[name].append(value)
    metric_rows: list[dict[str, float]] = [json.loads(m) for m in data.pop("metrics")]
    blobs = data.pop("example_losses", None)
    # One Series per column, built once: NULL losses read as NaN, empty frames keep dtypes.
    out: dict[str, pd.Series] = {
        name: pd.Series(values, dtype=DTYPES.get(name, str)) for name, values in data.items()
    }
    for metric in sorted({name for metrics in metric_rows for name in metrics}):
        out[metric] = pd.Series([m.get(metric, math.nan) for m in metric_rows], dtype="float64")
    if blobs is not None:
        out["example_losses"] = pd.Series([decode_losses(b) for b in blobs], dtype=object)
    result = pd.DataFrame(out)
    if current is None:
        return result
    for id_column, hash_column in _ID_COLUMNS.items():
        if id_column in result.columns:
            result[id_column] = result[hash_column].map(lambda h: current[h][0]).astype(str)
    if table == "path_points":
        result = _one_orientation(result)
    for column, value in id_filters.items():
        many = isinstance(value, list | tuple | set | frozenset)
        result = result[result[column].isin(list(value) if many else [value])]
    return result.reset_index(drop=True)


def _one_orientation(points: pd.DataFrame) -> pd.DataFrame:
    """Drop a unit whose mirror (B→A of the same split, grid, sample) is also present,
    unless it is oriented as the sweep orients pairs now: by id, A < B."""
    if points.empty:
        return points
    keys = list(points[list(UNIT_KEY)].itertuples(index=False, name=None))
    present = set(keys)
    mirrored = pd.Series([(k[1], k[0], *k[2:]) in present for k in keys], index=points.index)
    self_pair = points["hash_a"] == points["hash_b"]
    drop = mirrored & ~self_pair & (points["member_a"] > points["member_b"])
    return points[~drop]


def export(
    store: Store,
    directory: str | os.PathLike[str],
    *,
    format: Literal["csv", "parquet"],
    with_examples: bool,
    rows: Rows,
) -> list[Path]:
    """Write the three tables of ``store`` (see ``Store.export``); returns their paths."""
    if format not in ("csv", "parquet"):
        raise StoreError(f"export format must be 'csv' or 'parquet'; got {format!r}")
    if with_examples and format == "csv":
        raise StoreError("CSV cannot hold per-example losses; use format='parquet'")
    out_dir = Path(directory)
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreError(
            f"export folder {out_dir} is a file, not a folder; pass a folder with --out "
            "(it is created if missing)"
        )
    with store._snapshot():
        tables = {
            "member_points": store.member_points(with_examples=with_examples, rows=rows),
            "path_points": store.path_points(with_examples=with_examples, rows=rows),
            "analysis_values": _values_frame(store),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        target = out_dir / f"{name}.{format}"
        _atomic_write(target, table, format)
        written.append(target)
    return written


@reads
def _values_frame(store: Store) -> pd.DataFrame:
    return pd.DataFrame(
        store._connection()
        .execute("SELECT kind, key, value, created FROM analysis_values ORDER BY 1, 2")
        .fetchall(),
        columns=["kind", "key", "value", "created"],
    )


def _atomic_write(target: Path, table: pd.DataFrame, format: Literal["csv", "parquet"]) -> None:
    """Write ``table`` as CSV or Parquet through :func:`modeconn._atomic.open_atomic`."""
    with open_atomic(target) as handle:
        if format == "csv":
            handle.write(table.to_csv(index=False).encode("utf-8"))
        else:
            table.to_parquet(handle, index=False)
