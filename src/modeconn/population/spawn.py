"""Spawning children from one training run (Frankle et al. 2020; Singh et al. 2024).

Frankle, Dziugaite, Roy and Carbin ("Linear Mode Connectivity and the Lottery Ticket
Hypothesis", ICML 2020) train one *parent* run, stop it at step k, and train copies of it
to the end with different SGD noise (data order). Two such *children* are linearly
connected once k is past a point early in training, and separated by a barrier when they
are spawned earlier. Singh et al. (2024, "Landscaping Linear Mode Connectivity") read this
as a "mountainside and ridge" picture: early children fall on two sides of a ridge, later
ones slide down one mountainside.

This module trains the runs; :mod:`modeconn.analyses.spawn` measures them.

* The **parent** is a member of the study's own recipe (:class:`Trainer`: the image SGD
  recipe of :mod:`modeconn.population.train_vision`, or the fine-tuning AdamW recipe of
  :mod:`modeconn.population.train`) trained on data-order seed ``seed`` for the recipe's
  ``T`` steps. Its weights are kept at every spawn step k (step 0 is the starting point,
  before any update) under ``checkpoints/parent@k``, *with its optimiser state* (momentum,
  Adam moments: ``parent@k.optim.safetensors``), and its per-step training loss goes into
  its sidecar (``losses``).
* A **child** ``child@k-j`` starts from exactly the parent's weights and optimiser state at
  k, runs the same remaining learning-rate schedule (steps k+1 … T), and draws the batches
  of those steps from its own seed ``seed + 1 + j``: the batches that seed's order would
  give at steps k+1 … T. So a child whose seed is the parent's replays the parent: bitwise
  for the CNN, at any k; for a text model with dropout, at k = 0 (dropout draws from a
  stream seeded by the run's seed *and* its first step, :func:`run_seed`).

Every run is written like a member (``<id>.safetensors`` + ``<id>.json``, atomically,
:func:`~modeconn.population.train._atomic_save`) with a recipe fingerprint; a run whose
files and fingerprint match is kept, so a rerun trains nothing and a killed one resumes
with whole runs. A child's fingerprint is its parent's, its spawn step and its seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from modeconn._atomic import replace_atomic
from modeconn.errors import ConfigError, PopulationError
from modeconn.population.train import (
    CHECKPOINT_DIR,
    _atomic_save,
    _saved,
    checkpoint_paths,
    clean_partial,
    member_paths,
)

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.engine.spec import ModelSource

PARENT = "parent"
SPAWN_VERSION = 1


def child_id(step: int, j: int) -> str:
    """The id of child j spawned at step k.

    >>> child_id(50, 1)
    'child@50-1'
    """
    return f"child@{step}-{j}"


def child_seed(seed: int, j: int) -> int:
    """Child j's data-order seed: the parent's seed + 1 + j (distinct from the parent's)."""
    return seed + 1 + j


def run_seed(data_seed: int, first_step: int) -> int:
    """The seed of torch's generator (dropout) for a run of `data_seed` starting at
    `first_step`: the data seed itself for a run from step 0 (as a fine-tuned member
    seeds it), a hash of the two otherwise.

    >>> run_seed(7, 0), run_seed(7, 3) == run_seed(7, 3) != run_seed(7, 4)
    (7, True)
    """
    if first_step == 0:
        return data_seed
    digest = hashlib.sha256(f"spawn/{data_seed}/{first_step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def check_spawn(steps: Sequence[int], children: int, total: int, *, where: str) -> None:
    """Refuse spawn steps that are not strictly increasing, lie outside [0, total), or
    fewer than 2 children, naming `where` (the study key) and the parent's length."""
    if children < 2:
        raise ConfigError(
            f"{where}.children must be at least 2 (a barrier joins two siblings); got {children}"
        )
    if not steps:
        raise ConfigError(f"{where}.steps lists no spawn step; give e.g. [0, 50, 100]")
    bad = [k for k in steps if k < 0]
    if bad:
        raise ConfigError(f"{where}.steps: a spawn step is a step count ≥ 0; got {bad[0]}")
    for a, b in itertools.pairwise(steps):
        if b <= a:
            raise ConfigError(
                f"{where}.steps must be strictly increasing; got {a} then {b}: sort them "
                "and drop repeats"
            )
    late = [k for k in steps if k >= total]
    if late:
        raise ConfigError(
            f"{where}.steps: spawn step {late[0]} is beyond the parent's training ({total} "
            f"steps: train.examples // train.batch_size); spawn at steps below {total}"
        )


class Trainer(Protocol):
    """One training recipe, runnable from any step (the parent and its children share it).

    ``total`` is the recipe's number of steps; ``start()`` the model at step 0 (a fresh one
    at every call, identical weights); ``order(seed)`` all ``total`` batches of a data-order
    seed; ``loss(model, batch)`` the training loss of one batch; ``schedule(step)`` the
    learning-rate factor after `step` updates; ``fingerprint(seed)`` a hash of everything
    that decides the parent's weights.
    """

    kind: str
    total: int

    def start(self) -> nn.Module: ...

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer: ...

    def schedule(self, step: int) -> float: ...

    def order(self, seed: int) -> Sequence[Any]: ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def fingerprint(self, seed: int) -> str: ...


# --------------------------------------------------------------------- optimiser state


def optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state as flat tensors ``<param name>::<slot>``."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for param, slots in opt.state.items():
        for slot, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            out[f"{names[id(param)]}::{slot}"] = tensor.detach().cpu().contiguous().clone()
    return out


def load_optimizer_state(
    model: nn.Module, opt: torch.optim.Optimizer, state: dict[str, torch.Tensor]
) -> None:
    """Put :func:`optimizer_state`'s tensors back into `opt` (a fresh one for `model`)."""
    params = dict(model.named_parameters())
    for key, value in state.items():
        name, _, slot = key.rpartition("::")
        if name not in params:
            raise PopulationError(
                f"optimiser state names parameter '{name}', which the model lacks; delete the "
                "spawn folder's checkpoints and rerun (the parent is retrained)"
            )
        opt.state[params[name]][slot] = value.to(params[name].device).clone()


def _optim_path(weights: Path) -> Path:
    return weights.with_name(weights.stem + ".optim.safetensors")


# ----------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class SpawnRuns:
    """Where the runs of one spawn are: the parent, its checkpoints, the children."""

    folder: Path
    steps: tuple[int, ...]
    children: int
    seed: int

    def parent(self) -> Path:
        return member_paths(self.folder, PARENT)[0]

    def checkpoints(self) -> list[Path]:
        return checkpoint_paths(self.folder, PARENT, self.steps)

    def child(self, step: int, j: int) -> Path:
        return member_paths(self.folder, child_id(step, j))[0]

    def child_ids(self, step: int) -> list[str]:
        return [child_id(step, j) for j in range(self.children)]


def _child_fingerprint(parent: str, step: int, seed: int) -> str:
    payload = {"v": SPAWN_VERSION, "parent": parent, "step": step, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _train_steps(
    trainer: Trainer,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Sequence[Any],
    *,
    first: int,
    seed: int,
    on_step: Callable[[int], None] | None = None,
    desc: str = "",
    progress: bool = False,
) -> list[float]:
    """Steps first+1 … first+len(batches) of the recipe; returns each step's batch loss.

    The schedule resumes at `first` (its factor at step s is ``trainer.schedule(s)``
    whatever step the run started from); torch's generator is forked and seeded with
    :func:`run_seed`, so the caller's random state is kept.
    """
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: trainer.schedule(s + first))
    losses: list[float] = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run_seed(seed, first))
        bar = tqdm(batches, desc=desc, disable=not progress, leave=False)
        for step, batch in enumerate(bar, start=first + 1):
            loss = trainer.loss(model, batch)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if on_step is not None:
                on_step(step)
    model.eval()
    return losses


def _meta(run_id: str, fingerprint: str, step: int, seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id,
        "arm": "spawn",
        "data_seed": seed,
        "step": step,
        "recipe": fingerprint,
        "recipe_kind": "spawn",
        **extra,
    }


def train_parent(trainer: Trainer, runs: SpawnRuns, *, progress: bool = False) -> bool:
    """Train the parent, keeping weights and optimiser state at every spawn step.

    Returns whether anything was trained (False: parent and checkpoints already on disk).
    """
    fp = trainer.fingerprint(runs.seed)
    ckpts = dict(zip(runs.steps, runs.checkpoints(), strict=True))
    if _saved(runs.parent(), runs.parent().with_suffix(".json"), fp) and all(
        _saved(p, p.with_suffix(".json"), fp) and _optim_path(p).is_file() for p in ckpts.values()
    ):
        return False
    (runs.folder / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    model = trainer.start()
    opt = trainer.optimizer(model)
    start = time.perf_counter()

    def keep(step: int) -> None:
        path = ckpts.get(step)
        if path is None:
            return
        state = optimizer_state(model, opt)  # reads the state only: training goes on unchanged
        replace_atomic(_optim_path(path), lambda tmp: save_file(state, str(tmp)))
        meta = _meta(f"{PARENT}@{step}", fp, step, runs.seed, checkpoint_of=PARENT)
        _atomic_save(model, path, path.with_suffix(".json"), meta)

    keep(0)
    losses = _train_steps(
        trainer,
        model,
        opt,
        trainer.order(runs.seed),
        first=0,
        seed=runs.seed,
        on_step=keep,
        desc="spawn parent",
        progress=progress,
    )
    weights, sidecar = member_paths(runs.folder, PARENT)
    meta = _meta(
        PARENT,
        fp,
        trainer.total,
        runs.seed,
        kind=trainer.kind,
        losses=[round(x, 6) for x in losses],
        train_seconds=round(time.perf_counter() - start, 1),
    )
    _atomic_save(model, weights, sidecar, meta)
    return True


def train_child(
    trainer: Trainer, runs: SpawnRuns, step: int, seed: int, run_id: str, *, progress: bool = False
) -> bool:
    """Train one child from the parent's weights and optimiser state at `step`, drawing
    its batches from `seed`; returns whether it trained (False: already on disk)."""
    parent_fp = trainer.fingerprint(runs.seed)
    fp = _child_fingerprint(parent_fp, step, seed)
    weights, sidecar = member_paths(runs.folder, run_id)
    if _saved(weights, sidecar, fp):
        return False
    ckpt = checkpoint_paths(runs.folder, PARENT, [step])[0]
    if not _saved(ckpt, ckpt.with_suffix(".json"), parent_fp):
        raise PopulationError(
            f"spawn child '{run_id}' needs the parent's weights at step {step} ({ckpt}); train "
            "the parent first (train_spawn does)"
        )
    model = trainer.start()
    model.load_state_dict(load_file(str(ckpt)))
    opt = trainer.optimizer(model)
    load_optimizer_state(model, opt, load_file(str(_optim_path(ckpt))))
    start = time.perf_counter()
    losses = _train_steps(
        trainer,
        model,
        opt,
        list(trainer.order(seed))[step:],
        first=step,
        seed=seed,
        desc=f"spawn {run_id}",
        progress=progress,
    )
    meta = _meta(
        run_id,
        fp,
        trainer.total,
        seed,
        spawn_step=step,
        spawned_from=PARENT,
        kind=trainer.kind,
        final_train_loss=round(losses[-1], 6) if losses else math.nan,
        train_seconds=round(time.perf_counter() - start, 1),
    )
    _atomic_save(model, weights, sidecar, meta)
    return True


def train_spawn(
    trainer: Trainer,
    runs: SpawnRuns,
    *,
    progress: bool = False,
    say: Callable[[str], None] = print,
) -> int:
    """The parent, then every child of every spawn step; runs on disk are kept. Returns
    the number of runs trained."""
    check_spawn(runs.steps, runs.children, trainer.total, where="analyses.spawn")
    runs.folder.mkdir(parents=True, exist_ok=True)
    clean_partial(runs.folder)
    parent_fp = trainer.fingerprint(runs.seed)
    todo = [
        (k, child_seed(runs.seed, j), child_id(k, j))
        for k in runs.steps
        for j in range(runs.children)
    ]
    missing = [
        rid
        for k, s, rid in todo
        if not _saved(*member_paths(runs.folder, rid), _child_fingerprint(parent_fp, k, s))
    ]
    if missing:
        say(
            f"spawn: {len(missing)} of {len(todo)} children to train into {runs.folder} "
            f"(parent: {trainer.total} steps)"
        )
    trained = int(train_parent(trainer, runs, progress=progress))
    for k, s, rid in tqdm(todo, desc="spawn", unit="child", disable=not progress):
        trained += int(train_child(trainer, runs, k, s, rid, progress=progress))
    return trained


# ------------------------------------------------------------------------ the recipes


class ImageTrainer:
    """The image SGD recipe (:func:`~modeconn.population.train_vision.train_image_member`)
    as a :class:`Trainer`: the shared initialisation with its own head (``vary: data``),
    seeded batch order, SGD with momentum, linear warm-up and decay. A parent of seed s is
    bitwise the member that recipe trains with data seed s."""

    kind = "image-sgd"

    def __init__(
        self,
        make_body: Callable[[], nn.Module],
        images: torch.Tensor,
        labels: torch.Tensor,
        config: Any,
        *,
        base: str,
        data: str,
    ) -> None:
        from modeconn.population.train_vision import ImageMemberPlan

        self.make_body, self.config, self.base = make_body, config, base
        self.images, self.labels = images, labels
        self.total = int(config.steps)
        self._plan = lambda seed: ImageMemberPlan(PARENT, "spawn", -1, seed, images, labels, data)

    def start(self) -> nn.Module:
        return self.make_body()

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        from modeconn.population.train_vision import _sgd

        return _sgd(model, self.config)

    def schedule(self, step: int) -> float:
        from modeconn.population.train import linear_schedule

        return linear_schedule(step, steps=self.total, warmup=self.config.warmup)

    def order(self, seed: int) -> Sequence[Any]:
        from modeconn.population.train_vision import image_batches

        n = int(self.labels.numel())
        return image_batches(n, steps=self.total, batch_size=self.config.batch_size, seed=seed)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        index = torch.from_numpy(batch)
        logits = model(images=self.images[index])
        return nn.functional.cross_entropy(logits, self.labels[index])

    def fingerprint(self, seed: int) -> str:
        from modeconn.population.train_vision import image_fingerprint

        return image_fingerprint(self._plan(seed), self.config, self.base)


class TextTrainer:
    """The fine-tuning recipe (:func:`~modeconn.population.train.train_member`) as a
    :class:`Trainer`: the pretrained body with a head drawn from `head_seed`, AdamW, the
    length-bucketed seeded batch order, linear warm-up and decay, dropout on."""

    kind = "finetune"

    def __init__(
        self,
        make_model: Callable[[], nn.Module],
        tokenizer: Any,
        examples: Sequence[Any],
        label_order: Sequence[str],
        config: Any,
        *,
        base: str,
        head_seed: int,
    ) -> None:
        from modeconn.population.train import MemberPlan, _encode

        self.make_model, self.config, self.base, self.head_seed = (
            make_model,
            config,
            base,
            head_seed,
        )
        self.total = int(config.steps)
        self._plan = lambda seed: MemberPlan(PARENT, "spawn", head_seed, seed, tuple(examples))
        self.encoded, self.targets = _encode(
            tokenizer, self._plan(0), label_order, config.max_length
        )
        self.lengths = [len(x) for x in self.encoded["input_ids"]]
        self.pad_id = getattr(tokenizer, "pad_token_id", 0) or 0

    def start(self) -> nn.Module:
        from modeconn.population.train import init_head

        model = self.make_model()
        c = self.config
        init_head(model, prefix=c.head_prefix, seed=self.head_seed, std=c.init_std)
        return model

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        from modeconn.population.train import _adamw

        c = self.config
        return _adamw(list(model.named_parameters()), lr=c.lr, weight_decay=c.weight_decay)

    def schedule(self, step: int) -> float:
        from modeconn.population.train import linear_schedule

        return linear_schedule(step, steps=self.total, warmup=self.config.warmup)

    def order(self, seed: int) -> Sequence[Any]:
        from modeconn.population.train import batch_order

        c = self.config
        return batch_order(
            self.lengths, steps=self.total, batch_size=c.batch_size, bucket=c.bucket, seed=seed
        )

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        from modeconn.data.text import collate

        out = model(**collate(self.encoded, batch, self.pad_id))
        logits = out.logits if hasattr(out, "logits") else out
        return nn.functional.cross_entropy(logits, self.targets[list(batch)])

    def fingerprint(self, seed: int) -> str:
        from modeconn.population.train import recipe_fingerprint

        return recipe_fingerprint(self._plan(seed), self.config, self.base)


def trainer_for(study: Study, source: ModelSource, data: str) -> Trainer:
    """The study's own recipe (its ``train`` section) on split `data`, as a :class:`Trainer`.

    ``model.kind: cnn`` gets the image recipe from the engine's skeleton (``source``);
    ``model.kind: hf`` the fine-tuning recipe from ``model.pretrained`` (head seed 0).
    """
    train = study.train
    if train is None:
        raise ConfigError(
            "analyses.spawn trains its parent with the study's `train` recipe; add a `train` "
            "section (examples, batch_size, lr, …)"
        )
    if study.model.kind == "cnn":
        from modeconn.data.digits import digits_sample
        from modeconn.models import build_model
        from modeconn.population.train_vision import ImageTrainConfig, body_description

        images, labels = digits_sample(study.split_recipe(data))
        config = ImageTrainConfig(
            examples=train.examples,
            batch_size=train.batch_size,
            lr=train.lr,
            weight_decay=train.weight_decay,
            warmup=train.warmup,
            head_prefix=train.head_prefix,
        )
        return ImageTrainer(
            lambda: build_model(source)[0],
            images,
            labels,
            config,
            base=body_description(source.kind, source.options),
            data=data,
        )
    if study.model.kind == "hf" and study.model.pretrained is not None:
        from modeconn.data.text import read_examples
        from modeconn.models.hf import load_classifier, load_tokenizer, resolve_pretrained

        model_dir = resolve_pretrained(study.model.pretrained, base=study.base)
        labels_order = list(study.model.label_order)
        num_layers = study.model.num_layers
        return TextTrainer(
            lambda: load_classifier(model_dir, labels_order, num_layers=num_layers),
            load_tokenizer(model_dir),
            read_examples(study.split_spec(data)),
            labels_order,
            train.recipe(study.model.max_length),
            base=str(model_dir),
            head_seed=0,
        )
    raise ConfigError(
        f"analyses.spawn trains `model.kind: cnn` or `hf` (with model.pretrained) studies; "
        f"this one is '{study.model.kind}'"
    )
