"""A block of a prepared split: the examples at sample positions [lo, hi), batched anew.

Sequential samples (:mod:`modeconn.stats.sequential`, ``paths.sequential``) evaluate a
path on *blocks* of the fixed sample in sample order — block b is the examples at sample
positions [bB, (b+1)B). The sample is a seeded random draw, so each block, and every
prefix of blocks, is itself a random sub-sample of it. A split's batches, though, are in
its own order (text: sorted by length under a token budget), so a block's examples are
scattered over many batches; :func:`select_rows` gathers them into batches of their own:

* the rows are taken in the parent's batch order (length-sorted for text, so batches
  stay tight), cut greedily into batches of at most the parent's largest batch size and,
  for padded inputs, at most its largest batch's padded cells (tokens);
* padded inputs (``ExampleTable.lengths`` set) are trimmed to each new batch's longest
  row; fixed-size inputs (images) are not padded at all.

``order`` of the result gives each row's position *in the block* (sample position − lo),
so the engine's per-example losses come back in block order, and the block's
``score`` scores its own labels. A split kind supports blocks by a ``rows(lo, hi)``
method (:class:`~modeconn.data.text.PreparedSplit`, :class:`~modeconn.data.tensors.TensorSplit`
and :class:`~modeconn.data.base.KeyedSplit` have one);
:func:`~modeconn.data.base.sample_block` asks for it.

Padding-free models give the same per-example losses on a block as on the whole split up
to float reordering (batch composition changes the order of a GEMM's sums).
"""

from __future__ import annotations

import numpy as np
import torch

from modeconn.data.base import Split, batch_sizes
from modeconn.errors import DataError

__all__ = ["select_rows"]


def select_rows(
    split: Split, lo: int, hi: int
) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor, np.ndarray]:
    """(batches, labels, order) of the examples of `split` at sample positions [lo, hi).

    ``labels`` and ``order`` are in the new batches' order; ``order`` counts from ``lo``.

    >>> from modeconn.data.base import SampleInfo
    >>> from modeconn.data.tensors import tensor_split
    >>> s = tensor_split(SampleInfo("toy"), {"x": torch.arange(10.0)[:, None]},
    ...                  torch.arange(10) % 2, classes=("a", "b"), batch_size=4)
    >>> batches, labels, order = select_rows(s, 3, 8)
    >>> [b["x"].flatten().tolist() for b in batches], order.tolist()
    ([[3.0, 4.0, 5.0, 6.0], [7.0]], [0, 1, 2, 3, 4])
    """
    if not 0 <= lo < hi <= split.n:
        raise DataError(
            f"split '{split.name}': a block needs 0 ≤ lo < hi ≤ {split.n}; got [{lo}, {hi})"
        )
    order = np.asarray(split.order)
    pick = np.flatnonzero((order >= lo) & (order < hi))  # positions in batch order
    table = split.example_table()
    max_rows = max(batch_sizes(split))
    lengths = None if table.lengths is None else table.lengths.cpu().numpy()
    max_cells = 0
    if lengths is not None:  # the parent's largest padded batch, in cells (tokens)
        first = next(iter(table.inputs))
        max_cells = max(int(b[first].numel()) for b in split.batches)
    chunks: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for p in pick.tolist():
        width = 0 if lengths is None else int(lengths[p])
        if current and (
            len(current) >= max_rows
            or (lengths is not None and (len(current) + 1) * max(longest, width) > max_cells)
        ):
            chunks.append(current)
            current, longest = [], 0
        current.append(p)
        longest = max(longest, width)
    if current:
        chunks.append(current)
    batches = []
    for chunk in chunks:
        idx = torch.as_tensor(chunk, dtype=torch.long)
        batch = {k: v[idx] for k, v in table.inputs.items()}
        if lengths is not None:
            w = int(lengths[chunk].max())
            batch = {k: v[:, :w].contiguous() if v.ndim >= 2 else v for k, v in batch.items()}
        batches.append(batch)
    labels = split.labels.cpu()[torch.as_tensor(pick, dtype=torch.long)]
    return batches, labels, order[pick] - lo
