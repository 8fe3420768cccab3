"""Loss planes: the loss over the 2-D plane through three members' weights.

A linear path shows the loss along one line between two models; a *plane* shows how
three models sit relative to each other and to the barriers between them. Garipov et
al. (2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs", §4 and
Fig. 1) draw the plane through three weight vectors with an orthonormal basis from
Gram–Schmidt, and Juneja et al. (2023, "Linear Connectivity Reveals Generalization
Strategies", Fig. 2) draw it through three fine-tuned BERTs: two from one basin, where
the loss stays low between them, and one from the other, behind a ridge.

The construction, over *all* floating-point entries of the model flattened into one
vector (the engine's ``keys``: parameters and float buffers, in that order):

* the origin is θ0, the first axis u = θ1 − θ0;
* the second axis v is the part of θ2 − θ0 orthogonal to u (one Gram–Schmidt step),
  v⊥ = (θ2 − θ0) − (⟨θ2 − θ0, u⟩ / ‖u‖²) · u, rescaled to the length of u:
  v = v⊥ · ‖u‖ / ‖v⊥‖;
* the point at plane coordinates (x, y) is θ(x, y) = θ0 + x·u + y·v.

One unit on either axis is therefore the distance ‖θ0θ1‖ = ‖u‖ (Garipov et al. use
unit vectors instead, so their axes are in raw weight-space units), and because u ⊥ v
with ‖u‖ = ‖v‖, distances in the plane drawn with an equal aspect ratio are true
distances. The three members sit at

    θ0 = (0, 0),   θ1 = (1, 0),   θ2 = (⟨θ2 − θ0, u⟩ / ‖u‖²,  ‖v⊥‖ / ‖u‖).

Dot products are accumulated in float64 whatever the weights' dtype (float32 on an MPS
device, which has no float64). :func:`evaluate_plane` writes every grid point into the
:class:`~modeconn.engine.evaluate.Evaluator`'s resident weights in place
(:meth:`~modeconn.engine.evaluate.Evaluator.set_combination`) and evaluates it there, so a plane
costs one forward pass over the sample per grid point and no model copies.

>>> import torch
>>> p0, p1, p2 = [torch.zeros(2)], [torch.tensor([2.0, 0.0])], [torch.tensor([1.0, 3.0])]
>>> basis = plane_coordinates(p0, p1, p2)
>>> basis.model_xy.tolist()  # u = (2, 0); θ2 − θ0 = (1, 3) = 0.5·u + (0, 3)
[[0.0, 0.0], [1.0, 0.0], [0.5, 1.5]]
>>> basis.v[0].tolist()  # (0, 3) rescaled to ‖u‖ = 2
[0.0, 2.0]
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from modeconn.data.base import Split
from modeconn.engine.evaluate import Evaluator
from modeconn.errors import ConfigError, DataError, PopulationError, require_keys

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_RESOLUTION",
    "PAPER_RESOLUTION",
    "PlaneBasis",
    "PlaneResult",
    "PlaneSpec",
    "evaluate_plane",
    "plane_coordinates",
    "plane_grid",
]

DEFAULT_RESOLUTION = 9  # 81 forward passes: minutes on a CPU for a 6-layer model
PAPER_RESOLUTION = 21  # a paper-like picture: 441 forward passes
DEFAULT_MARGIN = 0.3  # border around the three members, as a fraction of their span
DEFAULT_MEMBERS = ("θ0", "θ1", "θ2")
# A member closer than this many rounding steps (of the weights' dtype, relative to the
# weights' norm) to θ0, or to the line θ0θ1, does not span a plane: the difference is noise.
_NOISE_ULPS = 8.0

FloatArray = np.ndarray


# --- the basis -----------------------------------------------------------------------------


class PlaneBasis(NamedTuple):
    """The plane through three points (see the module docstring).

    Attributes:
        u: θ1 − θ0, one tensor per entry, in the points' dtype and device.
        v: the part of θ2 − θ0 orthogonal to u, rescaled to ‖v‖ = ‖u‖.
        model_xy: (3, 2) float64, the plane coordinates of θ0, θ1, θ2.
        scale: ‖u‖ = ‖θ1 − θ0‖, the length of one unit on either axis.
    """

    u: list[torch.Tensor]
    v: list[torch.Tensor]
    model_xy: FloatArray
    scale: float


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _check_points(points: Sequence[Sequence[torch.Tensor]], members: Sequence[str]) -> None:
    """Three points of one architecture: same tensor count, shapes and float dtypes."""
    if len(points) != 3:
        raise ConfigError(f"a plane needs exactly 3 points (θ0, θ1, θ2); got {len(points)}")
    n = len(points[0])
    if n == 0:
        raise PopulationError(f"member '{members[0]}' has no tensors; a point is a tensor list")
    for name, point in zip(members[1:], points[1:], strict=True):
        if len(point) != n:
            raise PopulationError(
                f"member '{name}' has {len(point)} tensors and member '{members[0]}' has {n}; "
                "the three members must share one architecture (make each point with "
                "Evaluator.as_point)"
            )
    for i, ref in enumerate(points[0]):
        for name, point in zip(members, points, strict=True):
            t = point[i]
            if not t.is_floating_point():
                raise PopulationError(
                    f"member '{name}' tensor {i} has dtype {t.dtype}; a plane spans only "
                    "floating-point entries (Evaluator.as_point keeps exactly those)"
                )
            if t.shape != ref.shape:
                raise PopulationError(
                    f"member '{name}' tensor {i} has shape {tuple(t.shape)}, member "
                    f"'{members[0]}' has {tuple(ref.shape)}; the three members must share one "
                    "architecture"
                )
            if t.dtype != ref.dtype or t.device != ref.device:
                raise PopulationError(
                    f"member '{name}' tensor {i} is {t.dtype} on {t.device}, member "
                    f"'{members[0]}' has {ref.dtype} on {ref.device}; make the three points "
                    "with one Evaluator.as_point so they share a dtype and device"
                )


@torch.no_grad()
def plane_coordinates(
    p0: Sequence[torch.Tensor],
    p1: Sequence[torch.Tensor],
    p2: Sequence[torch.Tensor],
    *,
    members: Sequence[str] = DEFAULT_MEMBERS,
) -> PlaneBasis:
    """The basis (u, v) of the plane through θ0, θ1, θ2 and the three points' coordinates.

    Args:
        p0, p1, p2: the three points, each a list of floating-point tensors of matching
            shapes (e.g. from :meth:`~modeconn.engine.evaluate.Evaluator.as_point`); all their
            entries together form one vector.
        members: names of the three points, used in error messages.

    Returns:
        A :class:`PlaneBasis`: ``u``, ``v`` (tensor lists like the points), ``model_xy``
        ((3, 2) floats: θ0 = (0, 0), θ1 = (1, 0), θ2 = (x2, y2) with y2 > 0) and
        ``scale`` = ‖θ1 − θ0‖.

    Raises:
        PopulationError: the points differ in tensor count, shape or are not floats.
        ConfigError: θ1 equals θ0 (‖u‖ = 0), θ2 lies on the line θ0θ1 (no second
            direction), or a weight is not finite.

    >>> import torch
    >>> a = [torch.tensor([1.0, 1.0]), torch.tensor([1.0])]  # one vector (1, 1, 1) in 2 tensors
    >>> b = [torch.tensor([4.0, 5.0]), torch.tensor([1.0])]  # u = (3, 4, 0), ‖u‖ = 5
    >>> c = [torch.tensor([4.0, 5.0]), torch.tensor([11.0])]  # θ2 − θ0 = u + (0, 0, 10)
    >>> plane_coordinates(a, b, c).model_xy[2].tolist()  # x2 = 25/25, y2 = 10/5
    [1.0, 2.0]
    """
    members = tuple(members)
    if len(members) != 3:
        raise ConfigError(f"a plane needs 3 member names; got {len(members)}: {list(members)}")
    _check_points((p0, p1, p2), members)
    device = p0[0].device
    acc = _acc_dtype(device)

    # pass 1: u = θ1 − θ0 in the points' dtype; ⟨u,u⟩, ⟨u,d⟩, ⟨d,d⟩ and ‖θ0‖² in float64
    u = [torch.sub(b, a) for a, b in zip(p0, p1, strict=True)]
    sums = torch.zeros(4, dtype=acc, device=device)  # uu, ud, dd, θ0θ0
    for a, c, du in zip(p0, p2, u, strict=True):
        u64 = du.reshape(-1).to(acc)
        d64 = c.reshape(-1).to(acc) - a.reshape(-1).to(acc)  # d = θ2 − θ0, exact in float64
        a64 = a.reshape(-1).to(acc)
        sums += torch.stack([u64 @ u64, u64 @ d64, d64 @ d64, a64 @ a64])
    uu, ud, dd, aa = (float(s) for s in sums.cpu())
    if not all(math.isfinite(s) for s in (uu, ud, dd, aa)):
        raise ConfigError(
            f"the weights of members '{members[0]}', '{members[1]}', '{members[2]}' are not all "
            "finite (NaN or inf); a plane needs finite weights, check those checkpoints"
        )
    norm_u = math.sqrt(uu)
    eps = float(torch.finfo(p0[0].dtype).eps)
    noise = _NOISE_ULPS * eps * (math.sqrt(aa) + norm_u + math.sqrt(dd))
    if norm_u <= noise:
        raise ConfigError(
            f"members '{members[0]}' and '{members[1]}' have the same weights (‖θ1 − θ0‖ = "
            f"{norm_u:.3g}), so they span no direction; choose two different members for "
            "θ0 and θ1"
        )
    x2 = ud / uu

    # pass 2: v⊥ = d − x2·u per tensor in float64; kept in the points' dtype
    v = []
    vv = torch.zeros((), dtype=acc, device=device)
    for a, c, du in zip(p0, p2, u, strict=True):
        perp = (c.to(acc) - a.to(acc)) - x2 * du.to(acc)
        vv += perp.reshape(-1) @ perp.reshape(-1)
        v.append(perp.to(du.dtype))
    norm_perp = math.sqrt(float(vv))
    if norm_perp <= noise:
        raise ConfigError(
            f"member '{members[2]}' lies on the line through '{members[0]}' and "
            f"'{members[1]}' (its distance from that line is {norm_perp:.3g}, at x = {x2:.4g}), "
            "so the three span no plane; choose a third member off that line"
        )
    ratio = norm_u / norm_perp
    torch._foreach_mul_(v, ratio)  # ‖v‖ = ‖u‖
    model_xy = np.array([[0.0, 0.0], [1.0, 0.0], [x2, norm_perp / norm_u]])  # (3, 2)
    return PlaneBasis(u=u, v=v, model_xy=model_xy, scale=norm_u)


# --- the grid ------------------------------------------------------------------------------


def _axis(values: Any, name: str) -> tuple[float, ...]:
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"plane grid `{name}` must be numbers; {exc}") from None
    if a.ndim != 1 or a.size < 2:
        raise ConfigError(
            f"plane grid `{name}` must be a 1-D sequence of at least 2 coordinates; got shape "
            f"{a.shape}; give e.g. numpy.linspace(-0.3, 1.3, 9)"
        )
    if not np.isfinite(a).all() or np.any(np.diff(a) <= 0):
        raise ConfigError(
            f"plane grid `{name}` must be finite and strictly increasing; got {a.tolist()}; "
            "sort it and drop repeated values"
        )
    return tuple(float(x) for x in a)


def _check_resolution(resolution: Any) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ConfigError(f"plane resolution must be an integer ≥ 2; got {resolution!r}")
    if resolution < 2:
        raise ConfigError(
            f"plane resolution must be ≥ 2 points per axis; got {resolution}; use "
            f"{DEFAULT_RESOLUTION} (the default) or {PAPER_RESOLUTION} for a paper-like picture"
        )
    return int(resolution)


def _check_margin(margin: Any) -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise ConfigError(f"plane margin must be a number ≥ 0; got {margin!r}") from None
    if not math.isfinite(m) or m < 0:
        raise ConfigError(
            f"plane margin must be a finite number ≥ 0 (a fraction of the members' span); "
            f"got {margin!r}; {DEFAULT_MARGIN} is the default"
        )
    return m


def plane_grid(
    model_xy: Any, *, resolution: int = DEFAULT_RESOLUTION, margin: float = DEFAULT_MARGIN
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A ``resolution`` × ``resolution`` grid covering the three members with a border.

    The members' bounding box is widened on all four sides by ``margin`` times its larger
    side, the same distance on both axes (the units are equal). Coordinates are rounded to
    12 decimals so they are exact keys.

    >>> xs, ys = plane_grid([[0, 0], [1, 0], [0.5, 1.5]], resolution=3, margin=0.2)
    >>> xs, ys  # box [0, 1] × [0, 1.5], larger side 1.5, border 0.2 · 1.5 = 0.3
    ((-0.3, 0.5, 1.3), (-0.3, 0.75, 1.8))
    """
    resolution = _check_resolution(resolution)
    margin = _check_margin(margin)
    xy = np.asarray(model_xy, dtype=float)
    if xy.shape != (3, 2) or not np.isfinite(xy).all():
        raise ConfigError(f"model_xy must be 3 finite (x, y) pairs; got {xy.tolist()}")
    lo, hi = xy.min(axis=0), xy.max(axis=0)  # (2,)
    pad = margin * float((hi - lo).max())
    xs = np.linspace(lo[0] - pad, hi[0] + pad, resolution)
    ys = np.linspace(lo[1] - pad, hi[1] + pad, resolution)
    return tuple(round(float(x), 12) for x in xs), tuple(round(float(y), 12) for y in ys)


