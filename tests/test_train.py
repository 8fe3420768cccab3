"""Training: separate seeds, BERT schedule, atomic writes, skip what is trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_study_dict
from safetensors.torch import load_file

from modeconn.config.study import parse_study
from modeconn.data.text import Example, collate
from modeconn.errors import ConfigError
from modeconn.models.hf import load_classifier, load_tokenizer
from modeconn.pipeline import StudyRunner
from modeconn.population.train import (
    LinearProbe,
    MemberPlan,
    TrainConfig,
    batch_order,
    checkpoint_paths,
    checkpoint_steps,
    clean_partial,
    init_head,
    is_trained,
    linear_probe,
    linear_schedule,
    recipe_fingerprint,
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


def _train(model_dir: Path, out: Path, config: TrainConfig = CONFIG, **plan_kw) -> Path:
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
        config,
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
    import modeconn.population.train as train

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


# ---- the recipe fingerprint ---------------------------------------------------------


def test_finetune_fingerprint_is_pinned() -> None:
    # These values guard the reuse of trained members: members on disk are found again by
    # this fingerprint, so a change here retrains every existing population. They were
    # computed before the LP-FT recipe and checkpoints existed; neither may change them.
    assert recipe_fingerprint(MemberPlan("m", "a", 0, 0, EXAMPLES), CONFIG, "tiny") == (
        "8c37a55f8a3c87e1"
    )
    plan = MemberPlan("seed-03", "seed", 3, 5, EXAMPLES[:20])
    bert = "/models/bert-base-uncased"
    assert recipe_fingerprint(plan, TrainConfig(), bert) == "b6ec06a61f6a4087"
    # checkpoints only read the weights along the way: not part of the recipe
    saving = TrainConfig(checkpoints=(0.25, 0.5))
    assert recipe_fingerprint(plan, saving, bert) == "b6ec06a61f6a4087"


def test_lp_ft_fingerprint_holds_the_probe_settings() -> None:
    plan = MemberPlan("m", "a", 0, 0, EXAMPLES)
    lp = MemberPlan("m", "a", 0, 0, EXAMPLES, probe=LinearProbe(examples=32))
    prints = {
        recipe_fingerprint(p, CONFIG, "tiny")
        for p in (
            plan,
            lp,
            MemberPlan("m", "a", 0, 0, EXAMPLES, probe=LinearProbe(examples=40)),
            MemberPlan("m", "a", 0, 0, EXAMPLES, probe=LinearProbe(examples=32, lr=1e-2)),
        )
    }
    assert len(prints) == 4
    assert (plan.recipe_kind, lp.recipe_kind) == ("finetune", "lp-ft")


# ---- LP-FT --------------------------------------------------------------------------


def _encoded(model_dir: Path) -> tuple[dict, torch.Tensor, list[int]]:
    tok = load_tokenizer(model_dir)
    enc = tok([e.text_a for e in EXAMPLES], [e.text_b for e in EXAMPLES], padding=False)
    encoded = {k: list(v) for k, v in enc.items()}
    targets = torch.tensor([LABELS.index(e.label) for e in EXAMPLES])
    return encoded, targets, [len(x) for x in encoded["input_ids"]]


def test_linear_probe_trains_the_head_alone_on_frozen_features(tiny_model_dir: Path) -> None:
    encoded, targets, lengths = _encoded(tiny_model_dir)
    order = batch_order(lengths, steps=4, batch_size=8, bucket=2, seed=0)
    model = load_classifier(tiny_model_dir, LABELS)
    init_head(model, prefix="classifier", seed=0, std=0.02)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[bool, dict[str, bool]]] = []
    hook = model.register_forward_pre_hook(
        lambda mod, args: seen.append(
            (mod.training, {n: p.requires_grad for n, p in mod.named_parameters()})
        )
    )
    model.train()
    linear_probe(
        model, encoded, targets, order, prefix="classifier", lr=1e-2, weight_decay=0.01, warmup=0.25
    )
    hook.remove()

    # during every probe step: eval mode (no dropout), only the head asks for gradients
    assert len(seen) == 4
    for training, flags in seen:
        assert not training
        assert {n for n, f in flags.items() if f} == {"classifier.weight", "classifier.bias"}
    # afterwards: the body is bit-for-bit unchanged and never got a gradient; flags restored
    after = model.state_dict()
    body = [k for k in after if not k.startswith("classifier")]
    assert body and all(torch.equal(before[k], after[k]) for k in body)
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("classif"))
    assert model.training and all(p.requires_grad for p in model.parameters())

    # reference: logistic regression on features computed once from the frozen body
    # (BERT's logits are classifier(dropout(pooler_output)); dropout is off in eval mode)
    ref_model = load_classifier(tiny_model_dir, LABELS).eval()
    init_head(ref_model, prefix="classifier", seed=0, std=0.02)
    head = torch.nn.Linear(16, 3)
    head.load_state_dict({"weight": before["classifier.weight"], "bias": before["classifier.bias"]})
    opt = torch.optim.AdamW(
        [
            {"params": [head.weight], "weight_decay": 0.01},
            {"params": [head.bias], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: linear_schedule(s, steps=4, warmup=0.25)
    )
    for idx in order:
        with torch.no_grad():
            features = ref_model.bert(**collate(encoded, idx, 0)).pooler_output  # (8, 16)
        torch.nn.functional.cross_entropy(head(features), targets[idx]).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    torch.testing.assert_close(after["classifier.weight"], head.weight.detach())
    torch.testing.assert_close(after["classifier.bias"], head.bias.detach())


@pytest.fixture(scope="module")
def lp_and_ft(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plain member, an LP-FT member with the same seeds, and the plain member again
    with checkpoints at a quarter and half of its 4 steps."""
    root = tmp_path_factory.mktemp("members")
    probe = LinearProbe(examples=32, lr=1e-2)
    saving = TrainConfig(examples=32, batch_size=8, lr=1e-3, bucket=2, checkpoints=(0.25, 0.5))
    return {
        "ft": _train(tiny_model_dir, root / "ft"),
        "lp": _train(tiny_model_dir, root / "lp", probe=probe),
        "ckpt": _train(tiny_model_dir, root / "ckpt", saving),
    }


