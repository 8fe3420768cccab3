"""The one evaluation engine: any parameter point, any split.

One skeleton model stays resident, and its own parameter tensors *are* the resident
point: a parameter point is written into them in place (``torch._foreach_copy_`` for a
member; ``torch.lerp(θB, θA, α, out=…)`` per tensor for θα = αθA + (1−α)θB, one pass
over memory), and the skeleton is then called directly. No model is copied, no
``load_state_dict`` runs per point and no per-batch re-parametrisation
(``functional_call``) runs: the only Python work that scales with the number of
parameter tensors happens once per point. Splits arrive pre-collated
(:mod:`modeconn.data.base`) and are moved to the engine's device once, so a point
costs one forward pass over the sample.

Options (the study's ``eval:`` section sets them):

* ``device`` — ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; the model and the batches move
  there. Asking for a device this machine lacks is a :class:`ConfigError`.
* ``dtype`` — ``float32`` (default), ``bfloat16`` or ``float16``: the dtype of the
  resident weights, of the member points and of the forward pass. Logits are cast to
  float32 before the loss, and the mean loss is accumulated in float64 whatever the
  dtype. Half precision pays off only where the hardware has native support (a GPU);
  on a CPU without it bfloat16 is several times *slower*.
* ``compile`` — ``torch.compile`` the skeleton's forward. The first batches of each
  shape compile (tens of seconds); later points reuse the compiled code.

* ``batchnorm`` — for a model with BatchNorm layers, ``reestimate`` (the default) resets
  and re-estimates the running statistics at every point over ``batchnorm_split``;
  ``interpolate`` keeps the written float buffers (see :mod:`modeconn.engine.spec`).

Every path, plane, curve and sweep evaluates through :class:`Evaluator`; its
``counts`` record how many member (endpoint) and path evaluations ran per split.
Splits are anything that follows :class:`~modeconn.data.base.Split`: the engine feeds
``model(**batch)`` and reads nothing kind-specific.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from modeconn.data.base import KeyedSplit, Split
from modeconn.errors import ConfigError, PopulationError

ForwardFn = Callable[[nn.Module, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], Any]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` (or the torch dtype) as a torch dtype.

    >>> resolve_dtype("bfloat16")
    torch.bfloat16
    """
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(
        f"eval.dtype must be one of {', '.join(DTYPES)}; got {dtype!r}; float32 is the "
        "default and the reference, bfloat16/float16 pay off on a GPU"
    )


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` as a torch device, checked to exist on this machine.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"eval.device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"eval.device is {str(dev)!r} but no CUDA device is available (torch "
                f"{torch.__version__}, {build}); set `eval.device: cpu`, or run on a machine "
                "with a GPU and a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"eval.device is {str(dev)!r} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); use cuda:0 … "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "eval.device is 'mps' but the MPS backend is not available here; set `eval.device: cpu`"
        )
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"eval.device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}")
    return dev


def module_logits(
    model: nn.Module, point: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Logits of `model` called directly: the engine's resident point *is* its weights."""
    out = model(**batch)
    return out.logits if hasattr(out, "logits") else out


def hf_logits(
    model: nn.Module, point: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Logits of a Hugging Face classifier (or any module returning logits) at `point`.

    Re-parametrises the module per call (``functional_call``), ~1–2 ms per batch for a
    6-layer BERT; the engine's default, :func:`module_logits`, needs none of that.
    """
    out = functional_call(model, dict(point), args=(), kwargs=dict(batch), strict=False)
    return out.logits if hasattr(out, "logits") else out


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorm_layers(model))


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Reset `model`'s BatchNorm statistics and re-estimate them over `batches`.

    As Lubana et al.'s ``reset_bn_stats``: ``momentum = None`` (the running statistics
    become the cumulative average over the batches), ``reset_running_stats()``, forward
    passes in train mode without gradients; the model is left in eval mode and the
    layers' momenta are restored. Statistics are written in place into the layers'
    buffers (the engine's resident tensors).
    """
    layers = batchnorm_layers(model)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.momentum = None
        m.reset_running_stats()
    try:
        model.train()
        for batch in batches:
            model(**batch)
    finally:
        model.eval()
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum


@dataclass(frozen=True)
class EvalResult:
    """Mean loss and task metrics of one parameter point on one split.

    With ``per_example`` the loss and the predicted class of every example, in sample
    order (a sequential sweep scores the union of its blocks from the predictions).
    """

    split: str
    loss: float
    metrics: dict[str, float]
    n_examples: int
    example_losses: np.ndarray | None = field(default=None, compare=False)
    predictions: np.ndarray | None = field(default=None, compare=False)


class Evaluator:
    """Evaluates parameter points on prepared splits with one resident skeleton.

    ``keys`` are the skeleton's floating-point state entries (parameters and float
    buffers); a point is a list of tensors in that order. Integer buffers are kept from
    the skeleton. The evaluator owns `model`: it is moved to ``device`` and ``dtype``,
    and each point is written into its weights.

    ``forward(model, point, batch)`` returns logits; the default calls the model (whose
    weights are the point). ``device``, ``dtype`` and ``compile`` are described in the
    module docstring; a bad value is a :class:`ConfigError` naming the ``eval`` field.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        compile: bool = False,
        forward: ForwardFn = module_logits,
        batchnorm: str = "reestimate",
        batchnorm_split: Split | None = None,
        batchnorm_batches: int | None = None,
    ) -> None:
        if batchnorm not in ("reestimate", "interpolate"):
            raise ConfigError(
                f"eval.batchnorm must be 'reestimate' or 'interpolate'; got {batchnorm!r}"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.forward = forward
        self.compiled = bool(compile)
        # torch.compile wraps the module; the wrapper shares its parameters, so points
        # written into them reach the compiled code as inputs, not baked-in constants
        self._module: nn.Module = (
            torch.compile(self.model) if compile else self.model  # type: ignore[assignment]
        )
        state = self.model.state_dict()
        self.keys: tuple[str, ...] = tuple(k for k, v in state.items() if v.is_floating_point())
        # the resident point: the skeleton's own tensors (state_dict values share their
        # storage), written in place by set_point / set_lerp
        self._buffers = [state[k] for k in self.keys]
        self.point: dict[str, torch.Tensor] = dict(zip(self.keys, self._buffers, strict=True))
        self.counts: Counter[tuple[str, str]] = Counter()
        self._on_device: dict[int, tuple[Split, Split]] = {}
        # BatchNorm: None for a model without it (the policy is ignored, keys unchanged)
        self.batchnorm: str | None = batchnorm if has_batchnorm(self.model) else None
        self.batchnorm_split = batchnorm_split if self.batchnorm == "reestimate" else None
        self.batchnorm_batches = batchnorm_batches
        if self.batchnorm == "reestimate" and batchnorm_split is None:
            raise ConfigError(
                "the model has BatchNorm layers and eval.batchnorm is 'reestimate', but no "
                "split was given to re-estimate their statistics on; set "
                "eval.batchnorm_split, or `eval.batchnorm: interpolate`"
            )
        self._stale = True  # the running statistics are not yet those of the point

    @property
    def key_suffix(self) -> str:
        """What a point's rows are keyed by beyond the split's data: the BatchNorm policy.

        Empty for a model without BatchNorm; ``|bn=reestimate:<split key>[:batches]`` or
        ``|bn=interpolate`` for one with it.
        """
        if self.batchnorm is None:
            return ""
        if self.batchnorm == "interpolate":
            return "|bn=interpolate"
        assert self.batchnorm_split is not None
        count = "" if self.batchnorm_batches is None else f":{self.batchnorm_batches}"
        return f"|bn=reestimate:{self.batchnorm_split.key}{count}"

    def keyed(self, split: Split) -> Split:
        """`split` with its key carrying this engine's BatchNorm policy (if the model has
        BatchNorm; otherwise `split` itself)."""
        suffix = self.key_suffix
        return KeyedSplit(split, suffix) if suffix else split

    def refresh_batchnorm(self) -> None:
        """Re-estimate the BatchNorm statistics of the current point if the policy asks.

        Called by :meth:`evaluate` after a new point was written; code that changes the
        weights in place without ``set_*`` (an ascent) calls :meth:`mark_changed`.
        """
        if not self._stale:
            return
        self._stale = False
        if self.batchnorm != "reestimate":
            return
        assert self.batchnorm_split is not None
        split = self.prepared(self.batchnorm_split)
        batches = split.batches
        if self.batchnorm_batches is not None:
            batches = batches[: self.batchnorm_batches]
        reestimate_batchnorm(self.model, batches)

    def batchnorm_state(self) -> list[torch.Tensor] | None:
        """A copy of the current point's re-estimated BatchNorm statistics (None when the
        policy re-estimates nothing), for :meth:`restore_batchnorm` at the same point."""
        if self.batchnorm != "reestimate":
            return None
        self.refresh_batchnorm()
        return [
            t.detach().clone()
            for m in batchnorm_layers(self.model)
            for t in (m.running_mean, m.running_var)
            if t is not None
        ]

    @torch.no_grad()
    def restore_batchnorm(self, state: Sequence[torch.Tensor] | None) -> None:
        """Write statistics :meth:`batchnorm_state` copied at the point now resident.

        Re-estimation is deterministic (the same point, split and batches give the same
        statistics), so restoring them equals re-estimating, without the forward passes:
        a sequential sweep returns to each α once per block.
        """
        if state is None or self.batchnorm != "reestimate":
            return
        live = [
            t
            for m in batchnorm_layers(self.model)
            for t in (m.running_mean, m.running_var)
            if t is not None
        ]
        torch._foreach_copy_(live, list(state))
        self._stale = False

    def mark_changed(self) -> None:
        """The resident weights changed: re-estimate BatchNorm before the next evaluation."""
        self._stale = True

    def as_point(self, state: Mapping[str, torch.Tensor], *, name: str) -> list[torch.Tensor]:
        """A member's state dict as a point (tensor list in ``keys`` order, on device)."""
        out = []
        for key, ref in zip(self.keys, self._buffers, strict=True):
            if key not in state:
                raise PopulationError(
                    f"member '{name}' lacks key '{key}' that the model has; members must share "
                    "the model's architecture"
                )
            t = state[key]
            if tuple(t.shape) != tuple(ref.shape):
                raise PopulationError(
                    f"member '{name}' key '{key}' has shape {tuple(t.shape)}, the model has "
                    f"{tuple(ref.shape)}; members must share the model's architecture"
                )
            out.append(t.to(device=self.device, dtype=ref.dtype))
        return out

    @torch.no_grad()
    def set_point(self, point: Sequence[torch.Tensor]) -> None:
        torch._foreach_copy_(self._buffers, list(point))
        self._stale = True

    @torch.no_grad()
    def set_lerp(
        self, point_a: Sequence[torch.Tensor], point_b: Sequence[torch.Tensor], alpha: float
    ) -> None:
        """Write θα = α·θA + (1−α)·θB into the resident buffers.

        One ``lerp(θB, θA, α, out=buffer)`` per tensor reads both endpoints and writes the
        buffer once (a copy of θB followed by an in-place lerp passes over it twice).
        ``torch.lerp`` is exact at both ends: α = 0 gives θB and α = 1 gives θA.
        """
        if alpha == 0.0:
            self.set_point(point_b)
            return
        weight = float(alpha)
        for buf, b, a in zip(self._buffers, point_b, point_a, strict=True):
            torch.lerp(b, a, weight, out=buf)
        self._stale = True

    @torch.no_grad()
    def set_blend(
        self,
        base: Sequence[torch.Tensor],
        other: Sequence[torch.Tensor],
        weight: float,
        indices: Sequence[int],
    ) -> None:
        """Write `base` with the tensors at `indices` moved toward `other` by `weight`.

        θᵢ = base_i + weight·(other_i − base_i) = ``lerp(base_i, other_i, weight)`` for i in
        `indices` (positions in ``keys``), θᵢ = base_i elsewhere: a layer-wise path point
        (one block interpolated, the rest kept at one member) written in place, one
        pass per tensor, no model copy. ``weight = 0`` writes `base` exactly.
        """
        chosen = set(int(i) for i in indices)
        bad = sorted(i for i in chosen if not 0 <= i < len(self._buffers))
        if bad or len(base) != len(self._buffers) or len(other) != len(self._buffers):
            raise PopulationError(
                f"a blended point needs two points of {len(self._buffers)} tensors and "
                f"indices in 0…{len(self._buffers) - 1}; got {len(base)} and {len(other)} "
                f"tensors, bad indices {bad[:5]}; build the points with Evaluator.as_point"
            )
        w = float(weight)
        for i, (buf, x, y) in enumerate(zip(self._buffers, base, other, strict=True)):
            if i in chosen and w != 0.0:
                torch.lerp(x, y, w, out=buf)
            else:
                buf.copy_(x)
        self._stale = True

    @torch.no_grad()
    def set_combination(
        self,
        origin: Sequence[torch.Tensor],
        u: Sequence[torch.Tensor],
        v: Sequence[torch.Tensor],
        x: float,
        y: float,
    ) -> None:
        """Write θ = θ0 + x·u + y·v into the resident buffers (a point of a loss plane).

        Per tensor, ``add(θ0, u, alpha=x, out=buffer)`` then ``buffer += y·v``: two passes
        over the buffer, no temporary and no model copy. ``x = y = 0`` writes θ0 exactly
        (a copy); elsewhere the result is rounded once per pass in the buffers' dtype.
        :mod:`modeconn.engine.planes` builds ``u`` and ``v``; all three lists are in ``keys``
        order on the engine's device and dtype, like a member point.
        """
        if len(origin) != len(self._buffers) or len(u) != len(origin) or len(v) != len(origin):
            raise PopulationError(
                f"a plane point needs {len(self._buffers)} tensors (the engine's keys) for "
                f"origin, u and v; got {len(origin)}, {len(u)} and {len(v)}; build them from "
                "points of Evaluator.as_point"
            )
        if x == 0.0 and y == 0.0:
            self.set_point(origin)
            return
        wx, wy = float(x), float(y)
        for buf, o, du, dv in zip(self._buffers, origin, u, v, strict=True):
            torch.add(o, du, alpha=wx, out=buf)
            if wy != 0.0:
                buf.add_(dv, alpha=wy)
        self._stale = True

    @torch.no_grad()
    def set_weighted(
        self, points: Sequence[Sequence[torch.Tensor]], weights: Sequence[float]
    ) -> None:
        """Write θ = Σₖ wₖ·θₖ into the resident buffers (a point of a curve through nodes).

        Per tensor, ``mul(θ₀, w₀, out=buffer)`` then ``buffer += wₖ·θₖ`` for every other
        non-zero weight: no temporary, no model copy. A single weight of 1 (a curve's end)
        writes that point exactly. :func:`modeconn.engine.paths.curve_coefficients` gives
        the weights of a Bézier curve or a polygonal chain.
        """
        if len(points) != len(weights) or any(len(p) != len(self._buffers) for p in points):
            raise PopulationError(
                f"a weighted point needs one weight per point and points of "
                f"{len(self._buffers)} tensors; got {len(weights)} weights for "
                f"{[len(p) for p in points]} tensors; build the points with Evaluator.as_point"
            )
        used = [(p, float(w)) for p, w in zip(points, weights, strict=True) if w != 0.0]
        if not used:
            raise PopulationError("a weighted point needs a non-zero weight")
        if len(used) == 1 and used[0][1] == 1.0:
            self.set_point(used[0][0])
            return
        for i, buf in enumerate(self._buffers):
            torch.mul(used[0][0][i], used[0][1], out=buf)
            for p, w in used[1:]:
                buf.add_(p[i], alpha=w)
        self._stale = True

    def prepared(self, split: Split) -> Split:
        """`split` with its batches and labels on the engine's device (moved once)."""
        if split.batches and next(iter(split.batches[0].values())).device == self.device:
            return split
        hit = self._on_device.get(id(split))
        if hit is None or hit[0] is not split:
            # keep the source alive beside its copy so its id cannot be reused
            hit = (split, split.to(self.device))
            self._on_device[id(split)] = hit
        return hit[1]

    @torch.inference_mode()
    def evaluate(
        self, split: Split, *, kind: str = "path", per_example: bool = False
    ) -> EvalResult:
        """Mean cross-entropy and metrics of the current point on `split`."""
        self.counts[(kind, split.name)] += 1
        self.refresh_batchnorm()
        split = self.prepared(split)
        losses = []
        preds = []
        for batch, labels in zip(split.batches, split.batch_labels(), strict=True):
            logits = self.forward(self._module, self.point, batch)
            mapped = split.map_logits(logits.float())  # losses in float32 whatever the dtype
            losses.append(F.cross_entropy(mapped, labels, reduction="none"))
            preds.append(mapped.argmax(dim=1))
        loss_vec = torch.cat(losses).double().cpu().numpy()  # (n,) batch order; mean in fp64
        pred_vec = torch.cat(preds).cpu().numpy()
        example_losses = predictions = None
        if per_example:
            example_losses = np.empty_like(loss_vec, dtype=np.float32)
            example_losses[split.order] = loss_vec  # back to sample order
            predictions = np.empty_like(pred_vec)
            predictions[split.order] = pred_vec
        return EvalResult(
            split=split.name,
            loss=float(loss_vec.mean()),
            metrics=split.score(pred_vec),
            n_examples=int(loss_vec.size),
            example_losses=example_losses,
            predictions=predictions,
        )

    def evaluate_member(
        self, point: Sequence[torch.Tensor], split: Split, *, per_example: bool = False
    ) -> EvalResult:
        self.set_point(point)
        return self.evaluate(split, kind="member", per_example=per_example)

    def evaluate_lerp(
        self,
        point_a: Sequence[torch.Tensor],
        point_b: Sequence[torch.Tensor],
        alpha: float,
        split: Split,
        *,
        per_example: bool = False,
    ) -> EvalResult:
        self.set_lerp(point_a, point_b, alpha)
        return self.evaluate(split, kind="path", per_example=per_example)
