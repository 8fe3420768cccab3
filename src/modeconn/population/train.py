"""Fine-tune a population from one pretrained checkpoint.

Juneja et al. (2023) fine-tune BERT-base with AdamW (lr 2e-5, batch 32, weight decay
0.01, 10 % linear warm-up then linear decay) and vary the seed, which changes both the
classifier head's initialisation and the order of the training data. Here the two are
separate seeds (``head_seed``, ``data_seed``) so a study can vary either alone.

Two recipes are offered per member:

* ``finetune``: every parameter trains from the pretrained body and a seeded random head.
* ``lp-ft`` (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"; the
  paper's Fig. 20): a *linear probe* first trains the classifier head alone on the frozen
  body, then the usual full fine-tuning starts from the probed head. Starting from a head
  that already fits the features changes the early gradients the body sees, which is why
  LP-FT members may settle in other basins than plain fine-tuning from the same seeds.

Members are written atomically (a temporary file, then ``os.replace``) with a sidecar
JSON holding their metadata and a fingerprint of the recipe; a member whose file and
matching sidecar exist is skipped, so an interrupted population resumes where it
stopped and a crash never leaves a half-written member behind.

A member may also keep *checkpoints along training* (the paper's Fig. 7, basins along
training): ``TrainConfig.checkpoints`` lists fractions of the total steps, and the weights
at those steps are written to ``<out_dir>/checkpoints/<member_id>@<step>.safetensors``
with a sidecar like the member's (``step``, ``id`` = ``<member_id>@<step>`` and
``checkpoint_of``). Saving a checkpoint only reads the weights, so the final member is the
same with or without them, and the list takes no part in the recipe fingerprint.

Training batches are drawn in a seeded random order and then grouped by length within
chunks of ``bucket`` batches, which cuts padding (the main cost on a CPU) while the
data-order seed still decides which examples meet in a batch and when.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from modeconn._atomic import is_temporary, replace_atomic, write_text_atomic
from modeconn.config.train import TrainConfig
from modeconn.data.text import Example, collate
from modeconn.errors import ConfigError

RECIPE_VERSION = 1
CHECKPOINT_DIR = "checkpoints"  # sub-folder of a members folder; Population.from_dir skips it

Encoded = Mapping[str, Sequence[Sequence[int]]]


@dataclass(frozen=True)
class LinearProbe:
    """The linear-probe phase of LP-FT: how many examples it sees and its learning rate.

    The probe uses the recipe's batch size, weight decay and warm-up fraction; its
    steps are ``examples // batch_size``.

    >>> LinearProbe(examples=3200).lr
    0.001
    """

    examples: int
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.examples < 1:
            raise ConfigError(f"probe_examples must be at least 1; got {self.examples}")
        if not self.lr > 0:
            raise ConfigError(f"probe_lr must be > 0; got {self.lr}")


@dataclass(frozen=True)
class MemberPlan:
    """One member to train: its id, arm, seeds and training examples.

    ``probe`` set means the LP-FT recipe (probe the head first); ``None`` plain finetuning.
    """

    member_id: str
    arm: str
    head_seed: int
    data_seed: int
    examples: tuple[Example, ...]
    probe: LinearProbe | None = None

    @property
    def recipe_kind(self) -> str:
        """``"finetune"`` or ``"lp-ft"``."""
        return "finetune" if self.probe is None else "lp-ft"


_IDENTITIES: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def pretrained_identity(model_dir: Path) -> str:
    """``<folder name>@<hash>``: the pretrained checkpoint by content, not by location.

    Every file directly in the folder (weights, config, tokenizer) enters the hash by name
    and content, so the same checkpoint unpacked in another checkout or venv fingerprints
    the same and its members are reused; a changed file changes it. Hashed once per
    process for a folder whose files keep their sizes and modification times.
    """
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file())
    key = (str(model_dir), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _IDENTITIES:
        digest = hashlib.sha256()
        for p in files:
            digest.update(f"{p.name}\0{p.stat().st_size}\0".encode())
            with p.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        _IDENTITIES[key] = f"{Path(model_dir).name}@{digest.hexdigest()[:16]}"
    return _IDENTITIES[key]


def recipe_fingerprint(plan: MemberPlan, config: TrainConfig, base: str) -> str:
    """A short hash of everything that decides a member's final weights.

    The checkpoint list is left out (it does not change the weights), and the probe
    settings enter only for LP-FT members, so a plain member's fingerprint is what it was
    before either option existed and members already on disk are reused.
    """
    digest = hashlib.sha256()
    recipe = asdict(config)
    del recipe["checkpoints"]
    payload: dict[str, Any] = {
        "v": RECIPE_VERSION,
        "base": base,
        "config": recipe,
        "arm": plan.arm,
        "head_seed": plan.head_seed,
        "data_seed": plan.data_seed,
    }
    if plan.probe is not None:
        payload["probe"] = {"examples": plan.probe.examples, "lr": plan.probe.lr}
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


def probe_seed(data_seed: int) -> int:
    """The probe's data-order seed: derived from the member's data seed, but its own
    stream, so the probe does not replay the first batches of the fine-tuning phase.

    >>> probe_seed(0) == probe_seed(0) != probe_seed(1)
    True
    """
    return int.from_bytes(hashlib.sha256(f"probe/{data_seed}".encode()).digest()[:8], "big")


def linear_schedule(step: int, *, steps: int, warmup: float) -> float:
    """BERT's schedule: linear warm-up over `warmup`·steps, then linear decay to 0."""
    n_warm = max(1, math.ceil(warmup * steps)) if warmup > 0 else 0
    if step < n_warm:
        return (step + 1) / n_warm
    return max(0.0, (steps - step) / max(1, steps - n_warm))