def test_lp_ft_member_differs_from_a_finetuned_one(lp_and_ft: dict[str, Path]) -> None:
    ft, lp = load_file(str(lp_and_ft["ft"])), load_file(str(lp_and_ft["lp"]))
    assert ft.keys() == lp.keys()
    assert not torch.equal(ft["classifier.weight"], lp["classifier.weight"])
    # the body moves differently when fine-tuning starts from a probed head
    assert not torch.equal(
        ft["bert.encoder.layer.0.attention.self.query.weight"],
        lp["bert.encoder.layer.0.attention.self.query.weight"],
    )
    ft_meta = json.loads(lp_and_ft["ft"].with_suffix(".json").read_text())
    lp_meta = json.loads(lp_and_ft["lp"].with_suffix(".json").read_text())
    assert (ft_meta["recipe_kind"], ft_meta["probe"]) == ("finetune", None)
    assert lp_meta["recipe_kind"] == "lp-ft"
    assert {k: lp_meta["probe"][k] for k in ("examples", "lr", "steps")} == {
        "examples": 32,
        "lr": 1e-2,
        "steps": 4,  # 32 examples // batch 8
    }
    assert lp_meta["step"] == 4 and ft_meta["recipe"] != lp_meta["recipe"]
    assert ft_meta["recipe"] == "8c37a55f8a3c87e1"  # the pinned plain fingerprint


def test_probe_must_take_a_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.arms\[a\].probe_examples"):
        _train(tiny_model_dir, tmp_path, probe=LinearProbe(examples=4))


# ---- checkpoints along training -----------------------------------------------------


def test_checkpoint_steps_round_and_stay_inside() -> None:
    # 10 steps: 0.5 → 5; 0.25 → 2.5 → 3 (half up); 0.26 → 2.6 → 3 (duplicate);
    # 0.01 → 0.1 → 0 → raised to 1; 0.99 → 9.9 → 10 → lowered to 9 (10 is the member)
    cfg = TrainConfig(examples=320, batch_size=32, checkpoints=(0.5, 0.25, 0.26, 0.01, 0.99))
    assert checkpoint_steps(cfg) == [1, 3, 5, 9]
    assert checkpoint_steps(TrainConfig(examples=32, batch_size=32, checkpoints=(0.5,))) == []
    assert checkpoint_steps(TrainConfig()) == []
    paths = checkpoint_paths(Path("out"), "seed-00", [3, 5])
    assert paths == [
        Path("out/checkpoints/seed-00@3.safetensors"),
        Path("out/checkpoints/seed-00@5.safetensors"),
    ]


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.25])
def test_checkpoint_fractions_must_be_inside_the_run(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"train\.checkpoints"):
        TrainConfig(checkpoints=(0.5, bad))


