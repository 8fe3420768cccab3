"""Naive fine-tuning of a cue-reliant member on clean data: FT-S and FT-M (Lubana et al.
2023, Table 1). The whole network is trained on D_NC with cross-entropy; the two arms
differ only in the peak learning rate (the paper's "small" and "medium").

The paper's finding: however the learning rate is set, the fine-tuned model stays in the
cue model's basin (linearly connected to it) and keeps reading the cue.
"""

from __future__ import annotations

import math

from torch import nn
from tqdm.auto import tqdm

from modeconn.population.recipes.base import (
    RecipePlan,
    cosine,
    descend,
    epoch_batches,
    logits_of,
    sgd,
    take,
)


def finetune(model: nn.Module, plan: RecipePlan, *, lr: float, progress: bool = False) -> float:
    """Cross-entropy on D_NC, SGD + cosine at peak `lr`, batches drawn with ``plan.seed``."""
    config = plan.config
    opt = sgd(model.parameters(), config, lr=lr)
    sched = cosine(opt, config.steps)
    order = epoch_batches(
        len(plan.labels), steps=config.steps, batch_size=config.batch_size, seed=plan.seed
    )
    model.train()
    running = math.nan
    for idx in tqdm(
        order, desc=f"{plan.recipe} {plan.member_id}", disable=not progress, leave=False
    ):
        logits = logits_of(model(**take(plan.images, idx)))
        loss = nn.functional.cross_entropy(logits, plan.labels[idx])
        running = descend(loss, opt, sched, running)
    return running


class FineTune:
    """``ft-s`` / ``ft-m``: naive fine-tuning at the arm's learning rate."""

    def __init__(self, name: str) -> None:
        self.name = name

    def train(self, model: nn.Module, plan: RecipePlan, *, progress: bool = False) -> float:
        return finetune(model, plan, lr=plan.config.lr, progress=progress)