@dataclass(frozen=True)
class PlaneSpec:
    """Which plane and which grid: what a :class:`PlaneResult` was evaluated on.

    Attributes:
        members: ids of θ0, θ1, θ2 (θ0 is the origin, θ1 sets the unit and the x axis).
        resolution: points per axis of the automatic grid (:func:`plane_grid`); an axis
            given explicitly in ``x`` or ``y`` has its own number of points.
        margin: border of the automatic grid, as a fraction of the members' span.
        x, y: the grid's coordinates (increasing), in units of ‖θ0θ1‖; ``None`` until
            resolved from the members' coordinates (:meth:`resolve`).

    >>> spec = PlaneSpec(("a", "b", "c"), resolution=3, margin=0.2)
    >>> spec.resolve([[0, 0], [1, 0], [0.5, 1.5]]).x
    (-0.3, 0.5, 1.3)
    >>> PlaneSpec.from_dict(spec.to_dict()) == spec
    True
    """

    members: tuple[str, str, str]
    resolution: int = DEFAULT_RESOLUTION
    margin: float = DEFAULT_MARGIN
    x: tuple[float, ...] | None = None
    y: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        members = tuple(str(m) for m in self.members)
        if len(members) != 3:
            raise ConfigError(
                f"a plane needs exactly 3 member ids (θ0, θ1, θ2); got {len(members)}: "
                f"{list(members)}"
            )
        if len(set(members)) != 3:
            raise ConfigError(
                f"a plane needs 3 different members; got {list(members)}; the same member "
                "twice spans no plane"
            )
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "resolution", _check_resolution(self.resolution))
        object.__setattr__(self, "margin", _check_margin(self.margin))
        for name in ("x", "y"):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, _axis(values, name))

    def resolve(self, model_xy: Any) -> PlaneSpec:
        """This spec with ``x`` and ``y`` set: given axes kept, missing ones from the grid."""
        auto_x, auto_y = plane_grid(model_xy, resolution=self.resolution, margin=self.margin)
        return PlaneSpec(
            self.members,
            self.resolution,
            self.margin,
            self.x if self.x is not None else auto_x,
            self.y if self.y is not None else auto_y,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists and Python scalars)."""
        return {
            "members": list(self.members),
            "resolution": self.resolution,
            "margin": self.margin,
            "x": None if self.x is None else list(self.x),
            "y": None if self.y is None else list(self.y),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlaneSpec:
        """Inverse of :meth:`to_dict`; a missing resolution, margin or axis takes its default."""
        if "members" not in data:
            raise DataError(
                "a PlaneSpec record has no 'members'; it must come from PlaneSpec.to_dict()"
            )
        return cls(
            members=tuple(data["members"]),
            resolution=data.get("resolution", DEFAULT_RESOLUTION),
            margin=data.get("margin", DEFAULT_MARGIN),
            x=data.get("x"),
            y=data.get("y"),
        )


# --- the result ----------------------------------------------------------------------------


def _readonly(values: Any, shape: tuple[int, ...], what: str) -> FloatArray:
    a = np.array(values, dtype=np.float64)  # a copy
    if a.shape != shape:
        raise DataError(f"{what} has shape {a.shape}; expected {shape} (ny, nx) for this grid")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)  # numpy members: compare to_dict()s instead
class PlaneResult:
    """Loss and metrics over a grid of the plane through three members, on one split.

    Attributes:
        spec: the members and the grid (``spec.x``, ``spec.y`` set).
        split: the split's store key (name and data fingerprint).
        sample_seed: the seed the split's sample was drawn with.
        sample_size: examples evaluated at every grid point.
        loss: (ny, nx) mean cross-entropy; ``loss[j, i]`` is at ``(xs[i], ys[j])``.
        metrics: metric name → (ny, nx) grid (e.g. ``"accuracy"``).
        model_xy: (3, 2) plane coordinates of θ0, θ1, θ2.
        scale: ‖θ1 − θ0‖, one unit on either axis, in weight-space units.
        seconds: wall time of the evaluation.
    """

    spec: PlaneSpec
    split: str
    sample_seed: int
    sample_size: int
    loss: FloatArray
    metrics: Mapping[str, FloatArray]
    model_xy: FloatArray
    scale: float
    seconds: float = field(default=0.0)

    def __post_init__(self) -> None:
        if self.spec.x is None or self.spec.y is None:
            raise DataError(
                "a PlaneResult needs a resolved grid (spec.x and spec.y); use spec.resolve()"
            )
        shape = (len(self.spec.y), len(self.spec.x))
        object.__setattr__(self, "loss", _readonly(self.loss, shape, "the loss grid"))
        object.__setattr__(
            self,
            "metrics",
            {
                str(k): _readonly(v, shape, f"the metric grid {k!r}")
                for k, v in dict(self.metrics).items()
            },
        )
        object.__setattr__(self, "model_xy", _readonly(self.model_xy, (3, 2), "model_xy"))

    @property
    def members(self) -> tuple[str, str, str]:
        return self.spec.members

    @property
    def xs(self) -> FloatArray:
        """(nx,) x coordinates of the grid columns."""
        assert self.spec.x is not None
        return np.asarray(self.spec.x, dtype=np.float64)

    @property
    def ys(self) -> FloatArray:
        """(ny,) y coordinates of the grid rows."""
        assert self.spec.y is not None
        return np.asarray(self.spec.y, dtype=np.float64)

    def grid(self, metric: str = "loss") -> FloatArray:
        """(ny, nx) grid of ``"loss"`` or of one of :attr:`metrics`."""
        if metric == "loss":
            return self.loss
        if metric not in self.metrics:
            raise DataError(
                f"this plane has no metric {metric!r}; it has 'loss' and {sorted(self.metrics)}"
            )
        return self.metrics[metric]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists and Python scalars) recording what produced it."""
        return {
            "spec": self.spec.to_dict(),
            "split": self.split,
            "sample_seed": int(self.sample_seed),
            "sample_size": int(self.sample_size),
            "loss": self.loss.tolist(),
            "metrics": {k: v.tolist() for k, v in self.metrics.items()},
            "model_xy": self.model_xy.tolist(),
            "scale": float(self.scale),
            "seconds": float(self.seconds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlaneResult:
        """Inverse of :meth:`to_dict`."""
        required = ("spec", "split", "sample_seed", "sample_size", "loss", "model_xy", "scale")
        require_keys(data, required, "PlaneResult")
        return cls(
            spec=PlaneSpec.from_dict(data["spec"]),
            split=str(data["split"]),
            sample_seed=int(data["sample_seed"]),
            sample_size=int(data["sample_size"]),
            loss=np.asarray(data["loss"], dtype=np.float64),
            metrics={
                k: np.asarray(v, dtype=np.float64) for k, v in data.get("metrics", {}).items()
            },
            model_xy=np.asarray(data["model_xy"], dtype=np.float64),
            scale=float(data["scale"]),
            seconds=float(data.get("seconds", 0.0)),
        )

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per grid point, columns ``x``, ``y``, ``loss`` and metrics."""
        gx, gy = np.meshgrid(self.xs, self.ys)  # (ny, nx) each, row j at ys[j]
        columns = {"x": gx.ravel(), "y": gy.ravel(), "loss": self.loss.ravel()}
        columns.update({k: v.ravel() for k, v in self.metrics.items()})
        return pd.DataFrame(columns)


# --- evaluation ----------------------------------------------------------------------------


def evaluate_plane(
    evaluator: Evaluator,
    points: Sequence[Sequence[torch.Tensor]],
    split: Split,
    *,
    members: Sequence[str] = DEFAULT_MEMBERS,
    resolution: int = DEFAULT_RESOLUTION,
    margin: float = DEFAULT_MARGIN,
    xs: Sequence[float] | None = None,
    ys: Sequence[float] | None = None,
    progress: bool = False,
) -> PlaneResult:
    """Loss and metrics of every point θ0 + x·u + y·v of a grid over the plane of 3 points.

    Args:
        evaluator: the engine; its weights are overwritten (the last grid point stays).
        points: θ0, θ1, θ2 as points of this evaluator (:meth:`Evaluator.as_point`).
        split: the prepared split every grid point is evaluated on.
        members: the three member ids, recorded in the result and used in messages.
        resolution: points per axis of the automatic grid; 9 (81 forward passes) by
            default, :data:`PAPER_RESOLUTION` = 21 for a paper-like picture.
        margin: border around the three members, as a fraction of their larger span.
        xs, ys: explicit grid coordinates (increasing, in units of ‖θ0θ1‖) replacing the
            automatic ones on that axis, e.g. to put the members on grid points.
        progress: show a progress bar (tqdm) over the grid points.

    Returns:
        A :class:`PlaneResult`; each grid point ran through ``evaluator.evaluate(split,
        kind="plane")``, so ``evaluator.counts[("plane", split.name)]`` grows by nx·ny.
    """
    if len(points) != 3:
        raise ConfigError(f"a plane needs exactly 3 points (θ0, θ1, θ2); got {len(points)}")
    spec = PlaneSpec(tuple(members), resolution, margin, xs, ys)  # type: ignore[arg-type]
    names = spec.members
    for name, point in zip(names, points, strict=True):
        if len(point) != len(evaluator.keys):
            raise PopulationError(
                f"member '{name}' has {len(point)} tensors, the engine's model has "
                f"{len(evaluator.keys)} floating-point entries; make each point with "
                "Evaluator.as_point"
            )
        for key, t, ref in zip(evaluator.keys, point, evaluator.point.values(), strict=True):
            if t.shape != ref.shape or t.device != ref.device or t.dtype != ref.dtype:
                raise PopulationError(
                    f"member '{name}' key '{key}' is {tuple(t.shape)} {t.dtype} on {t.device}; "
                    f"the engine holds {tuple(ref.shape)} {ref.dtype} on {ref.device}; make "
                    "each point with Evaluator.as_point"
                )
    start = time.perf_counter()
    basis = plane_coordinates(*points, members=names)
    spec = spec.resolve(basis.model_xy)
    assert spec.x is not None and spec.y is not None
    grid_x, grid_y = spec.x, spec.y
    loss = np.full((len(grid_y), len(grid_x)), np.nan)  # (ny, nx)
    metrics: dict[str, FloatArray] = {}

    from tqdm.auto import tqdm

    bar = tqdm(total=loss.size, desc="plane", unit="point", disable=not progress)
    with bar:
        for j, y in enumerate(grid_y):
            for i, x in enumerate(grid_x):
                evaluator.set_combination(points[0], basis.u, basis.v, x, y)
                res = evaluator.evaluate(split, kind="plane")
                loss[j, i] = res.loss
                for name, value in res.metrics.items():
                    metrics.setdefault(name, np.full_like(loss, np.nan))[j, i] = value
                bar.update()
    return PlaneResult(
        spec=spec,
        split=split.key,
        sample_seed=split.spec.sample_seed,
        sample_size=split.n,
        loss=loss,
        metrics=metrics,
        model_xy=basis.model_xy,
        scale=basis.scale,
        seconds=time.perf_counter() - start,
    )
