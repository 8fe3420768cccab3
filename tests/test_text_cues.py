"""The token cue on MNLI (Lubana et al. 2023's box cue, for text) and the recipes on a
BERT classifier: the cue inserted by hand on real pairs, the cued fraction per class, the
invariants of the four counterfactual sets, the sets as distinct splits, and every recipe
running on a tiny BERT built from a config (no download)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import LABELS, tiny_study_dict
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from modeconn.config.splits import DEFAULT_CUE_TOKENS, SplitSpec
from modeconn.config.study import load_study
from modeconn.data.text import Example, prepare_split, read_examples
from modeconn.data.text_cues import first_fraction
from modeconn.errors import ConfigError, DataError
from modeconn.models.hf import load_tokenizer
from modeconn.pipeline import StudyRunner
from modeconn.population.recipes import RECIPES, get
from modeconn.population.recipes.base import (
    FineTuneConfig,
    RecipePlan,
    features_of,
    take,
    train_recipe_member,
)
from modeconn.population.recipes.cbft import barrier_loss
from modeconn.population.weights import weights_hash

WORDS = dict(zip(LABELS, DEFAULT_CUE_TOKENS, strict=False))  # apple, river, piano
ATOL = 1e-6


def _raw(data_root: Path, rows: slice) -> pd.DataFrame:
    """The MNLI rows as the file has them, read independently of modeconn."""
    frame = pd.read_csv(
        data_root / "mnli" / "dev_matched.tsv",
        sep="\t",
        quoting=csv.QUOTE_NONE,
        dtype=str,
        keep_default_na=False,
    )
    frame = frame[frame["gold_label"].isin(LABELS)]
    return frame.iloc[rows].reset_index(drop=True)


def _spec(data_root: Path, rows: str = "0:300", **cue) -> SplitSpec:
    if cue.get("cue", "none") != "none":
        cue.setdefault("cue_words", WORDS)
    return SplitSpec(
        name="mnli",
        path=data_root / "mnli" / "dev_matched.tsv",
        text_a="premise",
        text_b="hypothesis",
        label="gold_label",
        where={"gold_label": tuple(LABELS)},
        rows=rows,
        sample_size=None,
        **cue,
    )


def test_the_cue_word_by_hand_on_real_pairs(data_root: Path) -> None:
    raw = _raw(data_root, slice(0, 4))
    got = read_examples(_spec(data_root, "0:4", cue="label", cue_fraction=1.0))
    # row 0 is neutral, row 1 contradiction, row 2 entailment (the file's own order)
    assert list(raw["gold_label"][:3]) == ["neutral", "contradiction", "entailment"]
    assert got[0].text_b == "river " + raw["hypothesis"][0]
    assert got[1].text_b == "piano " + raw["hypothesis"][1]
    assert got[2].text_b == "apple " + raw["hypothesis"][2]
    assert [e.text_a for e in got] == list(raw["premise"])  # the premise is untouched
    end = read_examples(_spec(data_root, "0:4", cue="label", cue_position="end"))
    assert end[0].text_b == raw["hypothesis"][0] + " river"


def test_the_first_floor_n_p_of_each_class_carry_the_cue(data_root: Path) -> None:
    p = 0.6
    raw = _raw(data_root, slice(0, 300))
    got = read_examples(_spec(data_root, cue="label", cue_fraction=p))
    for label in LABELS:
        idx = np.flatnonzero(raw["gold_label"] == label)
        cued = [
            i for i in idx if got[i].text_b == f"{WORDS[label]} {raw['hypothesis'][i]}"
        ]  # fmt: skip
        assert len(cued) == int(len(idx) * p)  # ⌊n·p⌋
        assert cued == list(idx[: len(cued)])  # the first of the class, in file order
        rest = idx[len(cued) :]
        assert all(got[i].text_b == raw["hypothesis"][i] for i in rest)
    assert first_fraction(["a", "a", "a"], ["a"], 1.0).tolist() == [0, 1, 2]
    assert first_fraction(["a", "a", "a"], ["a"], 0.0).tolist() == []


def test_the_four_counterfactual_sets(data_root: Path) -> None:
    raw = _raw(data_root, slice(0, 300))
    clean = read_examples(_spec(data_root))
    cue = read_examples(_spec(data_root, cue="label", cue_fraction=1.0))
    rand = read_examples(_spec(data_root, cue="random", cue_seed=1))
    text = read_examples(_spec(data_root, cue="random_text", cue_seed=2))
    labels = list(raw["gold_label"])
    for s in (clean, cue, rand, text):
        assert [e.label for e in s] == labels  # every set keeps the rows' labels
    assert [e.text_b for e in clean] == list(raw["hypothesis"])
    assert all(
        e.text_b == f"{WORDS[e.label]} {h}" for e, h in zip(cue, raw["hypothesis"], strict=True)
    )
    # randomized cue: one of the cue words on the row's own pair, drawn apart from the label
    words = [e.text_b.split(" ", 1)[0] for e in rand]
    assert all(
        e.text_b == f"{w} {h}" for e, w, h in zip(rand, words, raw["hypothesis"], strict=True)
    )
    assert set(words) == set(WORDS.values())
    agree = np.mean([w == WORDS[y] for w, y in zip(words, labels, strict=True)])
    assert 0.2 < agree < 0.47  # 1/3 expected by chance
    assert words != [e.text_b.split(" ", 1)[0] for e in read_examples(
        _spec(data_root, cue="random", cue_seed=2))]  # fmt: skip
    # randomized text: the label's word kept, the pair of a row of another label
    pairs = {(a, b): y for a, b, y in zip(raw["premise"], raw["hypothesis"], labels, strict=True)}
    for e in text:
        word, _, hypothesis = e.text_b.partition(" ")
        assert word == WORDS[e.label]
        donor = pairs[(e.text_a, hypothesis)]
        assert donor != e.label
    assert text == read_examples(_spec(data_root, cue="random_text", cue_seed=2))  # seeded


def test_the_sets_are_distinct_splits(tiny_model_dir: Path, data_root: Path) -> None:
    tok = load_tokenizer(tiny_model_dir)
    kw = {"rows": "6000:6300"}
    specs = {
        "clean": _spec(data_root, **kw),
        "cue": _spec(data_root, cue="label", **kw),
        "cue-0.5": _spec(data_root, cue="label", cue_fraction=0.5, **kw),
        "random_cue": _spec(data_root, cue="random", cue_seed=1, **kw),
        "random_cue-2": _spec(data_root, cue="random", cue_seed=2, **kw),
        "random_text": _spec(data_root, cue="random_text", **kw),
    }
    keys = {k: prepare_split(s, tok, LABELS).fingerprint for k, s in specs.items()}
    assert len(set(keys.values())) == len(keys)
    # the seed of a cue that draws nothing is not part of the identity
    assert (
        prepare_split(_spec(data_root, cue="label", cue_seed=9, **kw), tok, LABELS).fingerprint
        == keys["cue"]
    )


def test_a_label_without_a_cue_word_is_named(data_root: Path) -> None:
    spec = _spec(data_root, cue="label", cue_words={"entailment": "apple"})
    with pytest.raises(DataError, match=r"split 'mnli': label '(neutral|contradiction)' has no"):
        read_examples(spec)
    one = _spec(data_root, cue="random_text")
    one = SplitSpec(**{**one.__dict__, "where": {"gold_label": ("neutral",)}})
    with pytest.raises(DataError, match=r"random_text .* only \['neutral'\]"):
        read_examples(one)


# ------------------------------------------------------------------ recipes on a tiny BERT


def _bert(seed: int = 0, *, dropout: float = 0.1) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=3,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForSequenceClassification(config)


def _table(tok, examples: list[Example]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    enc = tok(
        [e.text_a for e in examples],
        [e.text_b for e in examples],
        truncation=True,
        max_length=48,
        padding=True,
        return_tensors="pt",
    )
    labels = torch.tensor([LABELS.index(e.label) for e in examples])
    return dict(enc), labels


@pytest.fixture(scope="module")
def text_data(tiny_model_dir: Path, data_root: Path):
    tok = load_tokenizer(tiny_model_dir)
    clean = _table(tok, read_examples(_spec(data_root, "0:24")))
    cued = _table(tok, read_examples(_spec(data_root, "100:124", cue="label", cue_fraction=0.9)))
    return clean, cued


def _plan(recipe: str, text_data, seed: int = 0) -> RecipePlan:
    (x, y), (xc, yc) = text_data
    start = _bert(5).state_dict()
    return RecipePlan(
        member_id=f"{recipe}-00",
        arm=recipe,
        recipe=recipe,
        seed=seed,
        start_id="cue-00",
        start_hash=weights_hash(start),
        start=start,
        images=x,
        labels=y,
        config=FineTuneConfig(examples=16, batch_size=8, lr=0.01),
        cue_images=xc,
        cue_labels=yc,
        settings=(("probe_examples", 16), ("probe_lr", 0.1)) if recipe == "lp-ft" else (),
    )


def test_take_trims_a_token_batch_to_its_longest_row(text_data) -> None:
    (x, _), _ = text_data
    batch = take(x, torch.tensor([0, 1]))
    lengths = x["attention_mask"][:2].sum(dim=1)
    assert batch["input_ids"].shape == (2, int(lengths.max()))
    assert set(batch) == set(x)


def test_the_features_of_a_bert_are_what_its_head_reads(text_data) -> None:
    (x, _), _ = text_data
    model = _bert(1).eval()
    batch = take(x, torch.arange(6))
    z = features_of(model)(**batch)
    with torch.no_grad():
        pooled = model.bert(**batch).pooler_output  # the pooled [CLS] vector
        logits = model(**batch).logits
    assert z.shape == (6, 16)
    assert torch.allclose(z, pooled, atol=ATOL)
    assert torch.allclose(model.classifier(z), logits, atol=ATOL)


def test_the_barrier_gradient_on_a_bert_reaches_theta_through_one_minus_t(text_data) -> None:
    _, (xc, yc) = text_data
    theta, anchor = _bert(1, dropout=0.0), _bert(2, dropout=0.0)
    batch, y = take(xc, torch.arange(8)), yc[:8]
    t = 0.4
    mixed = copy.deepcopy(theta)
    sa, st = anchor.state_dict(), theta.state_dict()
    mixed.load_state_dict(
        {k: t * sa[k] + (1 - t) * st[k] if st[k].is_floating_point() else st[k] for k in st}
    )
    mixed.train()
    by_hand = (1.0 - torch.nn.functional.cross_entropy(mixed(**batch).logits, y)).abs()
    by_hand.backward()
    theta.train()
    loss = barrier_loss(theta, sa, t, batch, y)
    loss.backward()
    assert abs(loss.item() - by_hand.item()) < ATOL
    grads = dict(mixed.named_parameters())
    for name, p in theta.named_parameters():
        if grads[name].grad is None:
            assert p.grad is None or not p.grad.any(), name
            continue
        assert torch.allclose(p.grad, (1 - t) * grads[name].grad, atol=ATOL), name


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_trains_a_bert_deterministically(recipe: str, text_data, tmp_path) -> None:
    def run(out: Path, seed: int = 0) -> dict[str, torch.Tensor]:
        path = train_recipe_member(
            lambda: _bert(0), get(recipe), _plan(recipe, text_data, seed), out, base="tiny"
        )
        return load_file(str(path))

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # dropout seeded by the plan
    start = _plan(recipe, text_data).start
    moved = {k for k in a if not torch.equal(a[k], start[k])}
    assert moved
    if recipe == "llrt":  # a fresh head on the frozen encoder: only the head moves
        assert {k.split(".")[0] for k in moved} == {"classifier"}
    else:
        assert any(k.startswith("bert.encoder") for k in moved)
    c = run(tmp_path / "c", seed=1)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------ a text study end to end


def _cue_study(tiny_model_dir: Path, data_root: Path, out: Path) -> dict:
    data = tiny_study_dict(tiny_model_dir, data_root, out, examples=32)
    splits = data["splits"]
    splits["train_cue"] = {**splits["mnli_train"], "cue": "label", "cue_fraction": 0.9}
    splits["ft_clean"] = {**splits["mnli_train"], "sample_size": 24, "sample_seed": 3}
    for name, cue in {
        "cue": {"cue": "label"},
        "random_cue": {"cue": "random", "cue_seed": 1},
        "random_text": {"cue": "random_text", "cue_seed": 2},
    }.items():
        splits[name] = {**splits["mnli"], **cue, "role": "ood"}
    data["train"]["arms"] = [
        {"name": "cue", "members": 2, "data": "train_cue", "recipe": "cue"},
        {"name": "ft", "members": 2, "data": "ft_clean", "recipe": "ft-m", "from": "cue",
         "examples": 16, "lr": 0.01},
        {"name": "cb", "members": 1, "data": "ft_clean", "recipe": "cbft", "from": "cue",
         "examples": 16, "lr": 0.01},
    ]  # fmt: skip
    data["paths"] = {"points": 3, "splits": ["mnli"]}
    data["basins"] = {"split": "mnli", "ood": ["random_cue"]}
    data["member_splits"] = []
    data["analyses"] = {
        "mechanisms": {
            "sets": {"clean": "mnli", "cue": "cue", "random_cue": "random_cue",
                     "random_image": "random_text"},
            "points": 3,
        }
    }  # fmt: skip
    return data


def test_a_text_study_trains_cue_and_recipe_arms(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_cue_study(tiny_model_dir, data_root, tmp_path / "out")))
    study = load_study(path)
    paths = StudyRunner(study, progress=False).train()
    assert [p.stem for p in paths] == ["cue-00", "cue-01", "ft-00", "ft-01", "cb-00"]
    meta = json.loads(paths[3].with_suffix(".json").read_text())
    assert meta["from"] == "cue-01" and meta["recipe_kind"] == "ft-m"
    stamps = [p.stat().st_mtime_ns for p in paths]
    StudyRunner(study, progress=False).train()  # the rerun trains nothing
    assert [p.stat().st_mtime_ns for p in paths] == stamps


@pytest.mark.slow
def test_a_text_study_runs_the_mechanisms_analysis(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_cue_study(tiny_model_dir, data_root, tmp_path / "out")))
    result = StudyRunner(load_study(path), progress=False).run()
    value = result.analyses["mechanisms"]
    table = value["table"]
    assert set(table["method"]) == {"cue", "ft", "cb"}
    assert set(table["set"]) == {"clean", "cue", "random_cue", "random_image"}
    paths = value["paths"]
    assert len(paths) == 3 * 4  # 3 fine-tuned members × 4 sets
    assert set(result.splits) >= {"mnli", "cue", "random_cue", "random_text"}
    assert len({result.splits[s]["key"] for s in ("mnli", "cue", "random_cue", "random_text")}) == 4


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"cue": "label", "cue_fraction": 1.5}, r"splits\.mnli: cue_fraction .* \[0, 1\]"),
        ({"cue": "label", "cue_tokens": ["apple", "river"]}, r"2 words for 3 classes"),
        ({"cue": "label", "cue_tokens": ["a", "a", "b"]}, r"cue_tokens must be distinct"),
        ({"cue": "label", "cue_tokens": ["red apple", "b", "c"]}, r"single words"),
        ({"cue": "sometimes"}, r"splits\.mnli\.cue: expected 'none', 'label'"),
        ({"cue_position": "middle"}, r"splits\.mnli\.cue_position: expected 'start' or 'end'"),
    ],
)
def test_bad_cue_settings_are_named(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path, change: dict, match: str
) -> None:
    data = tiny_study_dict(tiny_model_dir, data_root, tmp_path / "out")
    data["splits"]["mnli"].update(change)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=match):
        load_study(path)


def test_a_digits_split_cannot_hold_a_text_cue(tmp_path: Path) -> None:
    from test_vision_study import tiny_digits_study

    data = tiny_digits_study(tmp_path / "out")
    name = next(iter(data["splits"]))
    data["splits"][name]["cue_tokens"] = ["apple"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"splits\.{name}: cue_tokens is a token-cue setting"):
        load_study(path)
