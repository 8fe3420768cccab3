"""The one evaluation engine: any parameter point, any split.

One skeleton model stays resident. A parameter point is written *in place* into
preallocated tensors (``torch._foreach_copy_`` for a member, then
``torch._foreach_lerp_`` for θα = αθA + (1−α)θB = lerp(θB, θA, α)), and the model is
called through ``torch.func.functional_call`` with those tensors, so no model is
copied and no ``load_state_dict`` runs per point. Splits arrive pre-collated
(:mod:`modeconn.tasks.text`), so a point costs one forward pass over the sample.

Every path, plane, curve and sweep evaluates through :class:`Evaluator`; its
``counts`` record how many member (endpoint) and path evaluations ran per split.
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

from modeconn.errors import PopulationError
from modeconn.tasks.text import PreparedSplit

ForwardFn = Callable[[nn.Module, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], Any]


def hf_logits(
    model: nn.Module, point: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Logits of a Hugging Face classifier (or any module returning logits) at `point`."""
    out = functional_call(model, dict(point), args=(), kwargs=dict(batch), strict=False)
    return out.logits if hasattr(out, "logits") else out


@dataclass(frozen=True)
class EvalResult:
    """Mean loss and task metrics of one parameter point on one split."""

    split: str
    loss: float
    metrics: dict[str, float]
    n_examples: int
    example_losses: np.ndarray | None = field(default=None, compare=False)


class Evaluator:
    """Evaluates parameter points on prepared splits with one resident skeleton.

    ``keys`` are the skeleton's floating-point state entries (parameters and float
    buffers); a point is a list of tensors in that order. Integer buffers are kept from
    the skeleton.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        forward: ForwardFn = hf_logits,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.forward = forward
        state = self.model.state_dict()
        self.keys: tuple[str, ...] = tuple(k for k, v in state.items() if v.is_floating_point())
        # the resident point: one preallocated tensor per key, written in place
        self._buffers = [state[k].detach().clone() for k in self.keys]
        self.point: dict[str, torch.Tensor] = dict(zip(self.keys, self._buffers, strict=True))
        self.counts: Counter[tuple[str, str]] = Counter()

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

    def set_point(self, point: Sequence[torch.Tensor]) -> None:
        torch._foreach_copy_(self._buffers, list(point))

    def set_lerp(
        self, point_a: Sequence[torch.Tensor], point_b: Sequence[torch.Tensor], alpha: float
    ) -> None:
        """Write θα = α·θA + (1−α)·θB into the resident buffers."""
        torch._foreach_copy_(self._buffers, list(point_b))
        if alpha != 0.0:
            torch._foreach_lerp_(self._buffers, list(point_a), float(alpha))

    @torch.inference_mode()
    def evaluate(
        self, split: PreparedSplit, *, kind: str = "path", per_example: bool = False
    ) -> EvalResult:
        """Mean cross-entropy and metrics of the current point on `split`."""
        self.counts[(kind, split.name)] += 1
        losses = []
        preds = []
        for batch, labels in zip(split.batches, split.batch_labels(), strict=True):
            logits = self.forward(self.model, self.point, batch)
            mapped = split.map_logits(logits.float())
            losses.append(F.cross_entropy(mapped, labels, reduction="none"))
            preds.append(mapped.argmax(dim=1))
        loss_vec = torch.cat(losses).double().cpu().numpy()  # (n,) in batch order
        pred_vec = torch.cat(preds).cpu().numpy()
        example_losses = None
        if per_example:
            example_losses = np.empty_like(loss_vec, dtype=np.float32)
            example_losses[split.order] = loss_vec  # back to sample order
        return EvalResult(
            split=split.name,
            loss=float(loss_vec.mean()),
            metrics=split.score(pred_vec),
            n_examples=int(loss_vec.size),
            example_losses=example_losses,
        )

    def evaluate_member(
        self, point: Sequence[torch.Tensor], split: PreparedSplit, *, per_example: bool = False
    ) -> EvalResult:
        self.set_point(point)
        return self.evaluate(split, kind="member", per_example=per_example)

    def evaluate_lerp(
        self,
        point_a: Sequence[torch.Tensor],
        point_b: Sequence[torch.Tensor],
        alpha: float,
        split: PreparedSplit,
        *,
        per_example: bool = False,
    ) -> EvalResult:
        self.set_lerp(point_a, point_b, alpha)
        return self.evaluate(split, kind="path", per_example=per_example)
