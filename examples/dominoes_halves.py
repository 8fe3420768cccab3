"""Is the cue half of a dominoes pair easier to learn than the core half?

Trains the demo's small CNN (widths 16-32-32) on each half *alone* — the 28×28 upscaled
scikit-learn digits (cue half) and the 28×28 MNIST digits (core half) — with the same
seeds, batch (64), learning rate (0.05, momentum 0.9) and number of steps, and prints
the test accuracy of each after every budget of steps (mean over seeds). Each half is
split into its dominoes train/test parts (the same partitions the dominoes splits use).

    PYTHONPATH=src python examples/dominoes_halves.py   # a few minutes on 2 idle cores
"""

from __future__ import annotations

import numpy as np
import torch

from modeconn.config.splits import DigitsSpec
from modeconn.data.digits import MNIST_MEAN, MNIST_STD, digits_part, partition
from modeconn.data.dominoes import EASY_TEST_PER_CLASS, load_easy_digits
from modeconn.models.cnn import CNNConfig, build_cnn

BUDGETS = (25, 50, 100, 200, 300)
SEEDS = (0, 1, 2)


def halves() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    easy, labels = load_easy_digits()
    tr, te = partition(labels, test_per_class=EASY_TEST_PER_CLASS, seed=0)
    x = ((easy - MNIST_MEAN) / MNIST_STD).unsqueeze(1)
    y = torch.from_numpy(labels)
    core_tr = digits_part(DigitsSpec(name="core", part="train"))
    core_te = digits_part(DigitsSpec(name="core", part="test"))
    return {
        "cue half (scikit-learn 8×8 digits)": (x[tr], y[tr], x[te], y[te]),
        "core half (MNIST)": (*core_tr, *core_te),
    }


def accuracies(data: tuple[torch.Tensor, ...], seed: int) -> list[float]:
    x_tr, y_tr, x_te, y_te = data
    model = build_cnn(CNNConfig(widths=(16, 32, 32)), seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    out = []
    for step in range(1, max(BUDGETS) + 1):
        model.train()
        batch = torch.from_numpy(rng.choice(len(y_tr), size=64, replace=False))
        loss = torch.nn.functional.cross_entropy(model(images=x_tr[batch]), y_tr[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in BUDGETS:
            model.eval()
            with torch.no_grad():
                out.append(float((model(images=x_te).argmax(1) == y_te).float().mean()))
    return out


def main() -> None:
    torch.set_num_threads(2)
    print(f"test accuracy after N steps of batch 64 (mean over seeds {list(SEEDS)}):")
    print(f"{'half':38s}" + "".join(f"{n:>8d}" for n in BUDGETS))
    for name, data in halves().items():
        acc = np.mean([accuracies(data, s) for s in SEEDS], axis=0)
        print(f"{name:38s}" + "".join(f"{a:8.3f}" for a in acc))


if __name__ == "__main__":
    main()
