"""Engine speed vs. a plain forward pass and vs. the paper's per-α recipe, side by side.

    .venv/bin/python benchmarks/engine.py [--examples 256] [--layers 6] [--repeats 2]

Three ways to evaluate the loss at one interpolated point θα on the same 512-style MNLI
sample, timed in one run on this machine:

* plain forward: the model's own forward on our pre-collated, length-bucketed batches
  (weights already in place) — the ceiling for the engine;
* engine: ``Evaluator.evaluate_lerp`` — writes θα in place, then the same forward;
* paper recipe: deep-copy the model, build an interpolated state dict, ``load_state_dict``,
  tokenize the sample, and run batches of 32 in sampled order with padding to the longest.

Prints examples/s for each and the ratios engine/plain and engine/recipe.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modeconn.evaluate import Evaluator
from modeconn.models import load_classifier, load_tokenizer, resolve_pretrained
from modeconn.study import find_data_root
from modeconn.tasks.text import SplitSpec, prepare_split, read_examples, sample_indices

LABELS = ["entailment", "neutral", "contradiction"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    path = resolve_pretrained("builtin:all-MiniLM-L6-v2")
    tok = load_tokenizer(path)
    data = find_data_root(None, Path.cwd())
    spec = SplitSpec(
        "mnli",
        data / "mnli/dev_matched.tsv",
        "premise",
        "gold_label",
        "hypothesis",
        rows="6000:",
        sample_size=args.examples,
    )
    split = prepare_split(spec, tok, LABELS)
    model = load_classifier(path, LABELS, num_layers=args.layers).eval()
    gen = torch.Generator().manual_seed(0)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {
        k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in a.items()
    }
    ev = Evaluator(copy.deepcopy(model))
    pa, pb = ev.as_point(a, name="a"), ev.as_point(b, name="b")

    def plain() -> None:
        with torch.inference_mode():
            for batch in split.batches:
                model(**batch)

    def engine() -> None:
        ev.evaluate_lerp(pa, pb, 0.5, split)

    examples = read_examples(spec)
    chosen = [examples[i] for i in sample_indices(len(examples), args.examples, 0)]

    def recipe() -> None:
        m = copy.deepcopy(model)
        state = {k: 0.5 * a[k] + 0.5 * b[k] if a[k].is_floating_point() else a[k] for k in a}
        m.load_state_dict(state)
        with torch.inference_mode():
            for i in range(0, len(chosen), 32):
                part = chosen[i : i + 32]
                enc = tok(
                    [e.text_a for e in part],
                    [e.text_b for e in part],
                    padding=True,
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                )
                target = torch.tensor([LABELS.index(e.label) for e in part])
                F.cross_entropy(m(**enc).logits, target)

    rates = {}
    for name, fn in (("plain forward", plain), ("engine", engine), ("paper recipe", recipe)):
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        rates[name] = args.examples / best
        print(f"{name:>14}: {rates[name]:7.1f} examples/s ({best:.2f} s per point)")
    print(f"padding efficiency of the engine's batches: {split.n_tokens / split.n_padded:.2f}")
    print(f"engine / plain forward: {rates['engine'] / rates['plain forward']:.2f}")
    print(f"engine / paper recipe:  {rates['engine'] / rates['paper recipe']:.2f}")


if __name__ == "__main__":
    main()
