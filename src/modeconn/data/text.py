"""Text classification splits: read, sample once, tokenize once, collate once.

A *split* is a named evaluation (or training) set read from a TSV/CSV file with declared
columns. Every pair of models and every α is evaluated on the same fixed, seeded sample
(Juneja et al. 2023 use one random sample of 512 examples shared by all pairs), so the
sample is drawn once from ``sample_seed`` and tokenized and collated once into
length-sorted batches under a token budget; padding, not arithmetic, dominates the cost
of a forward pass on short NLI pairs.

A split also says how the model's logits map onto its classes. An MNLI model has three
outputs; HANS has two classes, and McCoy et al. (2019) score an MNLI model on it by
keeping the entailment logit and taking max(neutral, contradiction) as the
non-entailment logit. ``classes`` expresses that as a grouping of model labels::

    classes = {"entailment": ["entailment"], "non-entailment": ["neutral", "contradiction"]}
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from modeconn.config.splits import SplitSpec, TextRecipe
from modeconn.data.base import ExampleTable, batch_sizes
from modeconn.errors import ConfigError, DataError, path_kind
from modeconn.measures.task_metrics import METRIC_FUNCS


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: str


@dataclass
class PreparedSplit:
    """A split sampled, tokenized and collated once, ready for any parameter point.

    ``batches`` hold model inputs (dicts of tensors) in length-sorted order; ``labels``
    holds the class index of every example in that same order; ``order`` maps each
    position back to the example's index in the sample, so per-example losses can be
    returned in sample order. ``groups`` maps each split class to model-output indices.
    """

    spec: SplitSpec
    classes: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    batches: list[dict[str, torch.Tensor]]
    labels: torch.Tensor  # (n,) class index per example, batch order
    order: np.ndarray  # (n,) sample position of each example, batch order
    n_tokens: int  # real (unpadded) tokens
    n_padded: int  # tokens including padding
    fingerprint: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    @property
    def key(self) -> str:
        """The split's key in the store: name plus a fingerprint of the sampled data."""
        return f"{self.spec.name}#{self.fingerprint}"

    @property
    def cost(self) -> int:
        """Padded tokens of one pass: padding, not arithmetic, sets the cost of a batch."""
        return self.n_padded

    cost_unit = "tok"

    def batch_labels(self) -> list[torch.Tensor]:
        return list(torch.split(self.labels, batch_sizes(self)))

    def to(self, device: torch.device | str) -> PreparedSplit:
        moved = [{k: v.to(device) for k, v in b.items()} for b in self.batches]
        return dataclasses.replace(self, batches=moved, labels=self.labels.to(device))

    def rows(self, lo: int, hi: int) -> PreparedSplit:
        """The examples at sample positions [lo, hi), batched anew (a sequential block;
        :mod:`modeconn.data.rows`); scores and per-example losses are the block's own."""
        from modeconn.data.rows import select_rows

        batches, labels, order = select_rows(self, lo, hi)
        mask = [b["attention_mask"] for b in batches]
        return dataclasses.replace(
            self,
            batches=batches,
            labels=labels,
            order=order,
            n_tokens=sum(int(m.sum()) for m in mask),
            n_padded=sum(int(m.numel()) for m in mask),
        )

    def example_table(self) -> ExampleTable:
        """Every example as one row of a padded table (batch order), with its real length.

        The pad token is whatever the split used where the attention mask is 0.
        """
        if not self.batches or "attention_mask" not in self.batches[0]:
            raise DataError(
                f"split '{self.name}': its rows cannot be re-collated without an "
                "`attention_mask`; prepare it with modeconn.data.text.prepare_split"
            )
        masks = [b["attention_mask"].cpu() for b in self.batches]
        width = max(int(m.shape[1]) for m in masks)
        pad_id = 0
        for b, m in zip(self.batches, masks, strict=True):
            if bool((m == 0).any()):
                pad_id = int(b["input_ids"].cpu()[m == 0][0])
                break
        table = {}
        for key in self.batches[0]:
            fill = pad_id if key == "input_ids" else 0
            parts = [b[key].cpu() for b in self.batches]
            table[key] = torch.cat([F.pad(p, (0, width - p.shape[1]), value=fill) for p in parts])
        return ExampleTable(table, table["attention_mask"].sum(dim=1))

    def map_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(batch, model outputs) → (batch, split classes): max over each class's group."""
        if all(len(g) == 1 for g in self.groups):
            idx = [g[0] for g in self.groups]
            if idx == list(range(logits.shape[-1])):
                return logits
            return logits[:, idx]
        cols = [logits[:, list(g)].amax(dim=1) for g in self.groups]
        return torch.stack(cols, dim=1)

    def score(self, predictions: np.ndarray) -> dict[str, float]:
        """Task metric(s) of class predictions given in batch order."""
        target = self.labels.cpu().numpy()
        name = self.spec.metric
        if name == "f1":
            positive = self.spec.positive_class or self.classes[-1]
            pos = self.classes.index(positive)
            value = METRIC_FUNCS["f1"](
                (predictions == pos).astype(int), (target == pos).astype(int)
            )
            return {"accuracy": float((predictions == target).mean()), "f1": float(value)}
        out = {"accuracy": float((predictions == target).mean())}
        if name != "accuracy":
            out[name] = float(METRIC_FUNCS[name](predictions, target))
        return out


