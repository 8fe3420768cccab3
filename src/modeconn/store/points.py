"""The rows of a store: ``MemberPoint``, ``PathPoint`` and ``UnitKey``, checked on construction.

Each dataclass holds exactly what the store keeps (α rounded to ``ALPHA_DECIMALS``
decimals, example losses as a read-only float32 copy), so a point read back compares equal
to the point written. The ``_*_row`` functions turn a point into the tuple of one SQL row,
its checksum last (:func:`modeconn.store.schema.row_checksum`).
"""

from __future__ import annotations

import json
import math
import operator
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from modeconn.errors import StoreError
from modeconn.store.schema import (
    ALPHA_DECIMALS,
    DTYPES,
    RESERVED_METRIC_NAMES,
    UNIT_KEY,
    row_checksum,
)


def now() -> float:
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
        if name in RESERVED_METRIC_NAMES:
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
    created: float = field(default_factory=now)

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
        return tuple(getattr(self, name) for name in UNIT_KEY)


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
    created: float = field(default_factory=now)

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
            **{name: getattr(self, name) for name in UNIT_KEY},
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


def decode_losses(blob: bytes | None) -> npt.NDArray[np.float32] | None:
    if blob is None:
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)  # a writable native copy


def _encode_loss(loss: float) -> float | None:
    return None if math.isnan(loss) else loss  # SQLite would store NaN as NULL anyway


def decode_loss(loss: float | None) -> float:
    return math.nan if loss is None else float(loss)


def _encode_metrics(metrics: Mapping[str, float]) -> str:
    return json.dumps(metrics, sort_keys=True)  # NaN / Infinity survive as JSON5 tokens


def member_row(p: MemberPoint) -> tuple[Any, ...]:
    """The ``member_points`` row of a point: its columns in order, then its checksum."""
    row = (
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
    return (*row, row_checksum(row[:-1]))  # every column but `created`


def path_row(p: PathPoint) -> tuple[Any, ...]:
    """The ``path_points`` row of a point: its columns in order, then its checksum."""
    row = (
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
    return (*row, row_checksum(row[:-1]))


def filter_value(column: str, value: object) -> object:
    """A look-up value in the form the column stores (numpy ints become ints, α rounded)."""
    if column == "alpha":
        return _round_alpha(value)
    if DTYPES.get(column) == "int64":
        return _integer(column, value)
    return _text(column, value)


def insert_sql(table: str, columns: Sequence[str], verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


UNIT_WHERE = " AND ".join(f"{name} = ?" for name in UNIT_KEY)
