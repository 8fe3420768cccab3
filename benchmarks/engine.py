"""Engine speed against a plain forward pass and against the machine's GEMM peak.

    .venv/bin/python benchmarks/engine.py                       # 512 MNLI pairs, 6 layers
    .venv/bin/python benchmarks/engine.py --examples 64 --repeats 1      # a quick smoke run
    .venv/bin/python benchmarks/engine.py --dtype bfloat16 --dtype float16 --compile
    .venv/bin/python benchmarks/engine.py --device cuda --dtype bfloat16 --gemm-n 8192

Everything below is measured in one run, at one thread count (``--threads``), on one
fixed MNLI sample (dev_matched rows 6000:, ``--examples`` pairs, seed 0) tokenized and
collated once into the engine's length-sorted batches. The model is all-MiniLM-L6-v2
(``--layers`` of its 6) with a 3-way head; A and B are seeded perturbations of it.
Rows are timed interleaved (A B C … A B C …, ``--repeats`` rounds, after one untimed
warm-up round); each row's time is its median over rounds, and "vs plain" is the median
over rounds of the per-round ratio, with its range [min–max]: adjacent rows share the
machine's drift, so the ratio holds on a noisy machine where absolute speeds do not.

Rows
  plain forward    ``model(**batch)`` over the same batches with θ0.5 already in the
                   weights: the ceiling for the engine (no point writing, no loss).
  engine           ``Evaluator.evaluate_lerp(A, B, 0.5, split)``: writes θ0.5 into the
                   resident weights, runs the same forward, computes losses and metrics.
  engine <dtype>   the same with ``Evaluator(dtype=…)`` (``--dtype``, repeatable).
  engine compiled  the same with ``Evaluator(compile=True)`` (``--compile``); the first
                   call's compile time is printed apart and not counted.

Columns
  ex/s             examples per second; ``s/point`` is the time of one α point.
  useful GFLOP/s   FLOPs of the *unpadded* sample per second (formula below).
  of peak          useful GFLOP/s ÷ the fp32 GEMM peak measured in this run:
                   ``torch.matmul`` of two ``--gemm-n`` square fp32 matrices on the same
                   device and threads (TF32 off), best of ``--repeats``.
  vs plain         this row's ex/s ÷ the plain forward's: median of the per-round ratios
                   [min–max over rounds].
  Δloss vs fp32    |mean loss of this row − mean loss of the fp32 engine| at θ0.5.

Useful FLOPs of a BERT forward, counting real (unpadded) tokens only: an example of
T tokens costs

    2·P_enc·T + 4·L·d·T² + 2·P_head

where P_enc is the encoder's parameter count (embedding tables excluded: a lookup is
not arithmetic), L the number of layers, d the hidden size (4·L·d·T² is QKᵀ and the
attention-weighted sum of V, 2·T·d multiply-adds each per token and layer), and P_head
the pooler and classifier, applied once per example to the [CLS] vector. This is the
usual "2 × non-embedding parameters per token + attention" rule with the head counted
per example rather than per token.

Targets: engine / plain forward ≥ 0.9; engine's useful FLOP rate ≥ 0.6 of the fp32
GEMM peak. A row whose loss moves by more than a small barrier (~0.01) is not a free
speed-up.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import (
    BUILTIN,
    LABELS,
    base_classifier,
    data_root,
    format_ratio,
    interleaved,
    median,
    perturbed,
    ratio_summary,
    sync,
)

from modeconn.data.text import PreparedSplit, SplitSpec, prepare_split
from modeconn.engine.evaluate import Evaluator, resolve_device
from modeconn.models.hf import load_tokenizer, resolve_pretrained


def useful_flops(model: torch.nn.Module, split: PreparedSplit) -> float:
    """FLOPs of one forward over `split`'s real tokens (see the module docstring)."""
    config: Any = model.config
    n_enc = sum(p.numel() for name, p in model.named_parameters() if ".encoder." in f".{name}")
    n_emb = sum(p.numel() for name, p in model.named_parameters() if "embeddings." in name)
    n_head = sum(p.numel() for p in model.parameters()) - n_enc - n_emb
    layers, d = config.num_hidden_layers, config.hidden_size
    total = 0.0
    for batch in split.batches:
        for t in batch["attention_mask"].sum(dim=1).tolist():  # real tokens per example
            total += 2 * n_enc * t + 4 * layers * d * t * t + 2 * n_head
    return total