def read_examples(spec: SplitSpec) -> list[Example]:
    """Read, filter and slice a split's file, then apply its token cue (``spec.cue``,
    :mod:`modeconn.data.text_cues`); every problem names the file and column."""
    path = spec.path
    kind = path_kind(path)
    if kind != "a file":
        what = "does not exist" if kind is None else f"is {kind}, not a file"
        raise DataError(
            f"split '{spec.name}': data file {path} {what}; "
            "fix the split's `path` (relative paths resolve against `data_root`)"
        )
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL,
            header=None if spec.header_names else "infer",
            names=list(spec.header_names) if spec.header_names else None,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            on_bad_lines="error",
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"split '{spec.name}': data file {path} is empty; it needs a header row and at "
            "least one example (or point the split's `path` at another file)"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())  # pandas ends its message with a newline
        raise DataError(
            f"split '{spec.name}': cannot parse {path}: {reason}; fix the file, or the split's "
            "`header_names` if it has no header row"
        ) from exc
    _check_fields(spec, sep)  # pandas pads a short row with empty fields: refuse it
    needed = [c for c in (spec.text_a, spec.text_b, spec.label, *spec.where) if c]
    for column in needed:
        if column not in frame.columns:
            known = ", ".join(map(str, frame.columns[:12]))
            raise DataError(
                f"split '{spec.name}': column '{column}' not in {path} (columns: {known}); "
                "fix the split's column names"
            )
    for column, allowed in spec.where.items():
        frame = frame[frame[column].isin(list(allowed))]
    if spec.rows:
        frame = frame.iloc[_parse_slice(spec.rows, spec.name)]
    if len(frame) == 0:
        raise DataError(
            f"split '{spec.name}': no rows left in {path} after `where`/`rows`; "
            "check the filter values"
        )
    labels = frame[spec.label].map(lambda v: spec.label_values.get(v, v))
    texts_b = frame[spec.text_b] if spec.text_b else [None] * len(frame)
    examples = [
        Example(a, b, lab) for a, b, lab in zip(frame[spec.text_a], texts_b, labels, strict=True)
    ]
    if spec.cue == "none":
        return examples
    from modeconn.data.text_cues import apply_cue  # the token cue (Lubana et al. 2023)

    return apply_cue(examples, spec)


def _check_fields(spec: SplitSpec, sep: str) -> None:
    """Every row of the split's file must have as many fields as its header.

    Line numbers count every physical line from 1 (the header row is line 1); blank lines,
    which pandas skips, are skipped here too.
    """
    path = spec.path
    with path.open(encoding="utf-8-sig", newline="") as f:
        if sep == "\t":  # QUOTE_NONE: a field is exactly what lies between tabs
            stripped = (line.rstrip("\r\n") for line in f)
            rows: Iterator[tuple[int, list[str]]] = (
                (i, line.split("\t")) for i, line in enumerate(stripped, 1) if line
            )
        else:
            reader = csv.reader(f)
            rows = ((reader.line_num, row) for row in reader if row)
        expected = len(spec.header_names) if spec.header_names else None
        source = "the split's `header_names` give" if expected else "its header has"
        for line, fields in rows:
            if expected is None:
                expected = len(fields)  # the header row
                continue
            if len(fields) != expected:
                raise DataError(
                    f"split '{spec.name}': line {line} of {path} has {len(fields)} fields but "
                    f"{source} {expected}; fix that row (a missing or extra "
                    f"{'tab' if sep == chr(9) else 'comma'})"
                )


def _parse_slice(text: str, split: str) -> slice:
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else None
        stop = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise ConfigError(
            f"split '{split}': rows must look like 'start:stop' (e.g. '0:6000' or '6000:'); "
            f"got {text!r}"
        ) from None
    return slice(start, stop)


def sample_indices(n_available: int, size: int | None, seed: int) -> np.ndarray:
    """The fixed evaluation sample: `size` distinct indices drawn with `seed`, sorted."""
    if size is None or size >= n_available:
        return np.arange(n_available)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_available, size=size, replace=False))


