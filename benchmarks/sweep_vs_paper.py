"""A small sweep with modeconn against the recipe of the paper's public code, side by side.

    .venv/bin/python benchmarks/sweep_vs_paper.py                     # 3 members, 512 pairs
    .venv/bin/python benchmarks/sweep_vs_paper.py --examples 64 --layers 2 --points 5  # smoke
    .venv/bin/python benchmarks/sweep_vs_paper.py --members ~/.cache/modeconn/demo-mnli/members

The work: every pair of ``--n-members`` members (3 → 3 pairs) on one split of
``--examples`` MNLI pairs (dev_matched rows 6000:, seed 0), at ``--points`` α
(0, 0.1, …, 1 for 11). Members are seeded perturbations of all-MiniLM-L6-v2 (``--layers``
of its 6 layers, 3-way head), written as safetensors files, unless ``--members DIR``
names real ones (the first ``--n-members`` of the folder, sorted by id; ``--model`` must
then be their base model).

modeconn
    ``StudyRunner.sweep()`` on a study over those files, into a fresh results store:
    tokenize and collate the sample once into length-sorted batches under a token budget,
    evaluate each member once (the α = 0 and α = 1 rows of every pair are copies), and
    write θα into one resident model per interior α.
paper recipe
    What the public code of Juneja et al. (2023) does per pair (``interpolate_1d.py``):
    load both members' state dicts from disk, build a model, and per α build an
    interpolated state dict, ``load_state_dict`` it, and evaluate the sample in its
    sampled order, tokenizing each batch as it goes with padding to the batch's longest
    example. Every α of every pair is evaluated, endpoints included. The public code's
    default batch is the whole 512-example sample (``--batch_size 512``); this benchmark
    uses ``--paper-batch 32`` by default, which is *faster* on a CPU (less padding per
    batch), so the ratio printed is conservative; pass ``--paper-batch 512`` for the
    public default.

The two are timed interleaved (modeconn, paper, modeconn, … for ``--rounds`` rounds;
modeconn into an emptied store each time). Printed: both wall times, medians over rounds
(everything from reading the tokenizer to the last loss), the per-round ratio paper /
modeconn as median [min–max] (target ≥ 3), the number of forward passes each ran, and the
largest |loss difference| between the two over every (pair, α) — they evaluate the same
points, so it must be rounding-sized.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _common import (
    BUILTIN,
    LABELS,
    format_ratio,
    interleaved,
    make_members,
    median,
    mnli_split,
    ratio_summary,
    study_dict,
    write_study,
)

from modeconn.config.study import load_study
from modeconn.data.text import Example, read_examples, sample_indices
from modeconn.engine.paths import alpha_grid
from modeconn.models.hf import classifier_skeleton, load_tokenizer, resolve_pretrained
from modeconn.pipeline import StudyRunner
from modeconn.population.members import Population, load_state_dict
from modeconn.store import Store


def paper_recipe(
    model: str,
    layers: int | None,
    members: dict[str, Path],
    sample: list[Example],
    alphas: tuple[float, ...],
    batch_size: int,
) -> tuple[dict[tuple[str, str, float], float], int]:
    """Mean loss per (member A, member B, α), the way the paper's code computes it."""
    path = resolve_pretrained(model)
    tok = load_tokenizer(path)
    target_all = torch.tensor([LABELS.index(e.label) for e in sample])
    out: dict[tuple[str, str, float], float] = {}
    passes = 0
    for id_a, id_b in itertools.combinations(sorted(members), 2):
        wa = load_state_dict(members[id_a])
        wb = load_state_dict(members[id_b])
        net = classifier_skeleton(path, LABELS, num_layers=layers)
        for alpha in alphas:
            state = {
                k: alpha * wa[k] + (1 - alpha) * wb[k] if wa[k].is_floating_point() else wa[k]
                for k in wa
            }
            net.load_state_dict(state, strict=False)
            net.eval()
            total = 0.0
            with torch.no_grad():
                for start in range(0, len(sample), batch_size):
                    part = sample[start : start + batch_size]
                    enc = tok(
                        [e.text_a for e in part],
                        [e.text_b for e in part],
                        padding=True,
                        truncation=True,
                        max_length=128,
                        return_tensors="pt",
                    )
                    logits = net(**enc).logits
                    target = target_all[start : start + batch_size]
                    total += float(F.cross_entropy(logits.float(), target, reduction="sum"))
            out[(id_a, id_b, round(alpha, 6))] = total / len(sample)
            passes += 1
    return out, passes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=512, help="MNLI pairs in the sample")
    ap.add_argument("--points", type=int, default=11, help="α grid size (11: 0, 0.1, …, 1)")
    ap.add_argument("--n-members", type=int, default=3)
    ap.add_argument("--layers", type=int, default=None, help="encoder layers (default: all)")
    ap.add_argument("--members", type=Path, help="a folder of real members (default: made)")
    ap.add_argument("--model", default=BUILTIN, help="base model of the members")
    ap.add_argument("--paper-batch", type=int, default=32, help="paper recipe's batch size")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--workdir", type=Path, help="keep members and stores here")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        if args.members:
            pop = Population.from_dir(args.members)
            chosen = [pop[i].source for i in pop.ids[: args.n_members]]
        else:
            chosen = make_members(args.model, work / "members", args.n_members, layers=args.layers)
        members = {Path(p).stem: Path(p) for p in chosen}
        out = work / "sweep"
        study = study_dict(
            args.model,
            work / "members",
            out,
            splits={"mnli": mnli_split(args.examples)},
            points=args.points,
            layers=args.layers,
            threads=args.threads,
        )
        study["population"] = {"members": [str(p) for p in chosen]}
        path = write_study(work / "study.yaml", study)

        spec = load_study(path).split_spec("mnli")
        examples = read_examples(spec)
        sample = [examples[i] for i in sample_indices(len(examples), spec.sample_size, 0)]
        # warm-up, untimed (reading the examples above is part of it): the first use of
        # transformers, the tokenizer and pandas imports modules and fills caches;
        # whichever recipe ran first would pay for both
        load_tokenizer(resolve_pretrained(args.model))
        classifier_skeleton(resolve_pretrained(args.model), LABELS, num_layers=args.layers)

        got: dict[str, Any] = {}

        def fresh(row: str) -> None:  # untimed: modeconn sweeps into an emptied store
            if row == "modeconn":
                shutil.rmtree(out, ignore_errors=True)

        def ours_run() -> None:
            runner = StudyRunner(load_study(path), progress=False)
            stats = runner.sweep()
            with Store(runner.study.store_path(), create=False) as store:
                rows = store.path_points()
            got["ours"] = {
                (str(a), str(b), round(float(alpha), 6)): float(loss)
                for a, b, alpha, loss in zip(
                    rows["member_a"], rows["member_b"], rows["alpha"], rows["loss"], strict=True
                )
            }
            got["our_passes"] = stats.member_evaluations + stats.path_evaluations

        def paper_run() -> None:
            got["theirs"], got["their_passes"] = paper_recipe(
                args.model, args.layers, members, sample, alpha_grid(args.points), args.paper_batch
            )

        times = interleaved(
            {"modeconn": ours_run, "paper recipe": paper_run}, args.rounds, before=fresh
        )
        ours, theirs = got["ours"], got["theirs"]

    assert set(ours) == set(theirs), "both evaluate every (pair, α)"
    worst = max(abs(ours[k] - theirs[k]) for k in ours)
    n_pairs = len(members) * (len(members) - 1) // 2
    print(
        f"{len(members)} members ({n_pairs} pairs), {len(sample)} MNLI pairs, {args.points} α, "
        f"{args.threads} threads, layers: {args.layers or 'all'}"
    )
    print(f"{args.rounds} interleaved rounds (modeconn, paper recipe, …); medians")
    print(
        f"modeconn:     {median(times['modeconn']):8.1f} s  "
        f"({got['our_passes']} forward passes over the sample)"
    )
    print(
        f"paper recipe: {median(times['paper recipe']):8.1f} s  ({got['their_passes']} forward "
        f"passes, batches of {args.paper_batch} in sampled order)"
    )
    ratio = ratio_summary(times, "paper recipe", "modeconn")
    print(f"paper / modeconn: {format_ratio(ratio)} (target ≥ 3)")
    print(f"largest |loss difference| over every (pair, α): {worst:.2e}")
    if not np.isfinite(worst) or worst > 1e-3:
        raise SystemExit("the two recipes disagree on the losses: this is a bug, not a timing")


if __name__ == "__main__":
    main()
