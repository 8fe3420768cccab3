"""Studies beyond MNLI (Juneja et al. 2023): CoLA with MCC, QQP with PAWS-QQP and F1.

The built-in CoLA study is checked against the real CoLA files, counted here with the
csv module; the QQP/PAWS example study is run end to end on small files written in the
real GLUE QQP and PAWS-QQP layouts, and every F1 it stores is recomputed with
scikit-learn from predictions made here by plain Hugging Face forward passes.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from tolerances import ATOL, RTOL

from modeconn.cli import main
from modeconn.config.study import builtin_study_path, load_study
from modeconn.data.text import prepare_split, read_examples, sample_indices
from modeconn.models.hf import load_tokenizer, resolve_pretrained
from modeconn.results import analyze
from modeconn.store import Store

REPO = Path(__file__).resolve().parents[1]
COLA_NAMES = {"0": "unacceptable", "1": "acceptable"}


def _raw_rows(path: Path) -> list[list[str]]:
    """A TSV's rows as CoLA and GLUE write them: tab-separated, quotes are literal text."""
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


# --------------------------------------------------------------------------- CoLA


@pytest.fixture(scope="module")
def cola_study(data_root: Path):
    return load_study(builtin_study_path("demo-cola"), data_root=str(data_root))


def test_cola_study_declares_mcc_on_id_and_ood(cola_study) -> None:
    s = cola_study
    assert s.model.pretrained == "builtin:all-MiniLM-L6-v2"
    assert s.model.label_order == ["unacceptable", "acceptable"]
    assert s.paths.splits == ["cola", "cola_ood"]
    assert (s.basins.split, s.basins.ood) == ("cola", ["cola_ood"])
    assert {n: c.metric for n, c in s.splits.items() if c.role != "train"} == {
        "cola": "mcc",
        "cola_ood": "mcc",
    }
    assert s.train is not None and [(a.name, a.members, a.data) for a in s.train.arms] == [
        ("seed", 4, "cola_train")
    ]
    # in-domain train → in-domain dev (ID) → out-of-domain dev (OOD): three distinct files
    files = {n: s.splits[n].path for n in ("cola_train", "cola", "cola_ood")}
    assert files == {
        "cola_train": "cola/in_domain_train.tsv",
        "cola": "cola/in_domain_dev.tsv",
        "cola_ood": "cola/out_of_domain_dev.tsv",
    }


@pytest.mark.parametrize("name", ["cola_train", "cola", "cola_ood"])
def test_cola_split_prepares_on_the_real_files(cola_study, name: str) -> None:
    spec = cola_study.split_spec(name)
    raw = _raw_rows(spec.path)  # no header row: source, label, original mark, sentence
    assert all(len(r) == 4 for r in raw)
    tok = load_tokenizer(resolve_pretrained(cola_study.model.pretrained))
    split = prepare_split(
        spec, tok, cola_study.model.label_order, max_length=cola_study.model.max_length
    )
    size = spec.sample_size
    expected_n = len(raw) if size is None else min(size, len(raw))
    assert split.n == expected_n
    # the sample's labels, put back in sample order, are the file's labels at the sampled
    # rows: the label column is the second one (not the author's mark), 0/1 mapped by name
    chosen = sample_indices(len(raw), size, spec.sample_seed)
    want = [COLA_NAMES[raw[i][1]] for i in chosen]
    in_sample_order = np.empty(split.n, dtype=np.int64)
    in_sample_order[split.order] = split.labels.numpy()
    assert [split.classes[i] for i in in_sample_order] == want
    assert set(in_sample_order.tolist()) == {0, 1}  # both classes present
    # and the text is the fourth column: the first sampled example round-trips
    first = read_examples(spec)[int(chosen[0])]
    assert first.text_a == raw[int(chosen[0])][3] and first.text_b is None


def test_cola_file_counts_match_the_release(data_root: Path) -> None:
    """Rows per file and label as counted by the csv module (CoLA 1.1 raw release)."""
    counts = {
        f: Counter(r[1] for r in _raw_rows(data_root / "cola" / f"{f}.tsv"))
        for f in ("in_domain_train", "in_domain_dev", "out_of_domain_dev")
    }
    assert {f: sum(c.values()) for f, c in counts.items()} == {
        "in_domain_train": 8551,
        "in_domain_dev": 527,
        "out_of_domain_dev": 516,
    }
    assert counts["in_domain_dev"] == Counter({"1": 365, "0": 162})


def test_cola_split_scores_mcc_like_sklearn(cola_study) -> None:
    tok = load_tokenizer(resolve_pretrained(cola_study.model.pretrained))
    split = prepare_split(cola_study.split_spec("cola"), tok, cola_study.model.label_order)
    target = split.labels.numpy()
    # always "acceptable", the majority class: MCC is 0 (undefined → 0, as sklearn)
    majority = np.full_like(target, split.classes.index("acceptable"))
    assert split.score(majority)["mcc"] == 0.0
    pred = np.random.default_rng(0).integers(0, 2, size=target.size)
    got = split.score(pred)
    assert got["mcc"] == pytest.approx(matthews_corrcoef(target, pred), rel=RTOL, abs=ATOL)
    assert got["accuracy"] == pytest.approx(accuracy_score(target, pred), abs=ATOL)