def class_groups(
    spec: SplitSpec, model_labels: Sequence[str]
) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """Split classes and, for each, the model outputs whose max is its logit."""
    mapping = spec.classes or {name: (name,) for name in model_labels}
    groups = []
    for cls, members in mapping.items():
        idx = []
        for label in members:
            if label not in model_labels:
                raise ConfigError(
                    f"split '{spec.name}': class '{cls}' uses model label '{label}', but the "
                    f"model's labels are {list(model_labels)}; fix `classes` or the "
                    "model's `label_order`"
                )
            idx.append(list(model_labels).index(label))
        groups.append(tuple(idx))
    return tuple(mapping), tuple(groups)


def label_indices(examples: Sequence[Example], classes: Sequence[str], split: str) -> list[int]:
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for i, ex in enumerate(examples):
        if ex.label not in index:
            raise DataError(
                f"split '{split}': example {i} has label {ex.label!r}, not one of "
                f"{list(classes)}; map it with `label_values` or filter it with `where`"
            )
        out.append(index[ex.label])
    return out


def tokenize(
    tokenizer: Any, examples: Sequence[Example], *, max_length: int
) -> list[list[int]] | dict[str, list[list[int]]]:
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length, padding=False)
    return {k: list(v) for k, v in enc.items()}


def bucket_batches(lengths: Sequence[int], *, max_tokens: int, max_batch: int) -> list[list[int]]:
    """Group indices sorted by length so each padded batch holds ≤ `max_tokens` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # sorted ascending: the newest is the longest
        if (current and (len(current) + 1) * longest > max_tokens) or len(current) >= max_batch:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def collate(
    encoded: Mapping[str, Sequence[Sequence[int]]], idx: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    width = max(len(encoded["input_ids"][i]) for i in idx)
    out: dict[str, torch.Tensor] = {}
    for key, rows in encoded.items():
        pad = pad_id if key == "input_ids" else 0
        tensor = torch.full((len(idx), width), pad, dtype=torch.long)
        for r, i in enumerate(idx):
            tensor[r, : len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
        out[key] = tensor
    return out


def prepare_split(
    spec: SplitSpec,
    tokenizer: Any,
    model_labels: Sequence[str],
    *,
    max_length: int = 128,
    max_tokens: int = 1024,
    max_batch: int = 128,
) -> PreparedSplit:
    """Sample, tokenize and collate a split once; every evaluation reuses the result."""
    examples = read_examples(spec)
    chosen = sample_indices(len(examples), spec.sample_size, spec.sample_seed)
    sample = [examples[i] for i in chosen]
    classes, groups = class_groups(spec, model_labels)
    labels = label_indices(sample, classes, spec.name)
    encoded = tokenize(tokenizer, sample, max_length=max_length)
    assert isinstance(encoded, dict)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    batch_idx = bucket_batches(lengths, max_tokens=max_tokens, max_batch=max_batch)
    pad_id = getattr(tokenizer, "pad_token_id", 0) or 0
    batches = [collate(encoded, idx, pad_id) for idx in batch_idx]
    order = np.concatenate([np.asarray(b, dtype=np.int64) for b in batch_idx])
    n_padded = sum(int(b["input_ids"].numel()) for b in batches)
    digest = hashlib.sha256()
    for b in batches:
        digest.update(b["input_ids"].numpy().tobytes())
    digest.update(np.asarray(labels, dtype=np.int64)[order].tobytes())
    digest.update(repr((classes, groups, spec.metric, spec.positive_class)).encode())
    cue = spec.cue_identity()
    if cue is not None:  # the cue settings are part of the split's identity
        digest.update(repr(cue).encode())
    return PreparedSplit(
        spec=spec,
        classes=classes,
        groups=groups,
        batches=batches,
        labels=torch.tensor(np.asarray(labels)[order], dtype=torch.long),
        order=order,
        n_tokens=sum(lengths),
        n_padded=n_padded,
        fingerprint=digest.hexdigest()[:12],
    )


@lru_cache(maxsize=4)
def _tokenizer(source: str) -> Any:
    from modeconn.models.hf import load_tokenizer, resolve_pretrained

    return load_tokenizer(resolve_pretrained(source))


def build_split(recipe: TextRecipe, model_labels: Sequence[str]) -> PreparedSplit:
    """The ``text`` kind's builder (:data:`modeconn.data.base.SPLIT_BUILDERS`)."""
    return prepare_split(
        recipe.spec,
        _tokenizer(recipe.tokenizer),
        model_labels,
        max_length=recipe.max_length,
        max_tokens=recipe.max_tokens,
        max_batch=recipe.max_batch,
    )
