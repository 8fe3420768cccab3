"""What the engine sees of a split: the :class:`Split` protocol, and the registry of kinds.

The evaluation engine (:mod:`modeconn.engine.evaluate`), the sweep and its backends, loss
planes (:mod:`modeconn.engine.planes`) and ε-sharpness (:mod:`modeconn.measures.sharpness`)
read a split only through this protocol, so a new task is a new data module, not a change
of the engine. A split is a fixed, seeded *sample* of a dataset, prepared once (sampled,
encoded, collated into batches) and reused at every parameter point: Juneja et al. (2023)
evaluate every pair and every α on the same sample.

Two kinds exist: ``text`` (:mod:`modeconn.data.text`: sentence pairs, tokenized and
length-bucketed) and whatever a data module registers (images: ``kind: digits``). A kind
is two lines: its study entry in :data:`modeconn.config.splits.SPLIT_KINDS` (torch-free)
and its builder in :data:`SPLIT_BUILDERS`, ``"module:function"`` taking the recipe and the
model's label order and returning a :class:`Split`.

This module imports no torch: a study can be validated, and a sweep planned for remote
workers, without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from modeconn.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np
    import torch


class SplitInfo(Protocol):
    """What the results store records about a split (``split.spec``), whatever its kind."""

    @property
    def name(self) -> str: ...

    @property
    def sample_size(self) -> int | None: ...  # declared size; None = the whole split

    @property
    def sample_seed(self) -> int: ...

    @property
    def metric(self) -> str: ...  # accuracy, f1 or mcc (:mod:`modeconn.measures.task_metrics`)

    @property
    def role(self) -> str: ...  # id, ood or train


@dataclass(frozen=True)
class SampleInfo:
    """A plain :class:`SplitInfo` (what the store records), for kinds that need no more."""

    name: str
    sample_size: int | None = None
    sample_seed: int = 0
    metric: str = "accuracy"
    role: str = "id"


@dataclass(frozen=True)
class ExampleTable:
    """Every example of a split as rows of one table, in batch order (ε-sharpness draws
    random mini-batches from it).

    ``inputs`` hold one tensor per model input with the examples along dim 0; inputs of
    variable length (tokens) are padded along dim 1, and ``lengths`` gives each row's real
    length so a mini-batch can be trimmed to its longest row. ``lengths`` is None for
    fixed-size inputs (images).
    """

    inputs: dict[str, torch.Tensor]
    lengths: torch.Tensor | None


@runtime_checkable
class Split(Protocol):
    """A prepared split, ready for any parameter point; see the module docstring.

    * ``key`` — what its rows are stored under: ``name#fingerprint`` of the sampled,
      encoded data (a changed sample never reuses a stale row); the engine appends the
      BatchNorm policy for models with BatchNorm (:mod:`modeconn.engine.spec`).
    * ``batches`` — model inputs, each a dict of tensors fed as ``model(**batch)``;
      ``labels`` the class index of every example in batch order, ``order`` the sample
      position of each (so per-example losses come back in sample order).
    * ``cost`` — the work of one forward pass over the split in ``cost_unit`` (padded
      tokens, images), for progress bars and ETAs.
    * ``map_logits`` — (batch, model outputs) → (batch, split classes); ``score`` the
      split's metric(s) of class predictions given in batch order.
    """

    @property
    def spec(self) -> SplitInfo: ...

    @property
    def name(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def n(self) -> int: ...

    @property
    def batches(self) -> list[dict[str, torch.Tensor]]: ...

    @property
    def labels(self) -> torch.Tensor: ...  # (n,) class index, batch order

    @property
    def order(self) -> np.ndarray: ...  # (n,) sample position, batch order

    @property
    def cost(self) -> int: ...

    @property
    def cost_unit(self) -> str: ...

    def batch_labels(self) -> list[torch.Tensor]: ...

    def to(self, device: torch.device | str) -> Split: ...

    def map_logits(self, logits: torch.Tensor) -> torch.Tensor: ...

    def score(self, predictions: np.ndarray) -> dict[str, float]: ...

    def example_table(self) -> ExampleTable: ...


class SplitRecipe(Protocol):
    """A frozen, picklable recipe the engine prepares a split from (any kind)."""

    kind: str

    @property
    def name(self) -> str: ...


SplitBuilder = Callable[[Any, Sequence[str]], Split]

# kind → "module:function" building a Split from (recipe, model label order)
SPLIT_BUILDERS: dict[str, str] = {
    "text": "modeconn.data.text:build_split",
    "digits": "modeconn.data.digits:build_split",
}


def register_split_kind(kind: str, entry: type, builder: str) -> None:
    """Add a split kind at run time: its study entry model (a subclass of
    :class:`~modeconn.config.splits.SplitEntry` with ``kind: Literal[kind]``) and its
    builder (``"module:function"``). A kind that ships with modeconn is instead one line in
    each of :data:`~modeconn.config.splits.SPLIT_KINDS` and :data:`SPLIT_BUILDERS`."""
    from modeconn.config.splits import SPLIT_KINDS
    from modeconn.config.study import refresh_split_kinds

    SPLIT_KINDS[kind] = entry
    SPLIT_BUILDERS[kind] = builder
    refresh_split_kinds()


def split_builder(kind: str) -> SplitBuilder:
    """The function that prepares splits of `kind` (imported on first use)."""
    target = SPLIT_BUILDERS.get(kind)
    if target is None:
        raise ConfigError(
            f"split kind {kind!r} has no builder; known kinds: {', '.join(sorted(SPLIT_BUILDERS))} "
            "(a data module registers its kind in modeconn.data.base.SPLIT_BUILDERS)"
        )
    module, _, attr = target.partition(":")
    fn: SplitBuilder = getattr(importlib.import_module(module), attr)
    return fn


def build_split(recipe: SplitRecipe, label_order: Sequence[str]) -> Split:
    """Prepare the split `recipe` describes, for a model whose outputs are `label_order`."""
    return split_builder(recipe.kind)(recipe, label_order)


def batch_sizes(split: Split) -> list[int]:
    """Examples per batch (the first input's leading dimension)."""
    return [int(next(iter(b.values())).shape[0]) for b in split.batches]


class KeyedSplit:
    """A prepared split whose rows are keyed for the engine's BatchNorm policy.

    Everything but :attr:`key` is the wrapped split's; ``key`` appends ``suffix``
    (``|bn=…``) to the data key. Only models with BatchNorm wrap their splits.
    """

    def __init__(self, split: Split, suffix: str) -> None:
        self.split, self.suffix = split, suffix

    @property
    def key(self) -> str:
        return f"{self.split.key}{self.suffix}"

    @property
    def data_key(self) -> str:
        return self.split.key

    @property
    def spec(self) -> SplitInfo:
        return self.split.spec

    @property
    def name(self) -> str:
        return self.split.name

    @property
    def n(self) -> int:
        return self.split.n

    @property
    def batches(self) -> list[dict[str, torch.Tensor]]:
        return self.split.batches

    @property
    def labels(self) -> torch.Tensor:
        return self.split.labels

    @property
    def order(self) -> np.ndarray:
        return self.split.order

    @property
    def cost(self) -> int:
        return self.split.cost

    @property
    def cost_unit(self) -> str:
        return self.split.cost_unit

    def batch_labels(self) -> list[torch.Tensor]:
        return self.split.batch_labels()

    def to(self, device: torch.device | str) -> KeyedSplit:
        return KeyedSplit(self.split.to(device), self.suffix)

    def map_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self.split.map_logits(logits)

    def score(self, predictions: np.ndarray) -> dict[str, float]:
        return self.split.score(predictions)

    def example_table(self) -> ExampleTable:
        return self.split.example_table()

    def rows(self, lo: int, hi: int) -> KeyedSplit:
        """The wrapped split's block [lo, hi) under the same key suffix."""
        return KeyedSplit(sample_block(self.split, lo, hi), self.suffix)

    def __getattr__(self, name: str) -> Any:  # kind-specific fields (n_tokens, classes…)
        if name == "split":
            raise AttributeError(name)
        return getattr(self.split, name)


def sample_block(split: Split, lo: int, hi: int) -> Split:
    """The examples of `split` at sample positions [lo, hi) as a split (its ``rows``;
    :mod:`modeconn.data.rows` says how a kind builds one)."""
    rows = getattr(split, "rows", None)
    if rows is None:
        raise DataError(
            f"split '{split.name}' ({type(split).__name__}) cannot be evaluated in blocks: "
            "its class has no rows(lo, hi) method; remove paths.sequential or give the "
            "split kind one (modeconn.data.rows.select_rows does the work)"
        )
    block: Split = rows(lo, hi)
    return block