# --------------------------------------------------------------------------- QQP / PAWS

QQP_LABELS = ["not_duplicate", "duplicate"]
TOPICS = [
    "python", "french", "guitar", "chess", "calculus", "swimming", "cooking", "painting",
    "german", "photography", "statistics", "piano", "knitting", "physics", "spanish",
    "drawing", "typing", "juggling", "welding", "poetry",
]  # fmt: skip
CITIES = ["Boston", "Denver", "Chicago", "Seattle", "Austin", "Miami", "Dallas", "Phoenix"]


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _qqp_rows() -> list[list[str]]:
    """40 made-up pairs in GLUE QQP's layout: 20 duplicates, 20 not."""
    rows = []
    for i, t in enumerate(TOPICS):
        q = f"How can I learn {t} quickly?"
        rows.append(
            [
                str(2 * i),
                str(4 * i),
                str(4 * i + 1),
                q,
                f"What is the fastest way to learn {t}?",
                "1",
            ]
        )
        other = TOPICS[(i + 7) % len(TOPICS)]
        q2 = f'What does "{other}" mean?' if i == 3 else f"Why is {other} so hard?"  # a quote
        rows.append([str(2 * i + 1), str(4 * i + 2), str(4 * i + 3), q, q2, "0"])
    return rows


def _paws_rows() -> list[list[str]]:
    """40 made-up pairs in PAWS-QQP's layout: word swaps (0) and paraphrases (1)."""
    rows = []
    for i in range(20):
        a, b = CITIES[i % len(CITIES)], CITIES[(i * 3 + 1) % len(CITIES)]
        if a == b:
            b = CITIES[(i + 2) % len(CITIES)]
        s1 = f"Is a flight from {a} to {b} cheaper than the train?"
        rows.append(
            [str(2 * i + 1), s1, f"Is a flight from {b} to {a} cheaper than the train?", "0"]
        )
        rows.append(
            [
                str(2 * i + 2),
                f"How do I move from {a} to {b}?",
                f"How can I move from {a} to {b}?",
                "1",
            ]
        )
    return rows


def _two_label_model(tiny_model_dir: Path, out: Path) -> Path:
    """The tiny 2-layer BERT of conftest with a 2-way head, as a Hugging Face dir."""
    from transformers import BertConfig, BertForSequenceClassification

    shutil.copytree(tiny_model_dir, out)
    config = BertConfig.from_pretrained(str(tiny_model_dir))
    config.num_labels = 2
    config.id2label = dict(enumerate(QQP_LABELS))
    config.label2id = {n: i for i, n in enumerate(QQP_LABELS)}
    body = BertForSequenceClassification.from_pretrained(str(tiny_model_dir)).state_dict()
    model = BertForSequenceClassification(config)
    model.load_state_dict(
        {k: v for k, v in body.items() if not k.startswith("classifier")}, strict=False
    )
    for f in out.glob("model.safetensors"):
        f.unlink()
    model.save_pretrained(out)
    return out


def _members(model_dir: Path, out: Path, seeds: list[int], pairs: list[tuple[str, str]]) -> Path:
    """Members that differ by seed: seeded noise on every weight and a seeded head.

    The noise (std 0.3, LayerNorm kept) makes the tiny BERT's features depend on the
    input. Each head's duplicate bias is then shifted so that the decision threshold sits
    in the widest gap between the middle half of the sorted logit margins over `pairs`:
    both classes are predicted (F1 is not a one-class score) and no pair lies within half
    that gap of the boundary, so float32 rounding cannot flip a prediction.
    """
    from transformers import BertForSequenceClassification

    out.mkdir()
    base = BertForSequenceClassification.from_pretrained(str(model_dir)).state_dict()
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        state = {}
        for k, v in base.items():
            if not v.is_floating_point() or "LayerNorm" in k:
                state[k] = v.clone()
            elif k == "classifier.weight":
                state[k] = torch.randn(v.shape, generator=gen)
            else:
                state[k] = v + 0.3 * torch.randn(v.shape, generator=gen)
        path = out / f"s{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        logits = _independent_logits(model_dir, path, pairs)
        margin = np.sort(logits[:, 1] - logits[:, 0])  # (n,) duplicate minus not
        lo, hi = len(margin) // 4, 3 * len(margin) // 4
        i = lo + int(np.argmax(np.diff(margin[lo:hi])))
        assert margin[i + 1] - margin[i] > 1e-3, "test members too close to the boundary"
        state["classifier.bias"][1] -= float(margin[i] + margin[i + 1]) / 2
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        meta = {"head_seed": seed, "data_seed": seed, "arm": "seed"}
        (out / f"s{seed}.json").write_text(json.dumps(meta))
    return out