def test_checkpoints_are_written_with_sidecars(lp_and_ft: dict[str, Path]) -> None:
    out = lp_and_ft["ckpt"].parent
    member = json.loads(lp_and_ft["ckpt"].with_suffix(".json").read_text())
    # 4 steps: 0.25 → step 1, 0.5 → step 2
    paths = checkpoint_paths(out, "m", [1, 2])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "m@1.json",
        "m@1.safetensors",
        "m@2.json",
        "m@2.safetensors",
    ]
    for step, path in zip([1, 2], paths, strict=True):
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["id"] == f"m@{step}" and meta["step"] == step
        assert meta["checkpoint_of"] == "m"
        same = ("arm", "head_seed", "data_seed", "recipe", "recipe_kind", "base", "config")
        assert {k: meta[k] for k in same} == {k: member[k] for k in same}
    assert member["step"] == 4 and "checkpoint_of" not in member
    assert is_trained(out, "m", member["recipe"], checkpoints=[1, 2])


def test_checkpoints_leave_the_final_weights_alone(lp_and_ft: dict[str, Path]) -> None:
    plain, saving = load_file(str(lp_and_ft["ft"])), load_file(str(lp_and_ft["ckpt"]))
    assert plain.keys() == saving.keys()
    assert all(torch.equal(plain[k], saving[k]) for k in plain)


def test_checkpoint_one_is_the_weights_after_one_step(
    tiny_model_dir: Path, lp_and_ft: dict[str, Path]
) -> None:
    out = lp_and_ft["ckpt"].parent
    first, second = (load_file(str(p)) for p in checkpoint_paths(out, "m", [1, 2]))
    # reference: one AdamW step by hand on the first batch of data seed 0; lr factor at
    # step 0 is 1.0 (4 steps × 10 % warm-up → 1 warm-up step: (0 + 1) / 1)
    encoded, targets, lengths = _encoded(tiny_model_dir)
    idx = batch_order(lengths, steps=4, batch_size=8, bucket=2, seed=0)[0]
    model = load_classifier(tiny_model_dir, LABELS)
    init_head(model, prefix="classifier", seed=0, std=0.02)
    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ],
        lr=1e-3 * linear_schedule(0, steps=4, warmup=0.1),
    )
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # dropout masks come from the data seed
        logits = model(**collate(encoded, idx, 0)).logits
        torch.nn.functional.cross_entropy(logits, targets[idx]).backward()
    opt.step()
    ref = model.state_dict()
    for k in first:
        torch.testing.assert_close(first[k], ref[k])
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])


def test_a_missing_checkpoint_means_not_trained(tiny_model_dir: Path, tmp_path: Path) -> None:
    saving = TrainConfig(examples=32, batch_size=8, lr=1e-3, bucket=2, checkpoints=(0.5,))
    path = _train(tiny_model_dir, tmp_path, saving)
    fingerprint = json.loads(path.with_suffix(".json").read_text())["recipe"]
    assert is_trained(tmp_path, "m", fingerprint, checkpoints=[2])
    assert not is_trained(tmp_path, "m", fingerprint, checkpoints=[1, 2])  # never asked for
    (ckpt,) = checkpoint_paths(tmp_path, "m", [2])
    ckpt.unlink()
    assert not is_trained(tmp_path, "m", fingerprint, checkpoints=[2])
    assert is_trained(tmp_path, "m", fingerprint)  # the member alone is still complete
    stamp = path.stat().st_mtime_ns
    _train(tiny_model_dir, tmp_path, saving)  # retrains, checkpoint included
    assert ckpt.is_file() and path.stat().st_mtime_ns != stamp
    assert is_trained(tmp_path, "m", fingerprint, checkpoints=[2])


def test_population_keeps_members_and_checkpoints_apart(lp_and_ft: dict[str, Path]) -> None:
    from modeconn.population.members import Population

    out = lp_and_ft["ckpt"].parent
    assert Population.from_dir(out).ids == ("m",)  # the checkpoints folder is not a member
    ckpts = Population.from_dir(out / "checkpoints")
    assert ckpts.ids == ("m@1", "m@2")
    for mid, step in (("m@1", 1), ("m@2", 2)):
        meta = ckpts[mid].meta
        assert (meta.step, meta.arm, meta.head_seed, meta.data_seed) == (step, "a", 0, 0)
        assert meta.extra["checkpoint_of"] == "m"


def test_clean_partial_looks_in_the_checkpoints_folder(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".m@1.safetensors.tmp-7").write_bytes(b"x")
    (tmp_path / "checkpoints" / "m@1.safetensors").write_bytes(b"x")
    assert clean_partial(tmp_path) == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["m@1.safetensors"]


# ---- the study file -----------------------------------------------------------------


