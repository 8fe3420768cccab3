"""Training: separate seeds, BERT schedule, atomic writes, skip what is trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeconn.errors import ConfigError
from modeconn.models import load_classifier, load_tokenizer
from modeconn.tasks.text import Example
from modeconn.train import (
    MemberPlan,
    TrainConfig,
    batch_order,
    clean_partial,
    linear_schedule,
    train_member,
)

LABELS = ["entailment", "neutral", "contradiction"]
EXAMPLES = tuple(
    Example(
        f"the cat number {i} sat on the mat", f"a cat {'sat' if i % 2 else 'ran'}", LABELS[i % 3]
    )
    for i in range(48)
)
CONFIG = TrainConfig(examples=32, batch_size=8, lr=1e-3, bucket=2)


def _train(model_dir: Path, out: Path, **plan_kw) -> Path:
    plan = MemberPlan(
        **{
            "member_id": "m",
            "arm": "a",
            "head_seed": 0,
            "data_seed": 0,
            "examples": EXAMPLES,
            **plan_kw,
        }
    )
    return train_member(
        lambda: load_classifier(model_dir, LABELS),
        load_tokenizer(model_dir),
        plan,
        LABELS,
        CONFIG,
        out,
        base="tiny",
        progress=False,
    )


def test_schedule_is_warmup_then_linear_decay() -> None:
    # 10 steps, 10 % warm-up = 1 step: lr factor 1.0 at step 0, then (10 − s)/9
    got = [linear_schedule(s, steps=10, warmup=0.1) for s in range(10)]
    assert got[0] == 1.0 and got[1] == pytest.approx(1.0) and got[9] == pytest.approx(1 / 9)
    # 20 steps, 25 % = 5 warm-up steps: 0.2, 0.4, …, 1.0
    assert [linear_schedule(s, steps=20, warmup=0.25) for s in range(5)] == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0]
    )


def test_data_seed_decides_the_order_and_batches_group_by_length() -> None:
    lengths = [5 + (i * 7) % 40 for i in range(64)]
    a = batch_order(lengths, steps=8, batch_size=8, bucket=4, seed=0)
    assert a == batch_order(lengths, steps=8, batch_size=8, bucket=4, seed=0)
    assert a != batch_order(lengths, steps=8, batch_size=8, bucket=4, seed=1)
    assert all(len(b) == 8 for b in a) and len(a) == 8
    # within each length-sorted chunk, batches are contiguous in length
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) < 40 for b in a)


def test_head_seed_and_data_seed_are_separate(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = load_file(str(_train(tiny_model_dir, tmp_path / "a")))
    head = load_file(str(_train(tiny_model_dir, tmp_path / "b", head_seed=1)))
    data = load_file(str(_train(tiny_model_dir, tmp_path / "c", data_seed=1)))
    same = load_file(str(_train(tiny_model_dir, tmp_path / "d")))
    assert all(torch.equal(base[k], same[k]) for k in base)  # deterministic
    assert not torch.equal(base["classifier.weight"], head["classifier.weight"])
    assert not torch.equal(base["classifier.weight"], data["classifier.weight"])


def test_rerun_skips_a_trained_member(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = _train(tiny_model_dir, tmp_path)
    stamp = path.stat().st_mtime_ns
    _train(tiny_model_dir, tmp_path)
    assert path.stat().st_mtime_ns == stamp
    _train(tiny_model_dir, tmp_path, data_seed=3)  # another recipe: trained again
    assert path.stat().st_mtime_ns != stamp


def test_a_crash_while_saving_leaves_no_file(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modeconn.train as train

    def broken(state, path):  # writes part of a file, then dies
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(train, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        _train(tiny_model_dir, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_stale_temporary_files_are_cleaned(tmp_path: Path) -> None:
    (tmp_path / ".m.safetensors.tmp-123").write_bytes(b"x")
    (tmp_path / "keep.safetensors").write_bytes(b"x")
    assert clean_partial(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]


def test_unknown_training_label_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = (*EXAMPLES[:40], Example("a", "b", "non-entailment"))
    with pytest.raises(ConfigError, match="'non-entailment'"):
        _train(tiny_model_dir, tmp_path, examples=bad)


def test_head_prefix_must_match(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="head_prefix"):
        train_member(
            lambda: load_classifier(tiny_model_dir, LABELS),
            load_tokenizer(tiny_model_dir),
            MemberPlan("m", "a", 0, 0, EXAMPLES),
            LABELS,
            TrainConfig(examples=32, batch_size=8, head_prefix="score"),
            tmp_path,
            base="tiny",
            progress=False,
        )