def _independent_logits(model_dir: Path, weights: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    """(n, 2) logits from one unpadded forward pass per pair, outside modeconn's engine."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig.from_pretrained(str(model_dir)))
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 80 tiny forwards: threads only add overhead on a busy CPU
    try:
        with torch.no_grad():
            for a, b in pairs:
                enc = tok(a, b, truncation=True, max_length=64, return_tensors="pt")
                out.append(model(**enc).logits[0].double().numpy())
    finally:
        torch.set_num_threads(threads)
    return np.stack(out)


@pytest.fixture
def qqp_run(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    data = tmp_path / "data"
    _write_tsv(
        data / "qqp" / "dev.tsv",
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        _qqp_rows(),
    )
    _write_tsv(
        data / "paws_qqp" / "dev_and_test.tsv",
        ["id", "sentence1", "sentence2", "label"],
        _paws_rows(),
    )
    monkeypatch.setenv("MODECONN_DATA", str(data))
    model_dir = _two_label_model(tiny_model_dir, tmp_path / "tiny-2way")
    pairs = [(r[3], r[4]) for r in _qqp_rows()] + [(r[1], r[2]) for r in _paws_rows()]
    members = _members(model_dir, tmp_path / "members", [0, 1, 2], pairs)
    study = yaml.safe_load((REPO / "examples" / "qqp-paws.yaml").read_text())
    study["output_dir"] = str(tmp_path / "out")
    study["population"] = {"dir": str(members)}
    study["model"] = {**study["model"], "pretrained": str(model_dir), "max_length": 64}
    study["eval"] = {"threads": 1}
    path = tmp_path / "qqp-paws.yaml"
    path.write_text(yaml.safe_dump(study))
    code = main(["run", str(path), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return {
        "data": data,
        "model": model_dir,
        "members": members,
        "out": tmp_path / "out",
        "stdout": out,
    }


def test_qqp_example_parses_with_f1_of_duplicate() -> None:
    s = load_study(REPO / "examples" / "qqp-paws.yaml")
    assert s.population is not None and s.train is None
    assert s.model.label_order == QQP_LABELS
    for name in ("qqp", "paws_qqp_path", "paws_qqp"):
        c = s.splits[name]
        assert (c.metric, c.positive_class, c.label_values) == (
            "f1",
            "duplicate",
            {"0": "not_duplicate", "1": "duplicate"},
        )
    assert s.basins.split == "qqp" and s.basins.ood == ["paws_qqp"]


def test_qqp_paws_study_runs_and_stores_sklearn_f1(qqp_run) -> None:
    data, model_dir = qqp_run["data"], qqp_run["model"]
    files = {
        "qqp": (data / "qqp" / "dev.tsv", 3, 4, 5),  # question1, question2, is_duplicate
        "paws_qqp": (data / "paws_qqp" / "dev_and_test.tsv", 1, 2, 3),
        "paws_qqp_path": (data / "paws_qqp" / "dev_and_test.tsv", 1, 2, 3),
    }
    with Store(qqp_run["out"] / "results.sqlite", create=False) as store:
        points = store.member_points(with_examples=True)
        result = analyze(store)
    points["name"] = points["split"].str.split("#").str[0]
    assert sorted(points["name"].unique()) == sorted(files)
    assert len(points) == 3 * len(files)  # every member on every split
    seen_both = False
    for row in points.itertuples():
        path, ia, ib, il = files[row.name]
        raw = _raw_rows(path)[1:]  # skip the header; 40 rows < sample 512: all, file order
        assert row.n_examples == len(raw) == 40
        y = np.array([int(r[il]) for r in raw])  # 1 = duplicate = model output 1
        logits = _independent_logits(
            model_dir,
            qqp_run["members"] / f"{row.member_id}.safetensors",
            [(r[ia], r[ib]) for r in raw],
        )
        pred = logits.argmax(axis=1)
        seen_both |= len(set(pred.tolist())) == 2
        assert row.f1 == pytest.approx(f1_score(y, pred, pos_label=1), rel=RTOL, abs=ATOL)
        assert row.accuracy == pytest.approx(accuracy_score(y, pred), abs=ATOL)
        # the stored per-example losses are cross-entropies of these logits, and (two
        # classes) a loss below ln 2 means the true class won: the stored predictions
        log_z = np.logaddexp(logits[:, 0], logits[:, 1])
        ce = log_z - logits[np.arange(len(y)), y]
        losses = np.asarray(row.example_losses, dtype=np.float64)
        np.testing.assert_allclose(losses, ce, rtol=1e-5, atol=1e-5)  # float32 engine
        stored_pred = np.where(losses < math.log(2), y, 1 - y)
        assert row.f1 == pytest.approx(f1_score(y, stored_pred, pos_label=1), abs=ATOL)
    assert seen_both  # F1 is not a degenerate one-class score everywhere
    # the analysis reads F1 on both the ID split and the OOD split it correlates with
    assert {"qqp.f1", "paws_qqp.f1"} <= set(result.members.columns)
    assert result.correlations["metric"].tolist() == ["f1"]
    assert "paws_qqp f1: Pearson r" in qqp_run["stdout"]  # the run's summary line
    assert (qqp_run["out"] / "report" / "report.html").is_file()
