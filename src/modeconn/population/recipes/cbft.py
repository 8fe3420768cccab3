"""Connectivity-based fine-tuning (CBFT; Lubana et al., ICML 2023, Sec. 5, Eq. 3–4).

θ starts as a copy of the cue model θ_C and sees two sets: D_NC (clean, the arm's
``data``) and D_C (cued, ``cue_data``, by default the ``from`` arm's training data).
Every iteration takes two optimiser steps:

1. **Barrier step** (move out of θ_C's basin): draw
   t = 0.5 + 0.5·clip(ε, −0.5, 0.5), ε ~ N(0, 1), so t ∈ [0.25, 0.75]; evaluate the
   model at θ_t = t·θ_C + (1 − t)·θ on a cued batch and minimise
   L_B = |m − CE(f(x_C; θ_t), y_C)| with margin m = 1, i.e. push the loss *on cued data*
   somewhere between the endpoints up to m: a barrier between θ and θ_C on the cue set.
   θ_C is a constant, so the gradient reaches θ as (1 − t)·∇_{θ_t} L_B
   (:func:`barrier_loss`; the test checks this against a hand computation).
2. **Clean + invariance step** (pick the mechanism that ignores the cue):
   CE(f(x_NC; θ), y_NC) + (λ/K)·Σ_c ‖n(z̄_NC,c) − n(z̄_C,c)‖², z = penultimate features,
   z̄_·,c the class-c mean within each batch, n = L2 normalisation, λ = 1
   (:func:`invariance_loss`): the features of a class must not depend on whether its
   images carry the cue.

As the official code (EkdeepSLubana/MMC, ``mech_fine_tuning.py``, ``CBFT``) has it:

- the sum runs over the classes present in both batches and K is the model's number of
  classes (a class absent from either batch adds 0 but still counts in K);
- during the first epoch over D_NC (the warm-up) the second step is cross-entropy alone;
  the barrier step runs from the first iteration;
- BatchNorm is in train mode in both steps, so θ_t normalises with the cued batch's own
  statistics (θ_t's buffers, interpolated here, are discarded); θ's running statistics
  are updated by the clean and, after the warm-up, the cued forward passes of step 2;
- one SGD optimiser (momentum 0.9, weight decay 1e-4, its momentum shared by the two
  steps), and the learning rate of :func:`cbft_schedule`: the peak through the warm-up
  epoch and the next, then a cosine laid over the whole run's length that the run's end
  cuts off (at 20 epochs, 10 % of the way short of 0).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from modeconn.errors import ConfigError
from modeconn.population.recipes.base import (
    Inputs,
    RecipePlan,
    descend,
    epoch_batches,
    features_of,
    head_of,
    logits_of,
    sgd,
    take,
)

MARGIN = 1.0
LAMBDA = 1.0


def draw_t(gen: torch.Generator) -> float:
    """t = 0.5 + 0.5·clip(ε, −0.5, 0.5), ε ~ N(0, 1) drawn from `gen`: t ∈ [0.25, 0.75]."""
    eps = float(torch.randn((), generator=gen))
    return 0.5 + 0.5 * min(max(eps, -0.5), 0.5)


def cbft_schedule(
    opt: torch.optim.Optimizer, steps: int, epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The official code's CBFT learning rate, one scheduler step per iteration.

    Its scheduler (a cosine from the peak to 0 over all `steps` iterations) is stepped after
    the second optimiser step only once ``epoch > warmup_epochs``, i.e. from the third epoch
    of `epoch` iterations on: the peak holds for the first 2·epoch + 1 iterations, then the
    cosine runs from its beginning (its first value the peak again) and is cut off when
    training ends, about 2·epoch iterations short of its end.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> s = cbft_schedule(opt, 8, 1)
    >>> lrs = [s.get_last_lr()[0]]
    >>> for _ in range(7):
    ...     s.step()
    ...     lrs.append(round(s.get_last_lr()[0], 3))
    >>> lrs  # 2·1 + 1 iterations at the peak, then ½(1 + cos(π·k/8)) for k = 0, …, 4
    [1.0, 1.0, 1.0, 1.0, 0.962, 0.854, 0.691, 0.5]
    """
    hold = 2 * epoch + 1
    return torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: 0.5 * (1.0 + math.cos(math.pi * min(max(s - hold, 0), steps) / max(steps, 1))),
    )