def gemm_peak(n: int, device: torch.device, repeats: int) -> float:
    """FLOP/s of an n×n fp32 matmul (2·n³ FLOPs), best of `repeats`."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    torch.matmul(a, b)  # warm-up
    best = math.inf
    for _ in range(max(3, repeats)):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=512, help="MNLI pairs (default 512)")
    ap.add_argument("--layers", type=int, default=6, help="encoder layers of MiniLM to keep")
    ap.add_argument(
        "--repeats", type=int, default=5, help="interleaved rounds; medians are reported"
    )
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--max-tokens", type=int, default=1024, help="engine batch token budget")
    ap.add_argument(
        "--dtype",
        action="append",
        default=[],
        choices=["bfloat16", "float16"],
        help="add an engine row in this dtype (repeatable)",
    )
    ap.add_argument("--compile", action="store_true", help="add a torch.compile engine row")
    ap.add_argument(
        "--gemm-n",
        type=int,
        action="append",
        default=None,
        help="GEMM size(s); the peak is the best of them (default 1024, 2048, 4096 on CPU; "
        "8192 on GPU)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # the peak and the model both in fp32
    device = resolve_device(args.device)
    gemm_sizes = args.gemm_n or ([8192] if device.type == "cuda" else [1024, 2048, 4096])

    tok = load_tokenizer(resolve_pretrained(BUILTIN))
    spec = SplitSpec(
        "mnli",
        data_root() / "mnli/dev_matched.tsv",
        "premise",
        "gold_label",
        "hypothesis",
        rows="6000:",
        sample_size=args.examples,
    )
    split = prepare_split(spec, tok, LABELS, max_tokens=args.max_tokens)
    on_device = split.to(device)
    model = base_classifier(BUILTIN, layers=args.layers)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = perturbed(a, 1, 0.01)
    flops = useful_flops(model, split)

    # the plain forward's model carries θ0.5, written once, outside the timing
    plain_model = copy.deepcopy(model).to(device).eval()
    mid = Evaluator(copy.deepcopy(model), device=device)
    mid.set_lerp(mid.as_point(a, name="A"), mid.as_point(b, name="B"), 0.5)
    plain_model.load_state_dict({**plain_model.state_dict(), **mid.point})

    def plain() -> None:
        with torch.inference_mode():
            for batch in on_device.batches:
                plain_model(**batch)

    rows: dict[str, Callable[[], float | None]] = {"plain forward": lambda: plain()}
    losses: dict[str, float] = {}

    def engine_row(name: str, ev: Evaluator) -> Callable[[], float | None]:
        pa, pb = ev.as_point(a, name="A"), ev.as_point(b, name="B")

        def run() -> float:
            loss = ev.evaluate_lerp(pa, pb, 0.5, split).loss
            losses[name] = loss
            return loss

        return run

    rows["engine"] = engine_row("engine", Evaluator(copy.deepcopy(model), device=device))
    for dtype in args.dtype:
        ev = Evaluator(copy.deepcopy(model), device=device, dtype=dtype)
        rows[f"engine {dtype}"] = engine_row(f"engine {dtype}", ev)
    compile_s = None
    if args.compile:
        ev = Evaluator(copy.deepcopy(model), device=device, compile=True)
        rows["engine compiled"] = engine_row("engine compiled", ev)
        start = time.perf_counter()
        rows["engine compiled"]()  # compiles every batch shape once
        sync(device)
        compile_s = time.perf_counter() - start

    for fn in rows.values():  # warm-up
        fn()
    times = interleaved(rows, args.repeats, settle=lambda: sync(device))
    best = {name: median(t) for name, t in times.items()}  # median seconds per row
    rates = {n: gemm_peak(n, device, args.repeats) for n in gemm_sizes}
    gemm_n = max(rates, key=lambda n: rates[n])
    peak = rates[gemm_n]

    mean_tokens = split.n_tokens / split.n
    print(
        f"device {device}, {args.threads} threads; {split.n} MNLI pairs, mean {mean_tokens:.1f} "
        f"tokens, {len(split.batches)} batches, padding efficiency "
        f"{split.n_tokens / split.n_padded:.2f}; {args.layers} layers"
    )
    tried = ", ".join(f"{n}: {r / 1e9:.1f}" for n, r in rates.items())
    print(f"fp32 GEMM peak: {peak / 1e9:.1f} GFLOP/s (best of n×n matmuls, GFLOP/s by n: {tried})")
    print(f"useful FLOPs per point: {flops / 1e9:.2f} GFLOP (real tokens only)")
    if compile_s is not None:
        print(f"torch.compile warm-up (first point): {compile_s:.1f} s, not counted below")
    header = (
        f"{'row':<18}{'ex/s':>9}{'s/point':>9}{'useful GFLOP/s':>16}{'of peak':>9}"
        f"{'vs plain [range]':>20}{'Δloss vs fp32':>15}"
    )
    print(header)
    for name, seconds in best.items():
        rate = split.n / seconds
        delta = ""
        if name in losses and name != "engine":
            delta = f"{abs(losses[name] - losses['engine']):.2e}"
        print(
            f"{name:<18}{rate:>9.1f}{seconds:>9.3f}{flops / seconds / 1e9:>16.1f}"
            f"{flops / seconds / peak:>9.2f}"
            f"{format_ratio(ratio_summary(times, 'plain forward', name)):>20}{delta:>15}"
        )
    engine_ratio = ratio_summary(times, "plain forward", "engine")
    engine_peak = flops / best["engine"] / peak
    print(
        f"engine / plain forward (speed, median of {args.repeats} interleaved rounds "
        f"[range]): {format_ratio(engine_ratio)} (target ≥ 0.90); engine useful FLOP "
        f"rate: {engine_peak:.2f} of the GEMM peak (target ≥ 0.60)"
    )


if __name__ == "__main__":
    main()