def checkpoint_steps(config: TrainConfig) -> list[int]:
    """The steps at which `config.checkpoints` asks for weights: each fraction times the
    steps, rounded half up, kept within ``1 ≤ step < steps``, unique and sorted.

    >>> cfg = TrainConfig(examples=320, batch_size=32, checkpoints=(0.5, 0.25, 0.26, 0.01))
    >>> checkpoint_steps(cfg)  # 10 steps: 5, 2.5 → 3, 2.6 → 3, 0.1 → 0 → 1
    [1, 3, 5]
    """
    n = config.steps
    steps = {min(max(math.floor(f * n + 0.5), 1), n - 1) for f in config.checkpoints}
    return sorted(s for s in steps if 1 <= s < n)


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


def _adamw(
    named: Sequence[tuple[str, nn.Parameter]], *, lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with BERT's grouping: no weight decay on biases and LayerNorm weights."""
    skip = ("bias", "LayerNorm.weight")
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not n.endswith(skip)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n.endswith(skip)], "weight_decay": 0.0},
        ],
        lr=lr,
    )


def _fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    encoded: Encoded,
    targets: torch.Tensor,
    order: Sequence[Sequence[int]],
    *,
    pad_id: int,
    desc: str,
    progress: bool,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """One pass over `order`; returns the running (EMA 0.9) training loss at the end.

    `on_step(step, loss)` runs after each optimiser step (counted from 1).
    """
    bar = tqdm(order, desc=desc, disable=not progress, leave=False)
    running = math.nan
    for step, idx in enumerate(bar, start=1):
        batch = collate(encoded, idx, pad_id)
        out = model(**batch)
        logits = out.logits if hasattr(out, "logits") else out
        loss = torch.nn.functional.cross_entropy(logits, targets[list(idx)])
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        if on_step is not None:
            on_step(step, running)
    return running


def linear_probe(
    model: nn.Module,
    encoded: Encoded,
    targets: torch.Tensor,
    order: Sequence[Sequence[int]],
    *,
    prefix: str,
    lr: float,
    weight_decay: float = 0.0,
    warmup: float = 0.0,
    pad_id: int = 0,
    progress: bool = False,
    desc: str = "probe",
) -> float:
    """Train only the parameters whose names start with `prefix` (the LP of LP-FT).

    Kumar et al. (2022) fit a linear classifier on the frozen pretrained features before
    fine-tuning. Here the body's parameters get ``requires_grad = False`` (no gradient is
    computed for them, and the optimiser holds the head alone) and the model runs in eval
    mode, so the features are the body's deterministic output (no dropout). AdamW at `lr`
    with `weight_decay` and the linear warm-up/decay schedule runs over the batches of
    `order`. Gradient flags and the train/eval mode are restored afterwards. Returns the
    running training loss at the end.

    `encoded` maps tokenizer fields to per-example token lists and `targets` holds each
    example's class index; each entry of `order` is one batch of example indices.
    """
    head = [(n, p) for n, p in model.named_parameters() if n.startswith(prefix)]
    if not head:
        raise ConfigError(
            f"train.head_prefix {prefix!r} matches no parameter of the model; the linear "
            "probe trains only those: set it to the classifier module's name"
        )
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(prefix))
        model.eval()
        opt = _adamw(head, lr=lr, weight_decay=weight_decay)
        n_steps = len(order)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: linear_schedule(s, steps=n_steps, warmup=warmup)
        )
        return _fit(
            model, opt, sched, encoded, targets, order, pad_id=pad_id, desc=desc, progress=progress
        )
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train(was_training)


