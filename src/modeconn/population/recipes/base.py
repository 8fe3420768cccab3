"""What a fine-tuning recipe is, and the one function that trains, saves and resumes a member.

A recipe (torchtune's recipe interface is the model: a small protocol, "not a vehicle for
code reuse") takes a model already holding the weights it starts from and trains it in
place. Everything around that — loading the start member, the fingerprint that makes a
rerun skip a finished member, the atomic write of weights and sidecar — is
:func:`train_recipe_member`, the same for every recipe.

The recipes of Lubana et al. (ICML 2023, "Mechanistic Mode Connectivity", Sec. 5 and
Table 1) all start from a cue-reliant member θ_C and see a small clean set D_NC:

============  ==========================================================================
``ft-s``      naive fine-tuning on D_NC at a small learning rate
``ft-m``      the same at a medium learning rate
``llrt``      last-layer retraining: a fresh linear head on the frozen features
``lp-ft``     LLRT, then naive fine-tuning of the whole network (Kumar et al. 2022)
``cbft``      connectivity-based fine-tuning (a barrier step and an invariance step)
============  ==========================================================================

Shared optimiser (the paper's code): SGD, momentum 0.9, weight decay 1e-4 on every
parameter, the learning rate annealed by a cosine from its peak to 0 over the steps,
batches of D_NC drawn in a seeded order epoch by epoch, BatchNorm in train mode.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from modeconn.errors import ConfigError

RECIPES_VERSION = 1


@dataclass(frozen=True)
class FineTuneConfig:
    """The optimiser settings of one recipe arm (defaults: ours, see each recipe).

    ``examples`` images of D_NC are seen in batches of ``batch_size`` (so ``examples /
    len(D_NC)`` epochs); ``lr`` is the peak of the cosine schedule.
    """

    examples: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.examples < self.batch_size:
            raise ConfigError(
                f"a recipe arm's examples ({self.examples}) must be at least train.batch_size "
                f"({self.batch_size})"
            )

    @property
    def steps(self) -> int:
        return self.examples // self.batch_size


@dataclass(frozen=True)
class RecipePlan:
    """One member a recipe trains: where it starts, what it sees, its seed.

    ``start`` is the state dict of the member it starts from (θ_C) and ``start_hash`` that
    member's weight hash; ``images``/``labels`` are D_NC; ``cue_images``/``cue_labels`` are
    D_C (CBFT only, else empty).
    """

    member_id: str
    arm: str
    recipe: str
    seed: int
    start_id: str
    start_hash: str
    start: dict[str, torch.Tensor]
    images: torch.Tensor
    labels: torch.Tensor
    config: FineTuneConfig
    cue_images: torch.Tensor | None = None
    cue_labels: torch.Tensor | None = None
    settings: tuple[tuple[str, Any], ...] = ()  # recipe-specific settings (probe lr, λ, …)

    def setting(self, name: str, default: Any) -> Any:
        return dict(self.settings).get(name, default)

    def data_fingerprint(self) -> str:
        digest = hashlib.sha256()
        for t in (self.images, self.labels, self.cue_images, self.cue_labels):
            if t is not None:
                digest.update(t.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


class Recipe(Protocol):
    """A training recipe: trains `model` (holding the start weights) in place.

    Returns the final training loss (a running mean) for the sidecar. `progress` shows a
    bar. A recipe draws every random number from ``plan.seed``.
    """

    name: str

    def train(self, model: nn.Module, plan: RecipePlan, *, progress: bool = False) -> float: ...


def recipe_fingerprint(plan: RecipePlan, base: str) -> str:
    """A short hash of everything that decides the member's final weights."""
    payload = {
        "v": RECIPES_VERSION,
        "recipe": plan.recipe,
        "base": base,
        "config": asdict(plan.config),
        "settings": [list(kv) for kv in plan.settings],
        "start": plan.start_hash,
        "seed": plan.seed,
        "data": plan.data_fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---- shared pieces of the optimisation (each recipe composes them its own way) ----------


def sgd(params: Any, config: FineTuneConfig, *, lr: float | None = None) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every parameter (the paper's code)."""
    return torch.optim.SGD(
        params,
        lr=config.lr if lr is None else lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate annealed from its peak to 0 by a cosine over `steps` steps.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> s = cosine(opt, 4)
    >>> lrs = [s.get_last_lr()[0]]
    >>> for _ in range(4):
    ...     s.step()
    ...     lrs.append(round(s.get_last_lr()[0], 3))
    >>> lrs
    [1.0, 0.854, 0.5, 0.146, 0.0]
    """
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
    )


def descend(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    running: float,
) -> float:
    """One optimiser and schedule step on `loss`; returns the running loss (0.9 decay;
    the first step's loss when `running` is NaN)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    value = loss.item()
    return value if math.isnan(running) else 0.9 * running + 0.1 * value


def epoch_batches(n: int, *, steps: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """`steps` batches of indices into n examples: a seeded permutation per epoch; a set
    smaller than a batch is drawn whole each step.

    >>> [b.tolist() for b in epoch_batches(4, steps=3, batch_size=2, seed=0)]
    [[2, 0], [1, 3], [3, 2]]
    """
    rng = np.random.default_rng(seed)
    size = min(batch_size, n)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        perm = rng.permutation(n)
        out += [torch.from_numpy(perm[i : i + size]) for i in range(0, n - size + 1, size)]
    return out[:steps]


def features_of(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's penultimate features, ``model.features(images)`` → (B, d)."""
    fn = getattr(model, "features", None)
    if fn is None:
        raise ConfigError(
            f"recipes llrt, lp-ft and cbft need a model with penultimate features "
            f"(`features(images)`); {type(model).__name__} has none: use model.kind: cnn"
        )
    return fn


def head_of(model: nn.Module, prefix: str = "classifier") -> nn.Linear:
    head = getattr(model, prefix, None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"recipes llrt and lp-ft re-train the linear head '{prefix}'; none found")
    return head


def train_recipe_member(
    make_body: Callable[[], nn.Module],
    recipe: Recipe,
    plan: RecipePlan,
    out_dir: Path,
    *,
    base: str,
    progress: bool = False,
) -> Path:
    """Train one member with `recipe` and write ``<id>.safetensors`` + ``<id>.json``.

    The model is the skeleton with the start member's weights; a member already on disk
    with this plan's fingerprint is returned untouched (a rerun trains nothing).
    """
    from modeconn.population.train import _atomic_save, is_trained, member_paths

    out_dir.mkdir(parents=True, exist_ok=True)
    weights, sidecar = member_paths(out_dir, plan.member_id)
    fingerprint = recipe_fingerprint(plan, base)
    if is_trained(out_dir, plan.member_id, fingerprint):
        return weights
    model = make_body()
    model.load_state_dict(plan.start)
    start = time.perf_counter()
    loss = recipe.train(model, plan, progress=progress)
    model.eval()
    meta = {
        "id": plan.member_id,
        "arm": plan.arm,
        "head_seed": plan.seed,
        "data_seed": plan.seed,
        "step": plan.config.steps,
        "recipe": fingerprint,
        "recipe_kind": plan.recipe,
        "from": plan.start_id,
        "from_hash": plan.start_hash,
        "base": base,
        "train_examples": int(plan.labels.numel()),
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_train_loss": round(loss, 4),
        "config": asdict(plan.config),
        "settings": dict(plan.settings),
    }
    _atomic_save(model, weights, sidecar, meta)
    return weights
