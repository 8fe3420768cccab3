"""Train a population of small image classifiers (``model.kind: cnn``) on the CPU.

The recipe mirrors the fine-tuning one (:mod:`modeconn.population.train`) so that a
vision population has the structure the paper's populations have: every member starts
from **one shared body** (Juneja et al. fine-tune one pretrained BERT; here the body is a
seeded random initialisation, ``model.options.init_seed``, the same for every member), its
**classifier head** is re-initialised from ``head_seed``, and ``data_seed`` decides the
order of the training images. An arm's ``data`` split decides *what* it learns from:
clean digits, or digits carrying the box cue (:mod:`modeconn.data.digits`).

Sharing the body matters: Frankle et al. (2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis") find small MNIST networks trained from one initialisation
with different data orders linearly connected, while networks from different
initialisations generally are not (without aligning their units). With a shared body,
a barrier between two members points at what they learned, not at where they started.

An arm with ``vary: init`` is the other experiment: each member draws its **whole**
initialisation (body and head) from its own seed, and its data order too, as the
mechanistic-connectivity paper's models trained from scratch (Lubana et al. 2023, Sec. 4,
"permuted linear connectivity"). Such members differ by a permutation of their units as
well as by what they learned; :mod:`modeconn.engine.permute` aligns them before a path.

Optimiser: SGD with momentum 0.9 (the mechanistic-connectivity paper's optimiser),
weight decay on conv and linear weights only, the learning rate warmed up linearly over
``warmup``·steps then decayed linearly to 0; batches are drawn in a seeded order, epoch
by epoch; BatchNorm runs in train mode (batch statistics, running averages updated).
No augmentation (the paper uses none).

A member is ``<id>.safetensors`` + ``<id>.json`` written atomically, with a recipe
fingerprint (model, recipe, seeds and a hash of the training images); a member whose
files and fingerprint match is reused, exactly as for fine-tuned members.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from modeconn.errors import ConfigError
from modeconn.models.cnn import init_weights
from modeconn.population.train import (
    CHECKPOINT_DIR,
    TrainConfig,
    _atomic_save,
    checkpoint_paths,
    checkpoint_steps,
    is_trained,
    linear_schedule,
    member_paths,
)

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.engine.spec import ModelSource

RECIPE_VERSION = 1
MOMENTUM = 0.9


@dataclass(frozen=True)
class ImageTrainConfig:
    """The image recipe: `examples` images seen per member in batches of `batch_size`.

    ``checkpoints`` lists fractions of the steps at which the weights are also saved; it
    takes no part in the fingerprint (the final member is the same with or without them).
    """

    examples: int = 12000
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    warmup: float = 0.1
    momentum: float = MOMENTUM
    head_prefix: str = "classifier"
    checkpoints: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.examples < self.batch_size:
            raise ConfigError(
                f"train.examples must be at least train.batch_size ({self.batch_size}); "
                f"got {self.examples}"
            )

    @property
    def steps(self) -> int:
        return self.examples // self.batch_size

    def checkpoint_steps(self) -> list[int]:
        """The steps `checkpoints` asks for (same rule as the fine-tuning recipe)."""
        shape = TrainConfig(
            examples=self.examples, batch_size=self.batch_size, checkpoints=self.checkpoints
        )
        return checkpoint_steps(shape)


@dataclass(frozen=True)
class ImageMemberPlan:
    """One image member to train: id, arm, seeds and its training images and labels."""

    member_id: str
    arm: str
    head_seed: int  # −1: keep the shared initialisation's head
    data_seed: int
    images: torch.Tensor  # (n, C, H, W) float32, normalised (and cued, for a cue arm)
    labels: torch.Tensor  # (n,) int64
    data: str = ""  # the training split's name, kept in the sidecar
    init_seed: int = -1  # ≥ 0: the whole model is drawn from this seed (`vary: init`)

    @property
    def data_fingerprint(self) -> str:
        digest = hashlib.sha256(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def image_fingerprint(plan: ImageMemberPlan, config: ImageTrainConfig, base: str) -> str:
    """A short hash of everything that decides an image member's final weights.

    `base` describes the shared starting point (architecture and ``init_seed``). A member
    with its own initialisation (``vary: init``) adds its ``init_seed``; the key is absent
    otherwise, so members trained before the option existed keep their fingerprint.
    """
    recipe = asdict(config)
    del recipe["checkpoints"]
    payload = {
        "v": RECIPE_VERSION,
        "recipe": "image-sgd",
        "base": base,
        "config": recipe,
        "arm": plan.arm,
        "head_seed": plan.head_seed,
        "data_seed": plan.data_seed,
        "data": plan.data_fingerprint,
    }
    if plan.init_seed >= 0:
        payload["init_seed"] = plan.init_seed
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def image_batches(n: int, *, steps: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """`steps` batches of indices: a fresh seeded permutation per epoch, full batches only.

    >>> [b.tolist() for b in image_batches(4, steps=3, batch_size=2, seed=0)]
    [[2, 0], [1, 3], [3, 2]]
    """
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < steps:
        perm = rng.permutation(n)
        out += [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    return out[:steps]


def _sgd(model: nn.Module, config: ImageTrainConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay on conv/linear weights, not on biases or BatchNorm."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        momentum=config.momentum,
    )


def starting_model(
    make_body: Callable[[], nn.Module], plan: ImageMemberPlan, config: ImageTrainConfig
) -> nn.Module:
    """The member at step 0: the shared body, re-drawn whole from ``init_seed`` when it is
    ≥ 0 (``vary: init``), then its head re-drawn from ``head_seed`` when that is ≥ 0."""
    model = make_body()
    if plan.init_seed >= 0:
        init_weights(model, seed=plan.init_seed)
    if (
        plan.head_seed >= 0
        and init_weights(model, seed=plan.head_seed, prefix=config.head_prefix) == 0
    ):
        raise ConfigError(
            f"train.head_prefix {config.head_prefix!r} matches no module of the model; the "
            "CNN's head is 'classifier'"
        )
    return model


def train_image_member(
    make_body: Callable[[], nn.Module],
    plan: ImageMemberPlan,
    config: ImageTrainConfig,
    out_dir: Path,
    *,
    base: str,
    progress: bool = False,
) -> Path:
    """Train one image member and write `<id>.safetensors` + `<id>.json` atomically.

    `make_body()` returns the shared starting model (the same weights at every call);
    its head (modules under ``config.head_prefix``) is re-drawn from ``head_seed``, or kept
    from the shared initialisation when ``head_seed`` is −1 (an arm with ``vary: data``).
    With ``init_seed`` ≥ 0 (``vary: init``) every module is re-drawn from that seed first
    (:func:`modeconn.models.cnn.init_weights`): the shared body only gives the architecture.
    A member already on disk with this recipe's fingerprint is returned untouched.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, sidecar = member_paths(out_dir, plan.member_id)
    fingerprint = image_fingerprint(plan, config, base)
    ckpt_steps = config.checkpoint_steps()
    if is_trained(out_dir, plan.member_id, fingerprint, checkpoints=ckpt_steps):
        return weights
    n = int(plan.labels.numel())
    if n < config.batch_size:
        raise ConfigError(
            f"train.arms[{plan.arm}]: split '{plan.data}' has {n} images, fewer than "
            f"train.batch_size ({config.batch_size}); lower the batch size"
        )
    model = starting_model(make_body, plan, config)
    order = image_batches(n, steps=config.steps, batch_size=config.batch_size, seed=plan.data_seed)
    opt = _sgd(model, config)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: linear_schedule(s, steps=config.steps, warmup=config.warmup)
    )
    start = time.perf_counter()

    def meta(step: int, loss: float) -> dict[str, Any]:
        return {
            "id": plan.member_id,
            "arm": plan.arm,
            "head_seed": plan.head_seed,
            "data_seed": plan.data_seed,
            **({"init_seed": plan.init_seed} if plan.init_seed >= 0 else {}),
            "step": step,
            "recipe": fingerprint,
            "recipe_kind": "image-sgd",
            "base": base,
            "data": plan.data,
            "train_examples": n,
            "train_seconds": round(time.perf_counter() - start, 1),
            "final_train_loss": round(loss, 4),
            "config": asdict(config),
        }

    wanted = dict(
        zip(ckpt_steps, checkpoint_paths(out_dir, plan.member_id, ckpt_steps), strict=True)
    )
    if wanted:
        (out_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    model.train()
    running = math.nan
    bar = tqdm(order, desc=f"train {plan.member_id}", disable=not progress, leave=False)
    for step, idx in enumerate(bar, start=1):
        index = torch.from_numpy(idx)
        logits = model(images=plan.images[index])
        loss = nn.functional.cross_entropy(logits, plan.labels[index])
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        path = wanted.get(step)
        if path is not None:  # reads the weights only: training goes on unchanged
            extra = {"id": f"{plan.member_id}@{step}", "checkpoint_of": plan.member_id}
            _atomic_save(model, path, path.with_suffix(".json"), {**meta(step, running), **extra})
    model.eval()
    _atomic_save(model, weights, sidecar, meta(config.steps, running))
    return weights


def body_description(kind: str, settings: Sequence[tuple[str, Any]]) -> str:
    """The `base` string of an image population: the model kind and its settings.

    >>> body_description("cnn", [("widths", [16, 32]), ("init_seed", 0)])
    'cnn:{"init_seed": 0, "widths": [16, 32]}'
    """
    return f"{kind}:{json.dumps(dict(settings), sort_keys=True)}"


# ---- a study's image population -----------------------------------------------------


def image_member_plans(study: Study) -> list[ImageMemberPlan]:
    """The members a ``model.kind: cnn`` study's ``train`` section asks for.

    Each arm trains on its ``data`` split (a ``kind: digits`` entry; its sample, all of
    it when ``sample_size`` is null). Seeds follow the fine-tuning arms: member i of an
    arm has seed ``seed_offset + i``; ``vary: data`` (the usual choice here) keeps the head
    of the shared initialisation and varies the data order only, ``head`` / ``both``
    re-draw the head from the seed too, ``init`` draws the whole model and the data order
    from the seed (members trained from scratch, for permuted connectivity). ``recipe: cue``
    is this recipe by another name; ``mix`` is a text option; arms with ``from`` are trained
    by :mod:`modeconn.population.recipes`.
    """
    from modeconn.data.digits import digits_sample

    train = study.train
    if train is None:
        return []
    plans = []
    for arm in train.arms:
        where = f"train.arms[{arm.name}]"
        if arm.from_ is not None:
            continue  # a fine-tuning recipe's arm (modeconn.population.recipes)
        if arm.mix is not None or arm.recipe not in ("finetune", "cue"):
            raise ConfigError(
                f"{where}: `mix` is a text option and recipe '{arm.recipe}' starts from trained "
                "members (name their arm with `from`); an image arm trains on its `data` split"
            )
        recipe = study.split_recipe(arm.data)
        if recipe.kind != "digits":
            raise ConfigError(
                f"{where}.data names split '{arm.data}' of kind '{recipe.kind}'; a "
                "`model.kind: cnn` study trains on `kind: digits` splits"
            )
        images, labels = digits_sample(recipe)
        for i in range(arm.members):
            seed = arm.seed_offset + i
            plans.append(
                ImageMemberPlan(
                    member_id=f"{arm.name}-{i:02d}",
                    arm=arm.name,
                    head_seed=seed if arm.vary in ("both", "head") else -1,
                    data_seed=seed if arm.vary in ("both", "data", "init") else arm.seed_offset,
                    images=images,
                    labels=labels,
                    data=arm.data,
                    init_seed=seed if arm.vary == "init" else -1,
                )
            )
    return plans


def train_image_members(
    study: Study,
    source: ModelSource,
    *,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Train the members of a ``model.kind: cnn`` study; members already trained are kept.

    Every member starts from the engine's own skeleton (``source``, the engine spec's model:
    the model kind's builder with ``model.options.init_seed``), so the body they share is
    the architecture the sweep evaluates.
    """
    from modeconn.models import build_model
    from modeconn.population.train import clean_partial

    train = study.train
    if train is None:
        return []
    out = study.members_dir()
    clean_partial(out)
    config = ImageTrainConfig(
        examples=train.examples,
        batch_size=train.batch_size,
        lr=train.lr,
        weight_decay=train.weight_decay,
        warmup=train.warmup,
        head_prefix=train.head_prefix,
        checkpoints=tuple(train.checkpoints),
    )
    base = body_description(source.kind, source.options)
    plans = image_member_plans(study)
    # each arm's recipe: the study's, with the arm's own examples / lr where it gives them
    configs = {p.arm: replace(config, **train.overrides(p.arm)) for p in plans}
    todo = [
        p
        for p in plans
        if not is_trained(
            out,
            p.member_id,
            image_fingerprint(p, configs[p.arm], base),
            checkpoints=configs[p.arm].checkpoint_steps(),
        )
    ]
    if todo:
        say(f"training {len(todo)} of {len(plans)} members into {out}")
    for plan in tqdm(todo, desc="members", unit="member", disable=not progress):
        train_image_member(
            lambda: build_model(source)[0],
            plan,
            configs[plan.arm],
            out,
            base=base,
            progress=progress,
        )
    from modeconn.population.recipes import train_recipe_members

    tuned = train_recipe_members(study, source, base=base, progress=progress, say=say)
    return [member_paths(out, p.member_id)[0] for p in plans] + tuned
