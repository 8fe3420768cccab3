"""ε-sharpness: the flatness baseline that the basins are compared against.

ε-sharpness
-----------
Keskar et al. (2017, "On Large-Batch Training for Deep Learning: Generalization Gap and
Sharp Minima") measure how sharp a minimum x is by how much the loss can rise inside a
small box around it (their metric in the full space, A = I):

    φ(x, ε) = 100 · (max_{y∈C} L(x + y) − L(x)) / (1 + L(x)),
    C = { y : |yᵢ| ≤ ε (|xᵢ| + 1) for every weight i }.

The box scales with each weight, so a large weight may move further than a small one,
and the +1 lets weights near zero move at all. Juneja et al. (2023, "Linear Connectivity
Reveals Generalization Strategies", App. F.4) report φ for their fine-tuned BERTs as the
baseline that basin membership is compared with. They approximate the max by projected
gradient *ascent* on y: each update adds ``lr`` times the summed gradients of
``accumulate`` mini-batch losses, then clamps y back into the box,

    y ← clamp(y + lr · Σₖ ∇L_batchₖ(x + y), −r, r),   r = ε (|x| + 1),

and take the loss at the final y as the max. :class:`SharpnessConfig`'s defaults are the
paper's values: ε = 1e-5, lr = 8e-5, batches of 32 with 4 accumulated per update,
8,192 updates, on up to 32,768 examples: 32,768 forward and backward passes of 32
examples, a GPU job for a BERT-base. A CPU-sized demo is ``SharpnessConfig(steps=20,
examples=256, accumulate=1)``; for the 6-layer MiniLM on 256 MNLI examples and one busy
CPU thread it took 1.5–2 minutes, and about 1 minute with ``bucket=8`` (a forward and
backward pass of 32 random examples costs seconds there, half of it padding), so a demo
over a population wants ``batch_size=8`` or fewer steps. With ε this small φ is small
(the loss barely moves), so compare φ across members, not against a threshold.

What this implementation does, and where it differs from the paper's code:

* **What is perturbed**: every ``nn.Parameter`` of the evaluator's model (embeddings,
  encoder, LayerNorms, pooler, head). Floating-point buffers that are not parameters are
  left as they are (a BERT has none: its ``position_ids`` are integers). Tied weights
  are one parameter and get one perturbation.
* **Box**: |yᵢ| ≤ ε(|xᵢ| + 1), Keskar's definition. The paper's code clamps to
  x ± ε(x + 1) (no absolute value): a box of half-width ε|x + 1|, narrower for every
  negative weight.
* **Losses**: L(x) and L(x + y) are the engine's mean cross-entropy
  (:meth:`~modeconn.engine.evaluate.Evaluator.evaluate`, so HANS's 3→2 logit grouping applies)
  over the whole prepared split. The ascent draws its mini-batches from at most
  ``examples`` of the split's examples (a seeded subset when the split is larger); the
  paper evaluates and ascends on the same examples, which is the case here whenever
  ``examples ≥ split.n``.
* **Mini-batches**: each epoch over that pool is a fresh seeded permutation cut into
  batches of ``batch_size`` (the remainder is dropped; a pool smaller than a batch is
  one batch), re-collated and trimmed to the longest row in the batch; ``bucket`` > 1
  groups them by length (:class:`SharpnessConfig`).
* **Dropout off**: the ascent runs in eval mode, so it climbs the same deterministic
  loss that is reported; the paper's code ran it in train mode (dropout on).
* **Precision**: y is kept apart from the weights in float32 and x + y is written into
  them before each forward pass, so ascent steps smaller than a weight's rounding step
  still add up (the paper's optimizer added them to the weights directly). Sharpness
  needs float32 weights: at bfloat16/float16 the box is narrower than one rounding step.
* The final L(x + y) may fall below L(x) (the ascent follows mini-batch gradients, the
  loss is on the whole split); φ is then negative and reported as such, a sign that the
  ascent needs more steps or a smaller ``lr``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modeconn.data.base import Split
from modeconn.engine.evaluate import Evaluator
from modeconn.errors import ConfigError, DataError, PopulationError, require_keys

__all__ = [
    "SharpnessConfig",
    "SharpnessResult",
    "ascent_perturbation",
    "box_radius",
    "epsilon_sharpness",
    "sharpness_value",
]

# Part of every config fingerprint: bump it when the algorithm changes what it computes,
# so stored values from the old algorithm are not taken for new ones.
SHARPNESS_VERSION = 1

_FIELD = "analyses.sharpness"  # where a study file sets these options


# --------------------------------------------------------------------------- configuration


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{_FIELD}.{name} must be a number > 0; got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{_FIELD}.{name} must be a finite number > 0; got {value!r}")
    return float(value)


def _int_at_least(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{_FIELD}.{name} must be an integer ≥ {minimum}; got {value!r}")
    if value < minimum:
        raise ConfigError(f"{_FIELD}.{name} must be an integer ≥ {minimum}; got {value}")
    return int(value)


@dataclass(frozen=True)
class SharpnessConfig:
    """How ε-sharpness is estimated; the defaults are Juneja et al.'s values (App. F.4).

    ``epsilon`` sizes the box ε(|x| + 1); ``steps`` ascent updates of learning rate
    ``lr``, each summing the gradients of ``accumulate`` mini-batches of ``batch_size``
    examples drawn from at most ``examples`` examples of the split; ``seed`` drives every
    random draw (the example subset and the batch order). ``bucket`` > 1 groups each run
    of ``bucket`` random batches by length before cutting them (as training does), which
    halves the padding of random MNLI batches; 1, the default, is the paper's plain random
    batches. Values are checked up front; a bad one is a
    :class:`~modeconn.errors.ConfigError` naming the field.

    >>> SharpnessConfig().steps, SharpnessConfig().epsilon
    (8192, 1e-05)
    >>> demo = SharpnessConfig(steps=20, examples=256, accumulate=1)
    >>> SharpnessConfig.from_dict(demo.to_dict()) == demo
    True
    >>> len(demo.fingerprint())
    16
    """

    epsilon: float = 1e-5
    steps: int = 8192
    lr: float = 8e-5
    batch_size: int = 32
    accumulate: int = 4
    examples: int = 32768
    seed: int = 0
    bucket: int = 1

    def __post_init__(self) -> None:
        # normalise numeric types too, so that lr=1 and lr=1.0 share one fingerprint
        object.__setattr__(self, "epsilon", _positive_float("epsilon", self.epsilon))
        object.__setattr__(self, "lr", _positive_float("lr", self.lr))
        for name in ("steps", "batch_size", "accumulate", "examples", "bucket"):
            object.__setattr__(self, name, _int_at_least(name, getattr(self, name), 1))
        object.__setattr__(self, "seed", _int_at_least("seed", self.seed, 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SharpnessConfig:
        """Inverse of :meth:`to_dict`; missing fields take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{_FIELD} has unknown field(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))

    def fingerprint(self) -> str:
        """A short sha256 of the fields and the algorithm version, for store keys."""
        payload = {"v": SHARPNESS_VERSION, **self.to_dict()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SharpnessResult:
    """φ of one point and what produced it.

    ``value`` is φ (percent of 1 + L(x)); ``loss`` is L(x) and ``max_loss`` L(x + y) at
    the final y, both over the ``n_examples`` examples of the split ``split`` (its store
    key); the ascent ran ``steps`` updates on ``ascent_examples`` examples with box size
    ``epsilon`` and took ``seconds`` of wall time.
    """

    value: float
    loss: float
    max_loss: float
    steps: int
    epsilon: float
    n_examples: int
    seconds: float
    split: str = ""
    ascent_examples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (Python scalars)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SharpnessResult:
        """Inverse of :meth:`to_dict`."""
        required = ("value", "loss", "max_loss", "steps", "epsilon", "n_examples", "seconds")
        require_keys(data, required, "SharpnessResult")
        return cls(
            value=float(data["value"]),
            loss=float(data["loss"]),
            max_loss=float(data["max_loss"]),
            steps=int(data["steps"]),
            epsilon=float(data["epsilon"]),
            n_examples=int(data["n_examples"]),
            seconds=float(data["seconds"]),
            split=str(data.get("split", "")),
            ascent_examples=int(data.get("ascent_examples", 0)),
        )


# --------------------------------------------------------------------------- the maths


def sharpness_value(loss: float, max_loss: float) -> float:
    """φ = 100 · (max_loss − loss) / (1 + loss), Keskar et al.'s normalisation.

    >>> sharpness_value(0.25, 0.5)  # 100 · 0.25 / 1.25
    20.0
    >>> sharpness_value(1.0, 1.0)
    0.0
    """
    loss, max_loss = float(loss), float(max_loss)
    if not (math.isfinite(loss) and math.isfinite(max_loss)):
        raise DataError(
            f"ε-sharpness needs finite losses; got L(x) = {loss}, max L(x+y) = {max_loss} "
            "(a diverged model or ascent: lower analyses.sharpness.lr)"
        )
    if loss < 0:
        raise DataError(f"ε-sharpness needs a cross-entropy L(x) ≥ 0; got {loss}")
    return 100.0 * (max_loss - loss) / (1.0 + loss)


def box_radius(point: Sequence[torch.Tensor], epsilon: float) -> list[torch.Tensor]:
    """Per-entry half-width ε(|x| + 1) of the box around `point`, one tensor per tensor.

    >>> box_radius([torch.tensor([0.0, -2.0, 0.5])], 0.1)
    [tensor([0.1000, 0.3000, 0.1500])]
    """
    radius = torch._foreach_abs(list(point))
    torch._foreach_add_(radius, 1.0)
    torch._foreach_mul_(radius, float(epsilon))
    return list(radius)


# --------------------------------------------------------------------------- mini-batches


class AscentBatches:
    """Seeded mini-batches re-collated from a prepared split's rows, on `device`.

    The split's rows come from its :meth:`~modeconn.data.base.Split.example_table`: for
    text, one (n, width) padded table per input, and a batch is a set of rows trimmed to
    its longest row; for fixed-size inputs (images), a set of rows. Every tensor is
    created here, outside inference mode, so autograd may save it for backward.
    """

    def __init__(
        self,
        split: Split,
        device: torch.device,
        *,
        batch_size: int,
        examples: int,
        seed: int,
        bucket: int = 1,
    ) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        # every example as a row: (n, width) padded tokens, or (n, …) fixed-size inputs
        rows = split.example_table()
        table = rows.inputs
        n = split.n
        if examples < n:  # the ascent's pool: a seeded subset of the split
            keep = torch.randperm(n, generator=self.generator)[:examples]
        else:
            keep = torch.arange(n)
        self.n = int(keep.numel())
        self.batch_size = min(batch_size, self.n)
        # (pool,) real tokens per row, kept on the CPU; None for fixed-size inputs
        self.lengths = None if rows.lengths is None else rows.lengths[keep]
        self.table = {k: v[keep].clone().to(device) for k, v in table.items()}
        self.labels = split.labels.cpu()[keep].clone().to(device)
        self.device = device
        self.bucket = bucket
        self._queue: list[torch.Tensor] = []

    def _epoch(self) -> list[torch.Tensor]:
        """One pass over the pool: a seeded permutation cut into full batches.

        With ``bucket`` > 1 each run of ``bucket`` batches of the permutation is sorted by
        length before it is cut, and the epoch's batches are then shuffled: every example
        still appears once per epoch, but a batch holds rows of similar length.
        """
        size = self.batch_size
        # drop the remainder before any sorting, so it is random rows, not the longest
        perm = torch.randperm(self.n, generator=self.generator)[: self.n // size * size]
        batches: list[torch.Tensor] = []
        chunk = size * self.bucket
        for start in range(0, self.n, chunk):
            part = perm[start : start + chunk]
            if self.bucket > 1 and self.lengths is not None:  # stable: ties keep the order
                part = part[torch.sort(self.lengths[part], stable=True).indices]
            batches += list(part.split(size))
        if self.bucket > 1:
            order = torch.randperm(len(batches), generator=self.generator).tolist()
            batches = [batches[i] for i in order]
        batches.reverse()  # popped from the end: the first batch comes first
        return batches

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        return self

    def __next__(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if not self._queue:
            self._queue = self._epoch()
        rows = self._queue.pop()
        idx = rows.to(self.device)
        if self.lengths is None:  # fixed-size inputs: nothing to trim
            batch = {k: v.index_select(0, idx) for k, v in self.table.items()}
        else:
            width = int(self.lengths[rows].max())  # on the CPU: no device sync
            batch = {k: v[:, :width].index_select(0, idx) for k, v in self.table.items()}
        return batch, self.labels.index_select(0, idx)


# --------------------------------------------------------------------------- the ascent


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def _check(evaluator: Evaluator, point: Sequence[torch.Tensor], config: SharpnessConfig) -> None:
    if not isinstance(config, SharpnessConfig):
        raise ConfigError(
            f"config must be a SharpnessConfig; got {type(config).__name__} (build one with "
            "SharpnessConfig(...) or SharpnessConfig.from_dict(...))"
        )
    if evaluator.dtype != torch.float32:
        raise ConfigError(
            f"ε-sharpness needs eval.dtype float32; got {str(evaluator.dtype).split('.')[-1]}, "
            f"whose rounding step near 1 ({torch.finfo(evaluator.dtype).eps:g}) is wider than "
            f"the box ε = {config.epsilon:g}; evaluate sharpness with a float32 Evaluator"
        )
    tiny = torch.finfo(torch.float32).eps
    if config.epsilon <= tiny:
        raise ConfigError(
            f"{_FIELD}.epsilon = {config.epsilon:g} is below float32's rounding step near 1 "
            f"({tiny:g}): weights would round the perturbation away; use epsilon ≥ 1e-6"
        )
    resident = list(evaluator.point.values())
    if len(point) != len(resident):
        raise PopulationError(
            f"the point has {len(point)} tensors, the evaluator's model has {len(resident)} "
            "floating-point entries; build the point with Evaluator.as_point"
        )
    for key, t, ref in zip(evaluator.keys, point, resident, strict=True):
        if t.shape != ref.shape or t.dtype != ref.dtype or t.device != ref.device:
            raise PopulationError(
                f"point entry '{key}' is {tuple(t.shape)} {t.dtype} on {t.device}, the "
                f"evaluator's is {tuple(ref.shape)} {ref.dtype} on {ref.device}; build the "
                "point with Evaluator.as_point"
            )


@contextlib.contextmanager
def restoring(evaluator: Evaluator) -> Iterator[list[torch.Tensor]]:
    """Yield a copy of the resident point; afterwards put the point, flags and grads back."""
    saved = [t.detach().clone() for t in evaluator.point.values()]
    state = [(p, p.requires_grad, p.grad) for p in evaluator.model.parameters()]
    try:
        yield saved
    finally:
        for p, flag, grad in state:
            p.grad = grad
            p.requires_grad_(flag)
        evaluator.set_point(saved)


def _parameters(evaluator: Evaluator) -> tuple[list[nn.Parameter], list[int | None]]:
    """The model's unique parameters, and for each evaluator key its parameter's slot."""
    by_name = dict(evaluator.model.named_parameters(remove_duplicate=False))
    params: list[nn.Parameter] = []
    slot_of: dict[int, int] = {}
    slots: list[int | None] = []
    for key, buf in zip(evaluator.keys, evaluator.point.values(), strict=True):
        p = by_name.get(key)
        if p is None:
            slots.append(None)  # a floating buffer: not perturbed
            continue
        # the engine's resident point must be the parameters' own storage
        assert _same_storage(buf, p), f"resident entry {key} is not its parameter's storage"
        if id(p) not in slot_of:
            slot_of[id(p)] = len(params)
            params.append(p)
        slots.append(slot_of[id(p)])
    return params, slots


# a caller under torch.inference_mode() would make every tensor created here an inference
# tensor, which autograd cannot save and in-place updates cannot touch: the ascent leaves it
@torch.inference_mode(False)
def _ascend(
    evaluator: Evaluator,
    point: Sequence[torch.Tensor],
    split: Split,
    config: SharpnessConfig,
    saved: Sequence[torch.Tensor],
) -> tuple[list[torch.Tensor], list[int | None]]:
    """Projected gradient ascent on y; returns y per parameter and each key's slot.

    On return the parameters hold x + y (the resident point is the perturbed one) and the
    caller restores the evaluator (:func:`restoring`).
    """
    params, slots = _parameters(evaluator)
    evaluator.set_point(point)  # buffers that are not parameters stay at the point's values
    x: list[torch.Tensor] = [torch.empty(0)] * len(params)
    for i, slot in enumerate(slots):
        if slot is not None:
            # x must not alias the weights it is added to: use the saved copy if it does
            x[slot] = saved[i] if _same_storage(point[i], params[slot]) else point[i]
    radius = box_radius(x, config.epsilon)
    lower = torch._foreach_neg(radius)
    y = [torch.zeros_like(t) for t in x]
    # the forward sees the live parameters (hf_logits-style forwards read the point dict)
    live: dict[str, torch.Tensor] = {
        key: (params[slot] if slot is not None else buf)
        for key, buf, slot in zip(evaluator.keys, evaluator.point.values(), slots, strict=True)
    }
    model = evaluator.model
    weights: list[torch.Tensor] = list(params)
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    with torch.enable_grad():
        batches = AscentBatches(
            split,
            evaluator.device,
            batch_size=config.batch_size,
            examples=config.examples,
            seed=config.seed,
            bucket=config.bucket,
        )
        for _ in range(config.steps):
            for _ in range(config.accumulate):
                batch, labels = next(batches)
                logits = evaluator.forward(model, live, batch)
                loss = F.cross_entropy(split.map_logits(logits.float()), labels)
                # each batch's mean loss adds its gradient: the update uses their sum, as
                # the paper's code (backward per batch, one optimizer step per `accumulate`)
                loss.backward()
            with torch.no_grad():
                has = [i for i, p in enumerate(params) if p.grad is not None]
                grads = [g for g in (params[i].grad for i in has) if g is not None]
                ys = [y[i] for i in has]
                torch._foreach_add_(ys, grads, alpha=config.lr)
                torch._foreach_clamp_min_(ys, [lower[i] for i in has])
                torch._foreach_clamp_max_(ys, [radius[i] for i in has])
                for p in params:
                    p.grad = None
                torch._foreach_copy_(weights, x)  # the weights become x + y
                torch._foreach_add_(weights, y)
    return y, slots


def ascent_perturbation(
    evaluator: Evaluator,
    point: Sequence[torch.Tensor],
    split: Split,
    *,
    config: SharpnessConfig,
) -> list[torch.Tensor]:
    """The ascent's final y, one tensor per evaluator key (zeros where not perturbed).

    Runs the ascent of :func:`epsilon_sharpness` without its two evaluations; every entry
    satisfies |y| ≤ ε(|x| + 1). The evaluator is left as it was found.
    """
    _check(evaluator, point, config)
    with restoring(evaluator) as saved:
        y, slots = _ascend(evaluator, point, split, config, saved)
    return [
        torch.zeros_like(t) if slot is None else y[slot]
        for t, slot in zip(point, slots, strict=True)
    ]


def epsilon_sharpness(
    evaluator: Evaluator,
    point: Sequence[torch.Tensor],
    split: Split,
    *,
    config: SharpnessConfig,
) -> SharpnessResult:
    """ε-sharpness φ of `point` on `split` (Keskar et al. 2017; Juneja et al. 2023 F.4).

    `point` is a member as the engine holds it (:meth:`Evaluator.as_point`: tensors in
    ``evaluator.keys`` order). L(x) and the final L(x + y) are the engine's mean loss over
    the whole prepared split (counted as ``kind="sharpness"``); the ascent between them
    is described in the module docstring. The evaluator's resident point, its parameters'
    ``requires_grad`` flags and gradients are restored on return, also after an error.
    """
    _check(evaluator, point, config)
    start = time.perf_counter()
    with restoring(evaluator) as saved:
        evaluator.set_point(point)
        base = evaluator.evaluate(split, kind="sharpness")
        _ascend(evaluator, point, split, config, saved)  # leaves the weights at x + y
        evaluator.mark_changed()  # BatchNorm statistics, if re-estimated, follow x + y
        top = evaluator.evaluate(split, kind="sharpness")
    pool = min(split.n, config.examples)
    return SharpnessResult(
        value=sharpness_value(base.loss, top.loss),
        loss=base.loss,
        max_loss=top.loss,
        steps=config.steps,
        epsilon=config.epsilon,
        n_examples=base.n_examples,
        seconds=time.perf_counter() - start,
        split=split.key,
        ascent_examples=pool,
    )
