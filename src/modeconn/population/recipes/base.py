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
parameter (none on the linear probe of LLRT / LP-FT), the learning rate annealed by a
cosine from its peak to 0 over the steps (CBFT: the peak held through the warm-up, see
:mod:`.cbft`), batches of D_NC drawn in a seeded order epoch by epoch, BatchNorm in train
mode.

**Images and text.** A plan's data are model inputs with the examples along dim 0:
an image tensor ``(n, C, H, W)`` (fed as ``model(images=...)``) or, for a Hugging Face
sequence classifier, a dict of padded token tables ``{"input_ids": (n, L), ...}`` (fed
as ``model(**batch)``, each batch trimmed to its longest row by :func:`take`). The
*penultimate features* (LLRT, CBFT's invariance term) are ``model.features(images)`` for
a CNN and, for a transformer classifier, whatever its linear head reads — for BERT the
pooled [CLS] representation after the pooler and dropout (:func:`features_of`). Dropout
draws from torch's global generator, forked and seeded with the plan's seed around the
recipe (:func:`train_recipe_member`), so a text member is as reproducible as an image one.
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

RECIPES_VERSION = 2  # 2: CBFT's K and schedule, LLRT without weight decay (the code's)

# a plan's examples: an image tensor (n, C, H, W), or a dict of (n, L) token tables
Inputs = torch.Tensor | dict[str, torch.Tensor]


def n_rows(inputs: Inputs) -> int:
    """How many examples `inputs` hold (dim 0)."""
    if isinstance(inputs, torch.Tensor):
        return len(inputs)
    return len(next(iter(inputs.values())))


def take(inputs: Inputs, idx: torch.Tensor | slice | None = None) -> dict[str, torch.Tensor]:
    """Rows `idx` of `inputs` as the model's keyword arguments.

    An image tensor becomes ``{"images": x[idx]}``; token tables are cut to the batch's
    longest row (by ``attention_mask``; the tables are right-padded).

    >>> take({"input_ids": torch.tensor([[5, 6, 0], [7, 0, 0]]),
    ...       "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}, torch.tensor([1]))
    {'input_ids': tensor([[7]]), 'attention_mask': tensor([[1]])}
    """
    sel = slice(None) if idx is None else idx
    if isinstance(inputs, torch.Tensor):
        return {"images": inputs[sel]}
    rows = {k: v[sel] for k, v in inputs.items()}
    mask = rows.get("attention_mask")
    if mask is None or mask.ndim != 2 or mask.shape[0] == 0:
        return rows
    width = int(mask.sum(dim=1).max())
    return {k: v[:, :width] if v.ndim == 2 else v for k, v in rows.items()}


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model's output (a tensor, or a Hugging Face output's ``.logits``)."""
    return output.logits if hasattr(output, "logits") else output


@dataclass(frozen=True)
class FineTuneConfig:
    """The optimiser settings of one recipe arm (defaults: ours, see each recipe).

    ``examples`` examples of D_NC are seen in batches of ``batch_size`` (so ``examples /
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
    D_C (CBFT only, else empty). The "images" are the model's inputs (:data:`Inputs`): image
    tensors, or the token tables of a text split.
    """

    member_id: str
    arm: str
    recipe: str
    seed: int
    start_id: str
    start_hash: str
    start: dict[str, torch.Tensor]
    images: Inputs
    labels: torch.Tensor
    config: FineTuneConfig
    cue_images: Inputs | None = None
    cue_labels: torch.Tensor | None = None
    settings: tuple[tuple[str, Any], ...] = ()  # recipe-specific settings (probe lr, λ, …)

    def setting(self, name: str, default: Any) -> Any:
        return dict(self.settings).get(name, default)

    def data_fingerprint(self) -> str:
        digest = hashlib.sha256()
        for t in (self.images, self.labels, self.cue_images, self.cue_labels):
            if isinstance(t, dict):
                for k in sorted(t):
                    digest.update(k.encode())
                    digest.update(t[k].contiguous().numpy().tobytes())
            elif t is not None:
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


def sgd(
    params: Any,
    config: FineTuneConfig,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every parameter (the paper's code); `lr` and
    `weight_decay` override the config's (the linear probe has none)."""
    return torch.optim.SGD(
        params,
        lr=config.lr if lr is None else lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay if weight_decay is None else weight_decay,
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


def features_of(model: nn.Module, prefix: str = "classifier") -> Callable[..., torch.Tensor]:
    """The model's penultimate features as a function of its keyword inputs → (B, d).

    A CNN's ``model.features(images)``; otherwise what the linear head `prefix` reads (for
    a Hugging Face BERT classifier: the pooled [CLS] vector after pooler and dropout),
    caught by a forward hook on the head during one forward pass.
    """
    fn = getattr(model, "features", None)
    if fn is not None:
        return lambda **batch: fn(**batch)
    head = getattr(model, prefix, None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"recipes llrt, lp-ft and cbft need a model with penultimate features "
            f"(`features(images)`, or a linear head '{prefix}' to read them from); "
            f"{type(model).__name__} has neither: use model.kind cnn or a BERT-style classifier"
        )

    def features(**batch: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            model(**batch)
        finally:
            hook.remove()
        return seen[-1]

    return features


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
    # dropout (text models) draws from the global generator: fork it, seeded by the plan
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.uint32(plan.seed)))
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
