"""Splits: reading, seeded samples, label mapping (MNLI → HANS), batching, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modeconn.data.text import (
    SplitSpec,
    bucket_batches,
    class_groups,
    prepare_split,
    read_examples,
    sample_indices,
)
from modeconn.errors import ConfigError, DataError

LABELS = ["entailment", "neutral", "contradiction"]
HANS_CLASSES = {"entailment": ("entailment",), "non-entailment": ("neutral", "contradiction")}


def hans_spec(data_root: Path, **kw) -> SplitSpec:
    base = dict(
        name="hans_lo",
        path=data_root / "hans/eval.tsv",
        text_a="sentence1",
        text_b="sentence2",
        label="gold_label",
        where={"heuristic": ("lexical_overlap",), "gold_label": ("non-entailment",)},
        classes=HANS_CLASSES,
        sample_size=40,
    )
    base.update(kw)
    return SplitSpec(**base)


def test_hans_filter_reads_only_the_asked_heuristic(data_root: Path) -> None:
    examples = read_examples(hans_spec(data_root))
    assert len(examples) == 5000  # 5,000 pairs per heuristic × label
    assert {e.label for e in examples} == {"non-entailment"}


def test_mnli_logits_become_hans_logits_by_max() -> None:
    spec = SplitSpec("h", Path("x"), "a", "label", classes=HANS_CLASSES)
    classes, groups = class_groups(spec, LABELS)
    assert classes == ("entailment", "non-entailment")
    assert groups == ((0,), (1, 2))
    from modeconn.data.text import PreparedSplit

    split = PreparedSplit(spec, classes, groups, [], torch.zeros(0), np.zeros(0), 0, 0, "x")
    logits = torch.tensor([[2.0, 1.0, 3.0], [0.5, -1.0, -2.0]])
    # row 0: entailment 2.0, non-entailment max(1.0, 3.0) = 3.0; row 1: 0.5 vs max(-1, -2) = -1
    assert torch.equal(split.map_logits(logits), torch.tensor([[2.0, 3.0], [0.5, -1.0]]))


def test_unknown_model_label_in_classes_is_named() -> None:
    spec = SplitSpec("h", Path("x"), "a", "label", classes={"yes": ("entails",)})
    with pytest.raises(ConfigError, match="model label 'entails'"):
        class_groups(spec, LABELS)


def test_sample_is_fixed_by_seed_and_distinct() -> None:
    a, b = sample_indices(1000, 100, 7), sample_indices(1000, 100, 7)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 100
    assert not np.array_equal(a, sample_indices(1000, 100, 8))
    assert np.array_equal(sample_indices(10, None, 0), np.arange(10))


def test_batches_respect_the_token_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=300).tolist()
    batches = bucket_batches(lengths, max_tokens=512, max_batch=64)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 512 or len(b) == 1
        assert len(b) <= 64


def test_missing_column_names_file_and_column(data_root: Path) -> None:
    with pytest.raises(DataError, match=r"column 'premise' not in .*eval\.tsv"):
        read_examples(hans_spec(data_root, text_a="premise"))


def test_unknown_label_names_the_label(data_root: Path, tiny_model_dir: Path) -> None:
    from modeconn.models.hf import load_tokenizer

    spec = hans_spec(data_root, classes=None, where={"heuristic": ("lexical_overlap",)})
    with pytest.raises(DataError, match="label 'non-entailment'"):
        prepare_split(spec, load_tokenizer(tiny_model_dir), LABELS)


def test_prepared_split_is_tokenized_once_and_fingerprinted(
    data_root: Path, tiny_model_dir: Path
) -> None:
    from modeconn.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    a = prepare_split(hans_spec(data_root), tok, LABELS, max_tokens=256)
    b = prepare_split(hans_spec(data_root), tok, LABELS, max_tokens=256)
    c = prepare_split(hans_spec(data_root, sample_seed=1), tok, LABELS, max_tokens=256)
    assert a.n == 40 and a.key == b.key and a.key != c.key
    assert sorted(a.order.tolist()) == list(range(40))
    assert a.n_tokens <= a.n_padded


def test_cola_without_header_and_mcc(data_root: Path, tiny_model_dir: Path) -> None:
    from modeconn.models.hf import load_tokenizer

    spec = SplitSpec(
        "cola_ood",
        data_root / "cola/out_of_domain_dev.tsv",
        text_a="sentence",
        label="label",
        header_names=("source", "label", "mark", "sentence"),
        label_values={"1": "acceptable", "0": "unacceptable"},
        metric="mcc",
        sample_size=None,
    )
    examples = read_examples(spec)
    assert len(examples) == 516
    split = prepare_split(spec, load_tokenizer(tiny_model_dir), ["unacceptable", "acceptable"])
    target = split.labels.numpy()
    scores = split.score(target.copy())
    assert scores["mcc"] == pytest.approx(1.0) and scores["accuracy"] == 1.0


def test_rows_slice_is_validated(data_root: Path) -> None:
    spec = hans_spec(data_root, rows="10-20")
    with pytest.raises(ConfigError, match="start:stop"):
        read_examples(spec)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_examples(SplitSpec("x", tmp_path / "nope.tsv", "a", "b"))


def test_pair_classification_with_f1_on_a_users_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    """QQP/PAWS-style binary pairs: a user's own TSV, F1 on the positive class."""
    from modeconn.models.hf import load_tokenizer

    rows = ["question1\tquestion2\tis_duplicate"]
    rows += [f"how do I cook rice {i}?\thow to cook rice {i}?\t{i % 2}" for i in range(20)]
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    spec = SplitSpec(
        "paws",
        tmp_path / "pairs.tsv",
        "question1",
        "is_duplicate",
        "question2",
        label_values={"1": "duplicate", "0": "different"},
        metric="f1",
        positive_class="duplicate",
        sample_size=None,
    )
    split = prepare_split(spec, load_tokenizer(tiny_model_dir), ["different", "duplicate"])
    target = split.labels.numpy()
    pred = np.ones_like(target)  # everything "duplicate": precision 0.5, recall 1 → F1 2/3
    assert split.score(pred)["f1"] == pytest.approx(2 / 3)
    assert split.score(pred)["accuracy"] == pytest.approx(0.5)