def _study_dict(model_dir: Path, data_root: Path, out: Path) -> dict:
    d = tiny_study_dict(model_dir, data_root, out, members=1, examples=32)
    d["train"]["checkpoints"] = [0.5]
    d["train"]["arms"][1].update({"recipe": "lp-ft", "probe_lr": 0.01})
    return d


def test_study_parses_lp_ft_arms_and_checkpoints(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    study = parse_study(_study_dict(tiny_model_dir, data_root, tmp_path / "out"))
    assert study.train is not None
    recipe = study.train.recipe(64)
    assert recipe.checkpoints == (0.5,) and checkpoint_steps(recipe) == [1]  # 32 // 16 = 2 steps
    assert [a.recipe for a in study.train.arms] == ["finetune", "lp-ft"]
    plans = StudyRunner(study, progress=False).member_plans()
    assert [p.probe for p in plans] == [None, LinearProbe(examples=32, lr=0.01)]  # examples default


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"checkpoints": [0]}, r"train\.checkpoints"),
        ({"checkpoints": [0.5, 1]}, r"train\.checkpoints"),
        ({"checkpoints": [2.0]}, r"train\.checkpoints"),
        ({"arms": [{"name": "s", "members": 1, "data": "mnli", "probe_lr": 0.1}]}, "probe_lr"),
        (
            {
                "arms": [
                    {
                        "name": "s",
                        "members": 1,
                        "data": "mnli",
                        "recipe": "lp-ft",
                        "probe_examples": 8,
                    }
                ]
            },
            r"train.arms\[s\].probe_examples",
        ),
        ({"arms": [{"name": "s", "members": 1, "data": "mnli", "recipe": "lpft"}]}, "recipe"),
    ],
)
def test_study_rejects_bad_training_options(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path, edit: dict, named: str
) -> None:
    d = _study_dict(tiny_model_dir, data_root, tmp_path / "out")
    d["train"].update(edit)
    with pytest.raises(ConfigError, match=named):
        parse_study(d)


def test_runner_trains_checkpoints_and_resumes(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    study = parse_study(_study_dict(tiny_model_dir, data_root, tmp_path / "out"))
    said: list[str] = []
    paths = StudyRunner(study, progress=False, say=said.append).train()
    out = study.members_dir()
    assert [p.name for p in paths] == ["seed-00.safetensors", "aug-00.safetensors"]
    names = sorted(p.name for p in (out / "checkpoints").glob("*.safetensors"))
    assert names == ["aug-00@1.safetensors", "seed-00@1.safetensors"]
    assert json.loads(paths[1].with_suffix(".json").read_text())["recipe_kind"] == "lp-ft"
    StudyRunner(study, progress=False, say=said.append).train()  # nothing left to do
    assert said == [f"training 2 of 2 members into {out}"]
    (out / "checkpoints" / "aug-00@1.safetensors").unlink()
    StudyRunner(study, progress=False, say=said.append).train()
    assert said[-1] == f"training 1 of 2 members into {out}"
    assert (out / "checkpoints" / "aug-00@1.safetensors").is_file()


def test_pretrained_identity_follows_content_not_location(tmp_path: Path) -> None:
    """The same checkpoint in two folders fingerprints the same; one changed byte does not."""
    from modeconn.population.train import pretrained_identity

    a, b = tmp_path / "x" / "mini", tmp_path / "y" / "mini"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "config.json").write_text('{"hidden_size": 4}')
        (d / "model.safetensors").write_bytes(bytes(range(200)))
    assert pretrained_identity(a) == pretrained_identity(b)
    assert pretrained_identity(a).startswith("mini@")
    (b / "model.safetensors").write_bytes(bytes(range(1, 201)))
    assert pretrained_identity(a) != pretrained_identity(b)


def test_a_member_of_the_path_fingerprint_is_adopted(tmp_path: Path) -> None:
    """A member trained when the checkpoint was fingerprinted by its path is reused: its
    sidecar takes the content fingerprint; a member of another recipe is not."""
    from modeconn.population.train import adopt_trained, is_trained, member_paths

    weights, sidecar = member_paths(tmp_path, "seed-00")
    weights.write_bytes(b"weights")
    sidecar.write_text(json.dumps({"id": "seed-00", "recipe": "old"}))
    assert not adopt_trained(tmp_path, "seed-00", "new", "other")
    assert json.loads(sidecar.read_text())["recipe"] == "old"
    assert adopt_trained(tmp_path, "seed-00", "new", "old")
    assert json.loads(sidecar.read_text()) == {"id": "seed-00", "recipe": "new"}
    assert is_trained(tmp_path, "seed-00", "new")
