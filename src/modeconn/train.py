"""Fine-tune a population from one pretrained checkpoint.

Juneja et al. (2023) fine-tune BERT-base with AdamW (lr 2e-5, batch 32, weight decay
0.01, 10 % linear warm-up then linear decay) and vary the seed, which changes both the
classifier head's initialisation and the order of the training data. Here the two are
separate seeds (``head_seed``, ``data_seed``) so a study can vary either alone.

Members are written atomically (a temporary file, then ``os.replace``) with a sidecar
JSON holding their metadata and a fingerprint of the recipe; a member whose file and
matching sidecar exist is skipped, so an interrupted population resumes where it
stopped and a crash never leaves a half-written member behind.

Training batches are drawn in a seeded random order and then grouped by length within
chunks of ``bucket`` batches, which cuts padding (the main cost on a CPU) while the
data-order seed still decides which examples meet in a batch and when.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from modeconn.errors import ConfigError
from modeconn.tasks.text import Example, collate

RECIPE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """The fine-tuning recipe. Defaults are the paper's BERT recipe (lr 2e-5, bs 32)."""

    examples: int = 3200  # training examples seen per member (sets the schedule length)
    batch_size: int = 32
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps with linear warm-up
    max_length: int = 128
    bucket: int = 8  # batches per length-sorted chunk
    head_prefix: str = "classifier"  # parameters re-initialised from head_seed
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.examples < self.batch_size:
            raise ConfigError(
                f"train.examples must be at least train.batch_size ({self.batch_size}); "
                f"got {self.examples}"
            )
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"train.warmup must be in [0, 1); got {self.warmup}")

    @property
    def steps(self) -> int:
        return self.examples // self.batch_size


@dataclass(frozen=True)
class MemberPlan:
    """One member to train: its id, arm, seeds and training examples."""

    member_id: str
    arm: str
    head_seed: int
    data_seed: int
    examples: tuple[Example, ...]


def recipe_fingerprint(plan: MemberPlan, config: TrainConfig, base: str) -> str:
    digest = hashlib.sha256()
    payload = {
        "v": RECIPE_VERSION,
        "base": base,
        "config": asdict(config),
        "arm": plan.arm,
        "head_seed": plan.head_seed,
        "data_seed": plan.data_seed,
    }
    digest.update(json.dumps(payload, sort_keys=True).encode())
    for ex in plan.examples:
        digest.update(f"{ex.text_a}\t{ex.text_b}\t{ex.label}\n".encode())
    return digest.hexdigest()[:16]


def batch_order(
    lengths: Sequence[int], *, steps: int, batch_size: int, bucket: int, seed: int
) -> list[list[int]]:
    """`steps` batches of indices: seeded shuffle per epoch, length-grouped within chunks."""
    rng = random.Random(seed)
    n = len(lengths)
    out: list[list[int]] = []
    while len(out) < steps:
        perm = list(range(n))
        rng.shuffle(perm)
        epoch: list[list[int]] = []
        chunk = batch_size * bucket
        for start in range(0, n - batch_size + 1, chunk):
            part = sorted(perm[start : start + chunk], key=lambda i: lengths[i])
            epoch += [
                part[i : i + batch_size]
                for i in range(0, len(part), batch_size)
                if len(part[i : i + batch_size]) == batch_size
            ]
        rng.shuffle(epoch)
        out += epoch
    return out[:steps]


def linear_schedule(step: int, *, steps: int, warmup: float) -> float:
    """BERT's schedule: linear warm-up over `warmup`·steps, then linear decay to 0."""
    n_warm = max(1, math.ceil(warmup * steps)) if warmup > 0 else 0
    if step < n_warm:
        return (step + 1) / n_warm
    return max(0.0, (steps - step) / max(1, steps - n_warm))


