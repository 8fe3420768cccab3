"""The recipes against the procedure of the official code (EkdeepSLubana/MMC,
``mech_fine_tuning.py``), written out here step by step on a tiny real model:

- CBFT: a separate network holds θ_t, its gradient is copied to θ scaled by (1 − t), one
  SGD optimiser takes the barrier step and the clean + invariance step, the invariance sum
  is divided by the model's class count, and the cosine scheduler is stepped only from the
  third epoch on (the code's ``epoch > warmup_epochs``);
- LLRT: the linear probe trains without weight decay.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from modeconn.config.splits import DigitsSpec
from modeconn.data.digits import digits_sample
from modeconn.models.cnn import CNNConfig, build_cnn
from modeconn.population.recipes.base import FineTuneConfig, RecipePlan, epoch_batches
from modeconn.population.recipes.cbft import CBFT, draw_t
from modeconn.population.recipes.llrt import retrain_head
from modeconn.population.weights import weights_hash

ATOL = 1e-5  # two float32 routes to the same update (autograd's (1 − t) vs a copied grad)


def _plan(seed: int, *, examples: int, lr: float) -> RecipePlan:
    start = build_cnn(CNNConfig(widths=(4, 8)), seed=5).state_dict()
    x, y = digits_sample(DigitsSpec("c", part="train", sample_size=12, sample_seed=1))
    xc, yc = digits_sample(DigitsSpec("q", part="train", cue="label", sample_size=12))
    return RecipePlan(
        member_id="m-00",
        arm="m",
        recipe="cbft",
        seed=seed,
        start_id="cue-00",
        start_hash=weights_hash(start),
        start=start,
        images=x,
        labels=y,
        config=FineTuneConfig(examples=examples, batch_size=12, lr=lr),
        cue_images=xc,
        cue_labels=yc,
    )


def _official_cbft(plan: RecipePlan) -> dict[str, torch.Tensor]:
    """CBFT as the official loop runs it (warm-up 1 epoch, λ = 1, m = 1)."""
    model = build_cnn(CNNConfig(widths=(4, 8)), seed=0)
    model.load_state_dict(plan.start)
    anchor = {k: v.clone() for k, v in plan.start.items()}
    interpolated = copy.deepcopy(model)  # its own network, in train mode throughout
    model.train()
    interpolated.train()
    cfg = plan.config
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    steps, per_epoch = cfg.steps, len(plan.labels) // cfg.batch_size
    # the code's scheduler: a cosine over every iteration, the k-th call setting entry k
    table = [cfg.lr * 0.5 * (1 + math.cos(math.pi * k / steps)) for k in range(steps)]
    calls = 0
    n_classes = model.classifier.out_features
    order = epoch_batches(len(plan.labels), steps=steps, batch_size=cfg.batch_size, seed=plan.seed)
    assert plan.cue_labels is not None and isinstance(plan.cue_images, torch.Tensor)
    cue_order = epoch_batches(
        len(plan.cue_labels), steps=steps, batch_size=cfg.batch_size, seed=plan.seed + 1
    )
    gen = torch.Generator().manual_seed(int(np.uint32(plan.seed)))
    assert isinstance(plan.images, torch.Tensor)
    for i, (idx, cidx) in enumerate(zip(order, cue_order, strict=True)):
        epoch = i // per_epoch
        x, y = plan.images[idx], plan.labels[idx]
        xc, yc = plan.cue_images[cidx], plan.cue_labels[cidx]
        # step 1: θ_t into the other network, its loss |1 − CE| on the cued batch
        t = draw_t(gen)
        with torch.no_grad():
            mine = dict(model.named_parameters())
            for name, p in interpolated.named_parameters():
                p.copy_(t * anchor[name] + (1 - t) * mine[name])
        interpolated.zero_grad()
        barrier = (1.0 - nn.functional.cross_entropy(interpolated(images=xc), yc)).abs()
        barrier.backward()
        theirs = dict(interpolated.named_parameters())
        for name, p in model.named_parameters():
            grad = theirs[name].grad
            assert grad is not None
            p.grad = (1 - t) * grad.clone()
        opt.step()
        # step 2: clean CE (+ the invariance term after the warm-up epoch)
        model.zero_grad()
        if epoch < 1:
            loss = nn.functional.cross_entropy(model(images=x), y)
        else:
            z, zc = model.features(x), model.features(xc)
            inv = z.sum() * 0.0
            for c in range(n_classes):
                if (y == c).any() and (yc == c).any():
                    a = nn.functional.normalize(z[y == c].mean(0), dim=0)
                    b = nn.functional.normalize(zc[yc == c].mean(0), dim=0)
                    inv = inv + ((a - b) ** 2).sum()
            loss = nn.functional.cross_entropy(model.classifier(z), y) + inv / n_classes
        loss.backward()
        opt.step()
        if epoch > 1:
            for group in opt.param_groups:
                group["lr"] = table[calls]
            calls += 1
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_cbft_matches_the_official_loop() -> None:
    # 12 clean and 12 cued digits, one batch an epoch: 6 iterations = the warm-up epoch, one
    # more at the peak, then 4 on the cosine; some class is missing from a batch, so the
    # invariance sum's divisor (the model's 10 classes) matters
    plan = _plan(3, examples=72, lr=0.05)
    assert plan.cue_labels is not None
    assert len(set(plan.labels.tolist()) & set(plan.cue_labels.tolist())) < 10
    want = _official_cbft(plan)
    model = build_cnn(CNNConfig(widths=(4, 8)), seed=0)
    model.load_state_dict(plan.start)
    CBFT().train(model, plan)
    got = model.state_dict()
    moved = max(float((want[k] - plan.start[k]).abs().max()) for k in want)
    assert moved > 1e-2  # the run did move the weights
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), atol=ATOL), k


def test_the_linear_probe_has_no_weight_decay() -> None:
    # make the features zero (last BatchNorm: weight 0, bias −1, so ReLU gives 0 in eval
    # mode): the cross-entropy gradient of the head's weight is (p − y)·zᵀ = 0, so only weight
    # decay could move it; it must stay the re-drawn initialisation while the bias trains
    plan = _plan(4, examples=48, lr=0.1)
    model = build_cnn(CNNConfig(widths=(4, 8)), seed=0)
    model.load_state_dict(plan.start)
    with torch.no_grad():
        model.blocks[-1].bn.weight.zero_()
        model.blocks[-1].bn.bias.fill_(-1.0)
    retrain_head(model, plan, examples=48, lr=0.1, seed=9)
    gen = torch.Generator().manual_seed(9)
    bound = 1.0 / model.classifier.in_features**0.5
    w0 = (torch.rand(model.classifier.weight.shape, generator=gen) * 2 - 1) * bound
    b0 = (torch.rand(model.classifier.bias.shape, generator=gen) * 2 - 1) * bound
    assert torch.equal(model.classifier.weight.detach(), w0)
    assert not torch.allclose(model.classifier.bias.detach(), b0)
