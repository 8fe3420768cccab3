"""LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"), as Lubana et
al. (2023) compare it: last-layer retraining on the frozen features (:mod:`.llrt`), then
naive fine-tuning of the whole network from there (:mod:`.finetune`).

The probe phase sees ``probe_examples`` examples at ``probe_lr`` (the arm's
``probe_examples`` / ``probe_lr``, defaulting to the LLRT arm defaults); the fine-tuning
phase is an FT arm at the arm's ``lr`` and ``examples``.
"""

from __future__ import annotations

from torch import nn

from modeconn.population.recipes.base import RecipePlan
from modeconn.population.recipes.finetune import finetune
from modeconn.population.recipes.llrt import retrain_head


class LPFT:
    name = "lp-ft"

    def train(self, model: nn.Module, plan: RecipePlan, *, progress: bool = False) -> float:
        retrain_head(
            model,
            plan,
            examples=int(plan.setting("probe_examples", plan.config.examples)),
            lr=float(plan.setting("probe_lr", plan.config.lr)),
            seed=plan.seed,
        )
        return finetune(model, plan, lr=plan.config.lr, progress=progress)