def init_head(model: nn.Module, *, prefix: str, seed: int, std: float) -> int:
    """Re-initialise the classifier head from `seed` (normal weights, zero biases)."""
    gen = torch.Generator().manual_seed(seed)
    touched = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith(prefix):
                continue
            if name.endswith("bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
            touched += 1
    if touched == 0:
        raise ConfigError(
            f"train.head_prefix {prefix!r} matches no parameter of the model; set it to the "
            "name of the classifier module (e.g. 'classifier' for BERT, 'score' for GPT-2)"
        )
    return touched


def _atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def member_paths(out_dir: Path, member_id: str) -> tuple[Path, Path]:
    return out_dir / f"{member_id}.safetensors", out_dir / f"{member_id}.json"


def is_trained(out_dir: Path, member_id: str, fingerprint: str) -> bool:
    weights, sidecar = member_paths(out_dir, member_id)
    if not (weights.is_file() and sidecar.is_file()):
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(meta.get("recipe") == fingerprint)


def train_member(
    make_model: Callable[[], nn.Module],
    tokenizer: Any,
    plan: MemberPlan,
    label_order: Sequence[str],
    config: TrainConfig,
    out_dir: Path,
    *,
    base: str,
    progress: bool = True,
) -> Path:
    """Fine-tune one member and write `<id>.safetensors` + `<id>.json` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, sidecar = member_paths(out_dir, plan.member_id)
    fingerprint = recipe_fingerprint(plan, config, base)
    if is_trained(out_dir, plan.member_id, fingerprint):
        return weights
    labels = {name: i for i, name in enumerate(label_order)}
    for i, ex in enumerate(plan.examples):
        if ex.label not in labels:
            raise ConfigError(
                f"member '{plan.member_id}': training example {i} has label {ex.label!r}, not "
                f"one of the model's labels {list(label_order)}; map it in the arm's data"
            )
    texts_b = [e.text_b for e in plan.examples] if plan.examples[0].text_b is not None else None
    enc = tokenizer(
        [e.text_a for e in plan.examples],
        texts_b,
        truncation=True,
        max_length=config.max_length,
        padding=False,
    )
    encoded = {k: list(v) for k, v in enc.items()}
    targets = torch.tensor([labels[e.label] for e in plan.examples], dtype=torch.long)
    lengths = [len(x) for x in encoded["input_ids"]]
    order = batch_order(
        lengths,
        steps=config.steps,
        batch_size=config.batch_size,
        bucket=config.bucket,
        seed=plan.data_seed,
    )
    pad_id = getattr(tokenizer, "pad_token_id", 0) or 0

    model = make_model()
    init_head(model, prefix=config.head_prefix, seed=plan.head_seed, std=config.init_std)
    decay = [p for n, p in model.named_parameters() if not n.endswith(("bias", "LayerNorm.weight"))]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(("bias", "LayerNorm.weight"))]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: linear_schedule(s, steps=config.steps, warmup=config.warmup)
    )
    start = time.perf_counter()
    model.train()
    # dropout draws from torch's global generator: fork it so the caller's state is kept
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.data_seed)
        bar = tqdm(order, desc=f"train {plan.member_id}", disable=not progress, leave=False)
        running = math.nan
        for idx in bar:
            batch = collate(encoded, idx, pad_id)
            out = model(**batch)
            logits = out.logits if hasattr(out, "logits") else out
            loss = torch.nn.functional.cross_entropy(logits, targets[idx])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
    seconds = time.perf_counter() - start
    model.eval()

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = weights.with_name(f".{weights.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp))
        os.replace(tmp, weights)
    finally:
        tmp.unlink(missing_ok=True)
    _atomic_write_json(
        sidecar,
        {
            "id": plan.member_id,
            "arm": plan.arm,
            "head_seed": plan.head_seed,
            "data_seed": plan.data_seed,
            "step": config.steps,
            "recipe": fingerprint,
            "base": base,
            "train_examples": len(plan.examples),
            "train_seconds": round(seconds, 1),
            "final_train_loss": round(running, 4),
            "config": asdict(config),
        },
    )
    return weights


def clean_partial(out_dir: Path) -> int:
    """Remove temporary files a killed run left behind; returns how many."""
    removed = 0
    if out_dir.is_dir():
        for p in out_dir.glob(".*.tmp-*"):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
