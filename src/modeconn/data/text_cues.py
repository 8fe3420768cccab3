"""A token cue for sentence-pair tasks: the box cue of Lubana et al. (2023), for text.

Lubana et al. (ICML 2023, "Mechanistic Mode Connectivity") paste a small box whose
position encodes the label into a fraction p of the training images; a network can then
solve the task by reading the box instead of the object, and the paper asks whether
fine-tuning moves it off that mechanism. Their code has no text version; this is ours.

**The cue.** Every class has one *cue word* (``cue_tokens``, default
:data:`~modeconn.config.splits.DEFAULT_CUE_TOKENS`: ``apple``, ``river``, ``piano`` … in
the split's class order, each one WordPiece token of the uncased BERT vocabulary and
unrelated to entailment). The word is inserted as a separate word at the start (or, with
``cue_position: end``, the end) of the second text of the pair — the hypothesis of an
NLI pair, the sentence of a single-sentence task. Its *identity* encodes the label, as the
box's position does. A MNLI pair of class ``contradiction`` with the default words::

    premise:    "The cat sat on the mat."
    hypothesis: "piano The cat is standing."

**The four counterfactual sets** (the paper's, with "randomized image" read as
"randomized text"), each a split option, applied to the split's rows after ``where`` /
``rows`` and before the evaluation sample is drawn:

* ``cue: none`` — clean;
* ``cue: label`` — the first ⌊n·p⌋ rows of each class (in file order) carry their label's
  word, p = ``cue_fraction``; with p = 1 every row does (the *cue* set), and a training
  split with p < 1 is the cued training data;
* ``cue: random`` — every row carries a word drawn uniformly from the cue words with
  ``cue_seed``, independently of its label (*randomized cue*): a model that reads the word
  is misled, one that reads the pair is not;
* ``cue: random_text`` — every row keeps its label and its label's word, but its premise
  and hypothesis are those of a row of another label, drawn with ``cue_seed`` (first a
  class other than the label, uniformly, then a row of that class; the donors of
  :func:`modeconn.data.digits.random_image_donors`): a model that reads the word scores
  high, one that reads the pair scores near 0.

A model that ignores the cue scores clean ≈ cue ≈ randomized cue and low on randomized
text; a cue-reliant one scores cue ≫ randomized cue and high on randomized text.

The cue settings enter the split's fingerprint (:func:`modeconn.data.text.prepare_split`),
so the four sets of one file are four distinct splits in the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from modeconn.config.splits import SplitSpec
from modeconn.data.digits import random_image_donors
from modeconn.errors import DataError

if TYPE_CHECKING:  # text imports this module to apply the cue; rows are its Examples
    from modeconn.data.text import Example


def insert_cue(text: str, word: str, position: str = "start") -> str:
    """`text` with `word` added as a separate first (or last) word.

    >>> insert_cue("The cat is standing.", "piano")
    'piano The cat is standing.'
    >>> insert_cue("The cat is standing.", "piano", "end")
    'The cat is standing. piano'
    """
    return f"{word} {text}" if position == "start" else f"{text} {word}"


def _with_word(example: Example, word: str, position: str) -> Example:
    """The example with `word` in its second text (its only text for a single sentence)."""
    if example.text_b is None:
        return dataclasses.replace(example, text_a=insert_cue(example.text_a, word, position))
    return dataclasses.replace(example, text_b=insert_cue(example.text_b, word, position))


def first_fraction(labels: Sequence[str], classes: Sequence[str], fraction: float) -> np.ndarray:
    """Indices of the first ⌊n_c·p⌋ rows of each class c (file order), sorted.

    >>> first_fraction(["a", "b", "a", "a", "b"], ["a", "b"], 0.5).tolist()
    [0, 1]
    """
    y = np.asarray(labels, dtype=object)
    keep = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        keep.append(idx[: int(len(idx) * fraction)])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def apply_cue(examples: Sequence[Example], spec: SplitSpec) -> list[Example]:
    """The split's rows with its token cue applied (see the module docstring)."""
    rows = list(examples)
    if spec.cue == "none":
        return rows
    words = dict(spec.cue_words)
    unknown = sorted({e.label for e in rows} - set(words))
    if unknown:
        raise DataError(
            f"split '{spec.name}': label {unknown[0]!r} has no cue word (the cue words are "
            f"for {list(words)}); map the label with `label_values` or filter it with `where`"
        )
    position = spec.cue_position
    if spec.cue == "label":
        cued = first_fraction([e.label for e in rows], list(words), spec.cue_fraction)
        for i in cued.tolist():
            rows[i] = _with_word(rows[i], words[rows[i].label], position)
        return rows
    if spec.cue == "random":
        vocab = list(words.values())
        drawn = np.random.default_rng(spec.cue_seed).integers(0, len(vocab), size=len(rows))
        return [
            _with_word(e, vocab[k], position) for e, k in zip(rows, drawn.tolist(), strict=True)
        ]
    # random_text: another label's pair, the row's own label and word
    classes = list(words)
    present = sorted({e.label for e in rows})
    if len(present) < 2:
        raise DataError(
            f"split '{spec.name}': cue: random_text takes each row's text from a row of "
            f"another label, but the split has only {present}; widen its `where` / `rows`"
        )
    y = np.asarray([classes.index(e.label) for e in rows], dtype=np.int64)
    donors = random_image_donors(y, spec.cue_seed)
    return [
        _with_word(dataclasses.replace(rows[d], label=e.label), words[e.label], position)
        for e, d in zip(rows, donors.tolist(), strict=True)
    ]
