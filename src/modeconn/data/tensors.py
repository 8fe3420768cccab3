"""Splits of fixed-size inputs held as tensors (images, feature vectors).

:class:`TensorSplit` implements :class:`~modeconn.data.base.Split` for examples that need
no padding: the whole sample is one tensor of shape ``(n, …)`` under one input name
(``pixel_values`` for an image model, say), cut into batches of ``batch_size`` in sample
order (so ``order`` is the identity). A data module (images: :mod:`modeconn.data.vision`)
reads and samples its examples and returns one through :func:`tensor_split`; the engine
then treats it like a text split. The cost unit is examples.

>>> import torch
>>> from modeconn.data.base import SampleInfo
>>> info = SampleInfo(name="toy", sample_size=None)
>>> s = tensor_split(info, {"x": torch.zeros(5, 2)}, torch.tensor([0, 1, 0, 1, 1]),
...                  classes=("a", "b"), batch_size=2)
>>> (s.n, len(s.batches), s.cost, s.key.startswith("toy#"))
(5, 3, 5, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from modeconn.data.base import ExampleTable, SampleInfo, batch_sizes
from modeconn.errors import DataError
from modeconn.measures.task_metrics import METRIC_FUNCS


@dataclass
class TensorSplit:
    """A prepared split of fixed-size inputs; see the module docstring.

    ``groups`` maps each split class to the model outputs whose max is its logit (as for
    text splits); None means the split's classes are the model's outputs in order.
    """

    spec: SampleInfo
    classes: tuple[str, ...]
    batches: list[dict[str, torch.Tensor]]
    labels: torch.Tensor  # (n,) class index, batch order (= sample order)
    order: np.ndarray  # (n,) identity
    fingerprint: str
    groups: tuple[tuple[int, ...], ...] | None = None

    cost_unit = "ex"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    @property
    def key(self) -> str:
        return f"{self.spec.name}#{self.fingerprint}"

    @property
    def cost(self) -> int:
        return self.n

    def batch_labels(self) -> list[torch.Tensor]:
        return list(torch.split(self.labels, batch_sizes(self)))

    def to(self, device: torch.device | str) -> TensorSplit:
        moved = [{k: v.to(device) for k, v in b.items()} for b in self.batches]
        return dataclasses.replace(self, batches=moved, labels=self.labels.to(device))

    def map_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.groups is None:
            return logits
        cols = [logits[:, list(g)].amax(dim=1) for g in self.groups]
        return torch.stack(cols, dim=1)

    def score(self, predictions: np.ndarray) -> dict[str, float]:
        target = self.labels.cpu().numpy()
        out = {"accuracy": float((predictions == target).mean())}
        name = self.spec.metric
        if name == "f1":
            pos = len(self.classes) - 1
            out["f1"] = float(
                METRIC_FUNCS["f1"]((predictions == pos).astype(int), (target == pos).astype(int))
            )
        elif name != "accuracy":
            out[name] = float(METRIC_FUNCS[name](predictions, target))
        return out

    def rows(self, lo: int, hi: int) -> TensorSplit:
        """The examples at sample positions [lo, hi) (a sequential block;
        :mod:`modeconn.data.rows`); scores and per-example losses are the block's own."""
        from modeconn.data.rows import select_rows

        batches, labels, order = select_rows(self, lo, hi)
        return dataclasses.replace(self, batches=batches, labels=labels, order=order)

    def example_table(self) -> ExampleTable:
        keys = self.batches[0].keys() if self.batches else ()
        inputs = {k: torch.cat([b[k].cpu() for b in self.batches]) for k in keys}
        return ExampleTable(inputs, None)


def tensor_split(
    spec: SampleInfo,
    inputs: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    classes: Sequence[str],
    batch_size: int = 256,
    groups: Sequence[Sequence[int]] | None = None,
) -> TensorSplit:
    """A :class:`TensorSplit` of the (already sampled) examples in `inputs` and `labels`.

    Every input has the examples along dim 0; the fingerprint covers the inputs' bytes,
    the labels, the classes, the metric and the batch size, so another sample,
    resolution, labelling or batching gets another key.
    """
    n = int(labels.numel())
    if not inputs or any(int(v.shape[0]) != n for v in inputs.values()):
        raise DataError(
            f"split '{spec.name}': every input needs {n} rows (one per label); got "
            f"{ {k: tuple(v.shape) for k, v in inputs.items()} }"
        )
    if n == 0:
        raise DataError(f"split '{spec.name}': no examples; check the split's filters")
    if batch_size < 1:
        raise DataError(f"split '{spec.name}': batch_size must be >= 1; got {batch_size}")
    labels = labels.to(torch.long).contiguous()
    digest = hashlib.sha256()
    for k in sorted(inputs):
        digest.update(k.encode())
        digest.update(inputs[k].detach().cpu().contiguous().numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    group_t = None if groups is None else tuple(tuple(int(i) for i in g) for g in groups)
    # the batching too: BatchNorm statistics re-estimated over a split depend on it
    digest.update(repr((tuple(classes), group_t, spec.metric, batch_size)).encode())
    batches = [
        {k: v[i : i + batch_size].contiguous() for k, v in inputs.items()}
        for i in range(0, n, batch_size)
    ]
    return TensorSplit(
        spec=spec,
        classes=tuple(classes),
        batches=batches,
        labels=labels,
        order=np.arange(n),
        fingerprint=digest.hexdigest()[:12],
        groups=group_t,
    )