def barrier_loss(
    model: nn.Module,
    anchor: dict[str, torch.Tensor],
    t: float,
    images: Inputs,
    labels: torch.Tensor,
    *,
    margin: float = MARGIN,
) -> torch.Tensor:
    """|m − CE(f(x; θ_t), y)| at θ_t = t·θ_C + (1 − t)·θ; differentiable in θ only.

    `anchor` is θ_C's state dict (constants). Buffers are interpolated too (floating
    ones; integer counters, and buffers a state dict does not hold, are copied) and the
    copies are what BatchNorm updates. `images` is an image batch or a dict of the
    model's keyword inputs (a text batch).
    """
    mixed: dict[str, torch.Tensor] = {
        k: t * anchor[k].detach() + (1.0 - t) * p for k, p in model.named_parameters()
    }
    for k, b in model.named_buffers():
        mixed[k] = (
            t * anchor[k].detach() + (1.0 - t) * b.detach()
            if b.is_floating_point() and k in anchor
            else b.clone()
        )
    kwargs = images if isinstance(images, dict) else {"images": images}
    logits = logits_of(functional_call(model, mixed, args=(), kwargs=kwargs))
    return (margin - nn.functional.cross_entropy(logits, labels)).abs()


def invariance_loss(
    z_clean: torch.Tensor,
    y_clean: torch.Tensor,
    z_cue: torch.Tensor,
    y_cue: torch.Tensor,
    *,
    n_classes: int | None = None,
) -> torch.Tensor:
    """(1/K)·Σ_c ‖n(mean z_clean,c) − n(mean z_cue,c)‖² over the classes in both batches.

    K = `n_classes`, the model's number of classes, as the official code divides (a class
    missing from either batch adds nothing but still counts); without it, K = the number
    of classes present in both batches (the mean of the terms).

    >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> float(invariance_loss(z, torch.tensor([0, 1]), z.flip(0), torch.tensor([0, 1])))
    2.0
    >>> float(invariance_loss(z, torch.tensor([0, 1]), z.flip(0), torch.tensor([0, 1]),
    ...                       n_classes=4))
    1.0
    """
    terms = []
    for c in torch.unique(y_clean).tolist():
        a, b = z_clean[y_clean == c], z_cue[y_cue == c]
        if len(a) == 0 or len(b) == 0:
            continue  # a class absent from either batch is skipped
        diff = nn.functional.normalize(a.mean(0), dim=0) - nn.functional.normalize(b.mean(0), dim=0)
        terms.append((diff**2).sum())
    if not terms:
        return z_clean.sum() * 0.0
    total = torch.stack(terms).sum()
    return total / (len(terms) if n_classes is None else n_classes)


class CBFT:
    """``cbft``: the barrier step, then the clean + invariance step, every iteration."""

    name = "cbft"

    def train(self, model: nn.Module, plan: RecipePlan, *, progress: bool = False) -> float:
        if plan.cue_images is None or plan.cue_labels is None:
            raise ConfigError(f"train.arms[{plan.arm}]: cbft needs a cued set (cue_data)")
        config = plan.config
        margin = float(plan.setting("margin", MARGIN))
        lam = float(plan.setting("lambda", LAMBDA))
        anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}  # θ_C
        feats = features_of(model)
        head = head_of(model)
        opt = sgd(model.parameters(), config)
        n = len(plan.labels)
        order = epoch_batches(n, steps=config.steps, batch_size=config.batch_size, seed=plan.seed)
        cue_order = epoch_batches(
            len(plan.cue_labels),
            steps=config.steps,
            batch_size=config.batch_size,
            seed=plan.seed + 1,
        )
        warmup = max(n // min(config.batch_size, n), 1)  # the first epoch over D_NC
        sched = cbft_schedule(opt, config.steps, warmup)
        gen = torch.Generator().manual_seed(int(np.uint32(plan.seed)))
        model.train()
        running = math.nan
        bar = tqdm(
            zip(order, cue_order, strict=True),
            total=config.steps,
            desc=f"cbft {plan.member_id}",
            disable=not progress,
            leave=False,
        )
        for step, (idx, cidx) in enumerate(bar):
            xc, yc = take(plan.cue_images, cidx), plan.cue_labels[cidx]
            # (1) the barrier step
            lb = barrier_loss(model, anchor, draw_t(gen), xc, yc, margin=margin)
            opt.zero_grad(set_to_none=True)
            lb.backward()
            opt.step()
            # (2) the clean + invariance step
            z = feats(**take(plan.images, idx))
            loss = nn.functional.cross_entropy(head(z), plan.labels[idx])
            if step >= warmup:
                loss = loss + lam * invariance_loss(
                    z, plan.labels[idx], feats(**xc), yc, n_classes=head.out_features
                )
            running = descend(loss, opt, sched, running)
        return running
