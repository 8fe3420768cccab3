"""Last-layer retraining (LLRT; Kirichenko et al. 2022, as Lubana et al. 2023 run it): a
fresh linear head trained on the frozen features of D_NC.

The body is frozen in eval mode (BatchNorm uses its running statistics, dropout is off),
so the features of D_NC are computed once (for a text model: the pooled [CLS] vector the
head reads); the head — re-initialised from the member's seed with PyTorch's
default uniform rule — is then trained on them with SGD, momentum 0.9, no weight decay
(as the official code's ``LLRT``), cosine schedule. The paper trains it 200 epochs at
lr 30 (their VGG's features); the arm's ``examples`` and ``lr`` set ours. Only the head
changes: the member keeps θ_C's features, and so whatever cue they encode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from modeconn.population.recipes.base import (
    Inputs,
    RecipePlan,
    cosine,
    descend,
    epoch_batches,
    features_of,
    head_of,
    n_rows,
    sgd,
    take,
)

CHUNK = 256  # examples per forward pass when the frozen features are computed


def frozen_features(model: nn.Module, inputs: Inputs, *, chunk: int = CHUNK) -> torch.Tensor:
    """The penultimate features of every example, (n, d), in eval mode without gradients,
    `chunk` examples at a time (token tables trimmed per chunk)."""
    feats = features_of(model)
    n = n_rows(inputs)
    model.eval()
    with torch.no_grad():
        parts = [
            feats(**take(inputs, torch.arange(i, min(i + chunk, n)))) for i in range(0, n, chunk)
        ]
    return torch.cat(parts)


def retrain_head(
    model: nn.Module, plan: RecipePlan, *, examples: int, lr: float, seed: int
) -> float:
    """Re-draw the head from `seed` and train it on the frozen features of D_NC."""
    head = head_of(model)
    z = frozen_features(model, plan.images)  # (n, d), computed once: the body is frozen
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        bound = 1.0 / head.in_features**0.5
        head.weight.copy_((torch.rand(head.weight.shape, generator=gen) * 2 - 1) * bound)
        head.bias.copy_((torch.rand(head.bias.shape, generator=gen) * 2 - 1) * bound)
    steps = max(examples // plan.config.batch_size, 1)
    opt = sgd(head.parameters(), plan.config, lr=lr, weight_decay=0.0)
    sched = cosine(opt, steps)
    running = math.nan
    for idx in epoch_batches(len(z), steps=steps, batch_size=plan.config.batch_size, seed=seed):
        loss = nn.functional.cross_entropy(head(z[idx]), plan.labels[idx])
        running = descend(loss, opt, sched, running)
    return running


class LLRT:
    """``llrt``: a fresh head on frozen features, ``examples`` examples at the arm's lr."""

    name = "llrt"

    def train(self, model: nn.Module, plan: RecipePlan, *, progress: bool = False) -> float:
        return retrain_head(
            model, plan, examples=plan.config.examples, lr=plan.config.lr, seed=plan.seed
        )
