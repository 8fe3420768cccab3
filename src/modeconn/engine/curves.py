"""Curves beyond the line: train the bends of a Bézier curve or a polygonal chain.

Garipov et al. (2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs";
Juneja et al. 2023, Fig. 10) and Lubana et al. (2023, "Mechanistic Mode Connectivity")
join two members that no straight line connects by a *curve* through trained bends:

    θ(t) = Σₖ cₖ(t)·θₖ,   nodes θ₀ = θA, θ₁ … θₙ (the bends), θₙ₊₁ = θB,

with the weights cₖ of :func:`modeconn.engine.paths.curve_coefficients` (a quadratic
Bézier curve (1 − t)²θA + 2t(1 − t)θ₁ + t²θB for one bend, or a polygonal chain). The
maths runs in the curve's own parameter t (0 at A, 1 at B, Garipov et al.'s form); what
:func:`evaluate_curve` returns, and everything stored and shown, is in the sweep's path
coordinate α = 1 − t, **α = 1 at A and α = 0 at B**, as on every linear path. The
bends are trained to lower the loss *along the whole curve*: each step draws t ~ U(0, 1)
(seeded), writes θ(t) into the engine's resident weights, takes the mini-batch loss
gradient g = ∇L(θ(t)) there, and moves bend k by its chain-rule share cₖ(t)·g
(:func:`~modeconn.engine.paths.bend_gradient_scales`; 2t(1 − t) for the quadratic curve,
as Lubana et al.'s code scales its step). SGD with momentum and a cosine schedule from
``lr`` to 0; endpoints never move.

**Any model the engine takes.** Nothing here knows the architecture: the point is written
into the skeleton's own tensors (:meth:`~modeconn.engine.evaluate.Evaluator.set_weighted`)
and the loss is the engine's forward (``model(**batch)``, dict inputs for a Hugging Face
transformer, images for a CNN) with the split's logit map. No layer is rewritten.

**BatchNorm.** While the bends train, BatchNorm layers run in train mode (batch
statistics, as in Garipov et al.'s curve training); every other module stays in eval
mode (dropout off), so a step is a deterministic function of its batch and t. The
running statistics this leaves behind are discarded: the resident point (weights and
buffers) is restored on exit, and evaluating the curve re-estimates them at each α by the
engine's policy (``eval.batchnorm: reestimate`` on ``eval.batchnorm_split``, the same code
as every linear path). The bends' own float buffers stay where they started, on the line,
so with ``eval.batchnorm: interpolate`` the curve's statistics are the line's.

**Resumable.** :func:`ensure_bends` keeps trained bends as a safetensors file, written
atomically, named by both endpoints' weight hashes and a fingerprint of the settings and
the training data; a rerun loads it and trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modeconn._atomic import replace_atomic
from modeconn.data.base import Split
from modeconn.engine.evaluate import EvalResult, Evaluator, batchnorm_layers
from modeconn.engine.paths import CURVE_KINDS, curve_coefficients, curve_t, line_bends
from modeconn.errors import ConfigError, DataError, PopulationError
from modeconn.measures.sharpness import AscentBatches, restoring
from modeconn.population.weights import check_compatible

__all__ = [
    "BendConfig",
    "CurveEvaluation",
    "bend_file",
    "check_same_architecture",
    "ensure_bends",
    "evaluate_curve",
    "load_bends",
    "save_bends",
    "train_bends",
]

Point = Sequence[torch.Tensor]
FIELD = "analyses.curves"


@dataclass(frozen=True)
class BendConfig:
    """How the bends are trained (the study's ``analyses.curves`` fields of the same names).

    >>> BendConfig(kind="chain", bends=2, steps=10).kind
    'chain'
    """

    kind: str = "bezier"
    bends: int = 1
    steps: int = 200
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in CURVE_KINDS:
            raise ConfigError(
                f"{FIELD}.kind must be one of {', '.join(CURVE_KINDS)}; got {self.kind!r}"
            )
        for name in ("bends", "steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{FIELD}.{name} must be an integer ≥ 1; got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"{FIELD}.lr must be a positive number; got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"{FIELD}.momentum must be in [0, 1); got {self.momentum!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"{FIELD}.weight_decay must be ≥ 0; got {self.weight_decay!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_same_architecture(
    name_a: str,
    state_a: Mapping[str, torch.Tensor],
    name_b: str,
    state_b: Mapping[str, torch.Tensor],
) -> None:
    """Raise :class:`PopulationError` unless both endpoints have the same float entries and
    shapes (a curve between members of different architectures has no meaning)."""
    floats_a = {k: v for k, v in state_a.items() if v.is_floating_point()}
    floats_b = {k: v for k, v in state_b.items() if v.is_floating_point()}
    try:
        check_compatible(floats_a, floats_b, name=name_b, reference_name=f"member {name_a!r}")
    except PopulationError as err:
        raise PopulationError(
            f"{FIELD}: no curve between {name_a!r} and {name_b!r}: {err}"
        ) from None


# --------------------------------------------------------------------------- training


def _trainable(ev: Evaluator) -> tuple[list[torch.nn.Parameter], list[int], list[int]]:
    """The model's unique parameters, the key index each is trained at, and for every
    key the index of the first key sharing its storage (tied weights, itself otherwise)."""
    by_name = dict(ev.model.named_parameters(remove_duplicate=False))
    first: dict[tuple[int, tuple[int, ...]], int] = {}
    alias: list[int] = []
    for i, buf in enumerate(ev.point.values()):
        alias.append(first.setdefault((buf.data_ptr(), tuple(buf.shape)), i))
    params: list[torch.nn.Parameter] = []
    slots: list[int] = []
    seen: set[int] = set()
    for i, key in enumerate(ev.keys):
        p = by_name.get(key)
        if p is None or alias[i] != i or id(p) in seen:
            continue
        seen.add(id(p))
        params.append(p)
        slots.append(i)
    return params, slots, alias


def _initial_bends(a: Point, b: Point, bends: int, alias: list[int]) -> list[list[torch.Tensor]]:
    """Bends on the line, at t = k / (bends + 1); tied entries share one tensor."""
    out = []
    for t in line_bends(bends):
        bend: list[torch.Tensor] = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            bend.append(bend[alias[i]] if alias[i] != i else torch.lerp(x, y, t).clone())
        out.append(bend)
    return out


@dataclass(frozen=True)
class TrainedBends:
    """The bends (tensor lists in the engine's key order) and the per-step training losses."""

    bends: list[list[torch.Tensor]]
    losses: list[float]
    trained: bool = True  # False when loaded from a file

    @property
    def final_loss(self) -> float:
        """Mean mini-batch loss over the last tenth of the steps (NaN if none recorded)."""
        if not self.losses:
            return float("nan")
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return float(np.mean(tail))


@torch.inference_mode(False)
def train_bends(
    evaluator: Evaluator,
    a: Point,
    b: Point,
    split: Split,
    config: BendConfig,
    *,
    progress: Callable[[int, float], None] | None = None,
) -> TrainedBends:
    """Train the bends of the curve from `a` to `b` on `split`'s loss (module docstring).

    `a`, `b` are points of :meth:`Evaluator.as_point`. Returns the bends; the evaluator's
    resident point, parameter flags and gradients are as they were.
    """
    ev = evaluator
    params, slots, alias = _trainable(ev)
    bends = _initial_bends(a, b, config.bends, alias)
    nodes = [list(a), *bends, list(b)]
    velocity = [[torch.zeros_like(bend[i]) for i in slots] for bend in bends]
    draws = torch.Generator().manual_seed(config.seed)  # t per step (curve parameter)
    losses: list[float] = []
    live = dict(ev.point)  # the forward sees the live parameters (hf_logits reads the dict)
    for p, i in zip(params, slots, strict=True):
        live[ev.keys[i]] = p
    norms = batchnorm_layers(ev.model)
    with restoring(ev):
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        batches = AscentBatches(
            split, ev.device, batch_size=config.batch_size, examples=split.n, seed=config.seed
        )
        for step in range(config.steps):
            t = float(torch.rand((), generator=draws, dtype=torch.float64))
            coeffs = curve_coefficients(config.kind, config.bends, t)
            ev.set_weighted(nodes, coeffs.tolist())
            batch, labels = next(batches)
            for m in norms:  # batch statistics, as curve training does; the rest in eval
                m.train()
            try:
                with torch.enable_grad():
                    logits = ev.forward(ev.model, live, batch)
                    loss = F.cross_entropy(split.map_logits(logits.float()), labels)
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
            finally:
                for m in norms:
                    m.eval()
            losses.append(float(loss.detach()))
            lr = 0.5 * config.lr * (1.0 + math.cos(math.pi * step / config.steps))
            with torch.no_grad():
                for k, bend in enumerate(bends):
                    scale = float(coeffs[k + 1])  # ∂θ(t)/∂θₖ, the chain rule's factor
                    for j, (i, g) in enumerate(zip(slots, grads, strict=True)):
                        if g is None:
                            continue
                        d = g * scale
                        if config.weight_decay:
                            d = d + config.weight_decay * bend[i]
                        v = velocity[k][j]
                        v.mul_(config.momentum).add_(d)
                        bend[i].sub_(v, alpha=lr)
            if progress is not None:
                progress(step, losses[-1])
    ev.mark_changed()
    return TrainedBends(bends, losses)


# --------------------------------------------------------------------------- resuming


def bend_fingerprint(config: BendConfig, split_key: str, dtype: str) -> str:
    """What a trained bend depends on beyond its endpoints: settings, data, precision."""
    blob = json.dumps(
        {"v": 1, **config.to_dict(), "split": split_key, "dtype": dtype}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def bend_file(folder: Path, hash_a: str, hash_b: str, fingerprint: str) -> Path:
    """``<folder>/curves/<hash A>-<hash B>-<fingerprint>.safetensors``."""
    return Path(folder) / "curves" / f"{hash_a[:16]}-{hash_b[:16]}-{fingerprint}.safetensors"


def save_bends(path: Path, ev: Evaluator, trained: TrainedBends, meta: Mapping[str, Any]) -> None:
    """Write the bends as one safetensors file (``bend<k>.<key>``), atomically; tied entries
    are stored once."""
    from safetensors.torch import save_file

    _, _, alias = _trainable(ev)
    tensors = {
        f"bend{k}.{key}": t.detach().to("cpu").contiguous()
        for k, bend in enumerate(trained.bends)
        for i, (key, t) in enumerate(zip(ev.keys, bend, strict=True))
        if alias[i] == i
    }
    metadata = {k: json.dumps(v) for k, v in {**meta, "losses": trained.losses}.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_bends(path: Path, ev: Evaluator, bends: int) -> TrainedBends:
    """The bends of a file :func:`save_bends` wrote, on the engine's device; a file that
    does not fit the model is a :class:`DataError` naming it."""
    from safetensors import safe_open

    _, _, alias = _trainable(ev)
    out: list[list[torch.Tensor]] = []
    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            meta = f.metadata() or {}
            for k in range(bends):
                bend: list[torch.Tensor] = []
                for i, (key, ref) in enumerate(zip(ev.keys, ev.point.values(), strict=True)):
                    if alias[i] != i:
                        bend.append(bend[alias[i]])
                        continue
                    name = f"bend{k}.{key}"
                    if name not in names:
                        raise KeyError(name)
                    t = f.get_tensor(name)
                    if tuple(t.shape) != tuple(ref.shape):
                        raise KeyError(f"{name} has shape {tuple(t.shape)}")
                    bend.append(t.to(device=ev.device, dtype=ref.dtype))
                out.append(bend)
    except (KeyError, OSError, ValueError, RuntimeError) as err:
        raise DataError(
            f"trained bends {path} do not fit the study's model ({err}); delete the file "
            "to train them again"
        ) from None
    losses = json.loads(meta.get("losses", "[]"))
    return TrainedBends(out, [float(x) for x in losses], trained=False)


def ensure_bends(
    ev: Evaluator,
    a: Point,
    b: Point,
    split: Split,
    config: BendConfig,
    path: Path,
    *,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> TrainedBends:
    """The bends kept at `path` if it exists (nothing trained), else trained and saved."""
    if path.exists():
        return load_bends(path, ev, config.bends)
    trained = train_bends(ev, a, b, split, config, progress=progress)
    save_bends(path, ev, trained, {**(meta or {}), "config": config.to_dict()})
    return trained


# --------------------------------------------------------------------------- evaluating


@dataclass(frozen=True)
class CurveEvaluation:
    """Loss and metrics along the curve and along the straight line, at the same α.

    α is the sweep's path coordinate, α = 1 at A and α = 0 at B for both paths: the line
    here is α·θA + (1 − α)·θB, written exactly as the sweep writes it, and the curve's
    point at α is θ(t) with t = 1 − α.
    """

    alphas: list[float]
    curve: list[EvalResult]
    line: list[EvalResult]


def evaluate_curve(
    evaluator: Evaluator,
    nodes: Sequence[Point],
    split: Split,
    alphas: Sequence[float],
    *,
    kind: str,
) -> CurveEvaluation:
    """Evaluate the curve through `nodes` ([θA, bends…, θB]) and the line from θA to θB at
    each α of `alphas` (α = 1 is θA, α = 0 is θB: the sweep's convention) on `split`,
    through the engine (BatchNorm statistics by its policy at every point). The line's
    point is the sweep's own (:meth:`Evaluator.set_lerp`), so its losses are the linear
    path's at the same α. The ends are shared: α = 0 and α = 1 are evaluated once.
    Counted as ``kind="curve"`` in the evaluator's counts."""
    ev = evaluator
    a, b = nodes[0], nodes[-1]
    curve: list[EvalResult] = []
    line: list[EvalResult] = []
    for alpha in alphas:
        c = curve_coefficients(kind, len(nodes) - 2, curve_t(float(alpha)))
        ev.set_weighted(nodes, c.tolist())
        on_curve = ev.evaluate(split, kind="curve")
        curve.append(on_curve)
        if float(alpha) in (0.0, 1.0):
            line.append(on_curve)  # the same point: θB or θA
            continue
        ev.set_lerp(a, b, float(alpha))  # α·θA + (1 − α)·θB, as the sweep writes it
        line.append(ev.evaluate(split, kind="curve"))
    return CurveEvaluation([float(x) for x in alphas], curve, line)