def _atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def _atomic_save(model: nn.Module, weights: Path, sidecar: Path, meta: dict[str, Any]) -> None:
    """Weights then sidecar, each written atomically (:mod:`modeconn._atomic`)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    replace_atomic(weights, lambda tmp: save_file(state, str(tmp)))
    _atomic_write_json(sidecar, meta)


def member_paths(out_dir: Path, member_id: str) -> tuple[Path, Path]:
    return out_dir / f"{member_id}.safetensors", out_dir / f"{member_id}.json"


def checkpoint_paths(out_dir: Path, member_id: str, steps: Sequence[int]) -> list[Path]:
    """The weight files of a member's checkpoints; each sidecar is ``path.with_suffix('.json')``.

    >>> [p.name for p in checkpoint_paths(Path("members"), "seed-00", [3, 6])]
    ['seed-00@3.safetensors', 'seed-00@6.safetensors']
    >>> checkpoint_paths(Path("members"), "seed-00", [3])[0].parent.name
    'checkpoints'
    """
    folder = out_dir / CHECKPOINT_DIR
    return [folder / f"{member_id}@{step}.safetensors" for step in steps]


def _saved(weights: Path, sidecar: Path, fingerprint: str) -> bool:
    if not (weights.is_file() and sidecar.is_file()):
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("recipe") == fingerprint


def is_trained(
    out_dir: Path, member_id: str, fingerprint: str, *, checkpoints: Sequence[int] = ()
) -> bool:
    """Whether the member, and its checkpoints at steps `checkpoints`, are on disk with
    sidecars of recipe `fingerprint`."""
    if not _saved(*member_paths(out_dir, member_id), fingerprint):
        return False
    return all(
        _saved(p, p.with_suffix(".json"), fingerprint)
        for p in checkpoint_paths(out_dir, member_id, checkpoints)
    )


def adopt_trained(
    out_dir: Path,
    member_id: str,
    fingerprint: str,
    legacy: str,
    *,
    checkpoints: Sequence[int] = (),
) -> bool:
    """:func:`is_trained`, also for a member trained under `legacy`, the fingerprint the
    same recipe had when the pretrained checkpoint was named by its path.

    Such a member's weights are what this recipe makes, so its sidecars (member and
    checkpoints) are rewritten to `fingerprint`, atomically, and it counts as trained:
    members trained before fingerprints named the checkpoint by content are reused.
    """
    if is_trained(out_dir, member_id, fingerprint, checkpoints=checkpoints):
        return True
    if legacy == fingerprint or not is_trained(out_dir, member_id, legacy, checkpoints=checkpoints):
        return False
    sidecars = [member_paths(out_dir, member_id)[1]]
    sidecars += [p.with_suffix(".json") for p in checkpoint_paths(out_dir, member_id, checkpoints)]
    for sidecar in sidecars:
        _atomic_write_json(sidecar, {**json.loads(sidecar.read_text()), "recipe": fingerprint})
    return True


def _encode(
    tokenizer: Any, plan: MemberPlan, label_order: Sequence[str], max_length: int
) -> tuple[dict[str, list[Any]], torch.Tensor]:
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
        max_length=max_length,
        padding=False,
    )
    encoded = {k: list(v) for k, v in enc.items()}
    targets = torch.tensor([labels[e.label] for e in plan.examples], dtype=torch.long)
    return encoded, targets


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
    """Train one member and write `<id>.safetensors` + `<id>.json` atomically.

    With ``plan.probe`` set, :func:`linear_probe` first trains the seeded head on the
    frozen body; the fine-tuning phase then runs the same recipe as a plain member. The
    steps listed by :func:`checkpoint_steps` (fine-tuning steps) are saved under
    ``out_dir/checkpoints`` on the way.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, sidecar = member_paths(out_dir, plan.member_id)
    fingerprint = recipe_fingerprint(plan, config, base)
    ckpt_steps = checkpoint_steps(config)
    if is_trained(out_dir, plan.member_id, fingerprint, checkpoints=ckpt_steps):
        return weights
    probe_steps = plan.probe.examples // config.batch_size if plan.probe is not None else 0
    if plan.probe is not None and probe_steps < 1:
        raise ConfigError(
            f"train.arms[{plan.arm}].probe_examples ({plan.probe.examples}) must be at least "
            f"train.batch_size ({config.batch_size}): the probe would take no step"
        )
    encoded, targets = _encode(tokenizer, plan, label_order, config.max_length)
    lengths = [len(x) for x in encoded["input_ids"]]
    pad_id = getattr(tokenizer, "pad_token_id", 0) or 0

    model = make_model()
    init_head(model, prefix=config.head_prefix, seed=plan.head_seed, std=config.init_std)
    start = time.perf_counter()
    probe_loss = math.nan
    if plan.probe is not None:
        probe_order = batch_order(
            lengths,
            steps=probe_steps,
            batch_size=config.batch_size,
            bucket=config.bucket,
            seed=probe_seed(plan.data_seed),
        )
        probe_loss = linear_probe(
            model,
            encoded,
            targets,
            probe_order,
            prefix=config.head_prefix,
            lr=plan.probe.lr,
            weight_decay=config.weight_decay,
            warmup=config.warmup,
            pad_id=pad_id,
            progress=progress,
            desc=f"probe {plan.member_id}",
        )

    order = batch_order(
        lengths,
        steps=config.steps,
        batch_size=config.batch_size,
        bucket=config.bucket,
        seed=plan.data_seed,
    )
    opt = _adamw(list(model.named_parameters()), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: linear_schedule(s, steps=config.steps, warmup=config.warmup)
    )

    def meta(step: int, loss: float) -> dict[str, Any]:
        probe = None
        if plan.probe is not None:
            probe = {
                "examples": plan.probe.examples,
                "lr": plan.probe.lr,
                "steps": probe_steps,
                "final_train_loss": round(probe_loss, 4),
            }
        return {
            "id": plan.member_id,
            "arm": plan.arm,
            "head_seed": plan.head_seed,
            "data_seed": plan.data_seed,
            "step": step,
            "recipe": fingerprint,
            "recipe_kind": plan.recipe_kind,
            "probe": probe,
            "base": base,
            "train_examples": len(plan.examples),
            "train_seconds": round(time.perf_counter() - start, 1),
            "final_train_loss": round(loss, 4),
            "config": asdict(config),
        }

    paths = checkpoint_paths(out_dir, plan.member_id, ckpt_steps)
    wanted = dict(zip(ckpt_steps, paths, strict=True))
    if wanted:
        (out_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)

    def save_checkpoint(step: int, loss: float) -> None:
        path = wanted.get(step)
        if path is not None:  # reads the weights only: training goes on unchanged
            extra = {"id": f"{plan.member_id}@{step}", "checkpoint_of": plan.member_id}
            _atomic_save(model, path, path.with_suffix(".json"), {**meta(step, loss), **extra})

    model.train()
    # dropout draws from torch's global generator: fork it so the caller's state is kept
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.data_seed)
        running = _fit(
            model,
            opt,
            sched,
            encoded,
            targets,
            order,
            pad_id=pad_id,
            desc=f"train {plan.member_id}",
            progress=progress,
            on_step=save_checkpoint if wanted else None,
        )
    model.eval()
    _atomic_save(model, weights, sidecar, meta(config.steps, running))
    return weights


def clean_partial(out_dir: Path) -> int:
    """Remove temporary files a killed run left behind (members and checkpoints); returns
    how many."""
    removed = 0
    for folder in (out_dir, out_dir / CHECKPOINT_DIR):
        if folder.is_dir():
            for p in folder.glob(".*"):
                if is_temporary(p):
                    p.unlink(missing_ok=True)
                    removed += 1
    return removed
