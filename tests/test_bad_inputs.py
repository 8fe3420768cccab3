"""Bad inputs, one per case: a named error, one line naming the thing, exit 2, store intact.

Every case starts from a sound setup — a tiny study over three saved members
(`population:`, so nothing trains), and a results store of that study already in its
output folder — breaks one thing, runs the command line through ``modeconn.cli.main``,
and checks

* the error is the case's ``ModeconnError`` subclass (recorded as it leaves the command),
* its message is one line holding every string the case names (file, key, shape, field,
  split, id),
* the exit status is 2,
* the store in the output folder is byte for byte what it was (and, when it is a
  modeconn store, still passes its integrity check with the same row counts).

Every case fails before anything is trained or swept (but for the report cases, which
sweep the study first so that there is something to report).

``docs/errors.md`` is generated from these cases: its table lists every case with the
line it printed (paths written as ``{root}``, ``{data}``, ``{model}``), and
``test_errors_doc_*`` check that it says what the battery does. After changing a case or a
message, rewrite it with ``MODECONN_WRITE_DOCS=1 pytest tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import LABELS, tiny_study_dict
from safetensors.torch import load_file, save_file

import modeconn.cli as cli
from modeconn.errors import (
    ConfigError,
    DataError,
    ModeconnError,
    PopulationError,
    StoreError,
    UnsafeCheckpointError,
)
from modeconn.store import MemberPoint, PathPoint, Store, UnitKey

N_MEMBERS = 3
STORE = "results.sqlite"


# --------------------------------------------------------------------------- the sound setup


@pytest.fixture(scope="module")
def member_files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three slightly different copies of the tiny model, as m0..m2.safetensors."""
    from modeconn.models.hf import load_classifier

    model = load_classifier(tiny_model_dir, LABELS)
    out = tmp_path_factory.mktemp("members")
    for i in range(N_MEMBERS):
        state = {
            k: (v + 0.01 * i if v.is_floating_point() else v).contiguous()
            for k, v in model.state_dict().items()
        }
        save_file(state, str(out / f"m{i}.safetensors"))
    return out


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of study 'tiny' holding 2 member points and one 3-point unit."""
    path = tmp_path_factory.mktemp("store") / STORE
    losses = np.linspace(0.1, 0.9, 4, dtype=np.float32)
    common = dict(split="mnli#0123456789ab", sample_seed=0, sample_size=4)
    with Store(path, study="tiny") as store:
        store.write_member_points(
            [
                MemberPoint(
                    member_id=f"m{i}",
                    member_hash=f"h{i}",
                    loss=0.5,
                    metrics={"accuracy": 0.75},
                    example_losses=losses,
                    n_examples=4,
                    **common,
                )
                for i in range(2)
            ]
        )
        ends = dict(member_a="m0", member_b="m1", hash_a="h0", hash_b="h1", path="linear")
        key = UnitKey(**ends, grid="linear:3", **common)
        store.write_unit(
            key,
            [
                PathPoint(
                    **ends,
                    grid="linear:3",
                    alpha=a,
                    loss=0.5 + a,
                    metrics={"accuracy": 0.7},
                    example_losses=losses,
                    n_examples=4,
                    **common,
                )
                for a in (0.0, 0.5, 1.0)
            ],
        )
        assert store.counts() == {
            "member_points": 2,
            "path_points": 3,
            "units": 1,
            "analysis_values": 0,
        }
    return path


@dataclass
class Env:
    """One case's folder: the study file, its members, its output folder with a store."""

    root: Path
    study: Path
    members: Path
    out: Path

    @property
    def store(self) -> Path:
        return self.out / STORE

    def run(self) -> list[str]:
        return ["run", str(self.study), "--quiet"]

    def edit(self, change: Callable[[dict[str, Any]], object]) -> None:
        data = yaml.safe_load(self.study.read_text())
        change(data)
        self.study.write_text(yaml.safe_dump(data))

    def set(self, dotted: str, value: Any) -> None:
        """Set (or, with value DROP, delete) one field of the study, e.g. 'paths.points'."""

        def change(data: dict[str, Any]) -> None:
            *parents, last = dotted.split(".")
            node = data
            for name in parents:
                node = node[name]
            if value is DROP:
                del node[last]
            else:
                node[last] = value

        self.edit(change)

    def member(self, i: int) -> dict[str, torch.Tensor]:
        return load_file(str(self.members / f"m{i}.safetensors"))

    def save(self, i: int, state: dict[str, torch.Tensor]) -> None:
        save_file(state, str(self.members / f"m{i}.safetensors"))

    def names(self) -> dict[str, str]:
        return {"root": str(self.root), "members": str(self.members), "out": str(self.out)}


DROP = object()


@pytest.fixture
def env(
    tmp_path: Path,
    member_files: Path,
    store_file: Path,
    tiny_model_dir: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Env:
    monkeypatch.delenv("MODECONN_DATA", raising=False)  # the study's data_root decides
    members = tmp_path / "members"
    shutil.copytree(member_files, members)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(store_file, out / STORE)
    study = tiny_study_dict(tiny_model_dir, data_root, out)
    del study["train"]
    study["population"] = {"dir": str(members)}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    return Env(tmp_path, path, members, out)


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Bad:
    name: str
    make: Callable[[Env], list[str]]  # breaks one thing, returns the command line
    error: type[ModeconnError] | type[OSError]  # OSError: a path the system refused
    names: tuple[str, ...]  # each must appear in the message; {members} {out} {root} expand
    check: Callable[[Env], None] | None = None  # anything else to verify afterwards
    untouched: bool = True  # the output folder is byte for byte as it was (else: still sound)


def _with(*steps: Callable[[Env], object]) -> Callable[[Env], list[str]]:
    """Apply the steps, then `modeconn run STUDY`."""

    def make(env: Env) -> list[str]:
        for step in steps:
            step(env)
        return env.run()

    return make


def _set(dotted: str, value: Any) -> Callable[[Env], None]:
    return lambda env: env.set(dotted, value)


def _write(relative: str, content: str | bytes) -> Callable[[Env], None]:
    def step(env: Env) -> None:
        path = env.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return step


def _change_member(i: int, change: Callable[[dict[str, torch.Tensor]], object]) -> Callable:
    def step(env: Env) -> None:
        state = env.member(i)
        change(state)
        env.save(i, state)

    return step


def _poke(key: str, value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        state[key] = state[key].clone()
        state[key].view(-1)[3] = value

    return change


def _wrong_head(state: dict[str, torch.Tensor]) -> None:
    state["classifier.weight"] = torch.zeros(2, 16)
    state["classifier.bias"] = torch.zeros(2)


class _Evil:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def _evil_member(env: Env) -> None:
    torch.save({"classifier.weight": _Evil(env.root / "pwned")}, env.members / "evil.pt")


def _not_pwned(env: Env) -> None:
    assert not (env.root / "pwned").exists(), "the pickle's code ran"


def _empty_members(env: Env) -> None:
    for p in env.members.iterdir():
        p.unlink()


def _only_one_member(env: Env) -> None:
    for i in range(1, N_MEMBERS):
        (env.members / f"m{i}.safetensors").unlink()


def _truncate(i: int) -> Callable[[Env], None]:
    def step(env: Env) -> None:
        path = env.members / f"m{i}.safetensors"
        path.write_bytes(path.read_bytes()[:5000])

    return step


def _members_list(*names: str) -> Callable[[Env], None]:
    return lambda env: env.set("population", {"members": [str(env.members / n) for n in names]})


def _store_bytes(content: bytes) -> Callable[[Env], None]:
    return lambda env: env.store.write_bytes(content)


def _foreign_sqlite(env: Env) -> None:
    env.store.unlink()
    conn = sqlite3.connect(env.store)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    conn.execute("INSERT INTO accounts (owner) VALUES ('alice')")
    conn.commit()
    conn.close()


def _newer_store(env: Env) -> None:
    conn = sqlite3.connect(env.store)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


def _damage_page(index: int) -> Callable[[Env], None]:
    """Overwrite the b-tree header of one page (4 KiB each; -1 is the last one)."""

    def step(env: Env) -> None:
        data = bytearray(env.store.read_bytes())
        start = (index % (len(data) // 4096)) * 4096
        data[start : start + 16] = b"\xee" * 16
        env.store.write_bytes(bytes(data))

    return step


def _model_dir_without_config(env: Env) -> None:
    folder = env.root / "not-a-model"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n")
    env.set("model.pretrained", str(folder))


def _malformed_tsv(env: Env) -> None:
    path = env.root / "bad.tsv"
    path.write_text("premise\thypothesis\tgold_label\na\tb\tneutral\nc\td\tneutral\textra\n")
    env.set("splits.mnli.path", str(path))


def _short_row_tsv(env: Env) -> None:
    path = env.root / "short.tsv"
    path.write_text("premise\thypothesis\tgold_label\na\tb\tneutral\nc\tneutral\n")
    env.set("splits.mnli.path", str(path))


def _empty_tsv(env: Env) -> None:
    (env.root / "empty.tsv").write_text("")
    env.set("splits.hans_sub.path", str(env.root / "empty.tsv"))


def _duplicate_split_key(env: Env) -> None:
    """A second `mnli:` under `splits:`, as a hand-edited study file gets one."""
    text = env.study.read_text()
    twin = "splits:\n  mnli:\n    path: hans/eval.tsv\n    text_a: sentence1\n"
    assert "\nsplits:\n" in text
    env.study.write_text(text.replace("\nsplits:\n", "\n" + twin, 1))


def _model_copy(env: Env, change: Callable[[Path], object]) -> None:
    """A copy of the study's model folder, changed, as model.pretrained."""
    study = yaml.safe_load(env.study.read_text())
    folder = env.root / "model"
    shutil.copytree(study["model"]["pretrained"], folder)
    change(folder)
    env.set("model.pretrained", str(folder))


def _no_tokenizer(folder: Path) -> None:
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)


def _config_json(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "config.json").write_text(text)


def _pickled_model(env: Env) -> None:
    """model.pretrained whose weights are a pytorch_model.bin that runs a command."""

    def change(folder: Path) -> None:
        (folder / "model.safetensors").unlink()
        torch.save(
            {"bert.pooler.dense.bias": _Evil(env.root / "pwned")}, folder / "pytorch_model.bin"
        )

    _model_copy(env, change)
    # training loads the pretrained weights (the sweep only needs the architecture)
    study = tiny_study_dict(Path("."), Path("."), Path("."))
    env.set("train", dict(study["train"], examples=16))
    env.set("population", DROP)


def _member_dir_other_label_order(env: Env) -> None:
    """A member saved as a Hugging Face directory whose id2label is in another order."""
    import json

    folder = env.members / "m3"
    folder.mkdir()
    state = {k: v + 0.03 if v.is_floating_point() else v for k, v in env.member(2).items()}
    save_file(state, str(folder / "model.safetensors"))
    model = Path(yaml.safe_load(env.study.read_text())["model"]["pretrained"])
    config = json.loads((model / "config.json").read_text())
    config["id2label"] = {"0": "contradiction", "1": "entailment", "2": "neutral"}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (folder / "config.json").write_text(json.dumps(config))


def _reorder_id2label(folder: Path) -> None:
    import json

    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "neutral", "1": "entailment", "2": "contradiction"}
    (folder / "config.json").write_text(json.dumps(config))


def _duplicate_member(env: Env) -> None:
    shutil.copy(env.members / "m2.safetensors", env.members / "m3.safetensors")


def _curves(**changes: Any) -> Callable[[Env], None]:
    """An `analyses.curves` section, sound but for `changes`."""
    section = {
        "pairs": [["m0", "m1"]],
        "split": "mnli_train",
        "eval_splits": ["mnli", "hans_lo"],
        "steps": 2,
        "batch_size": 4,
        "points": 3,
    }
    return _set("analyses", {"curves": {**section, **changes}})


def _sound_run(env: Env) -> None:
    """Sweep the study for real (a few seconds), so that `report` has a store to analyse."""
    assert cli.main(env.run()) == 0


def _report_out(where: str) -> Callable[[Env], list[str]]:
    def make(env: Env) -> list[str]:
        _sound_run(env)
        return ["report", str(env.out), "--out", str(env.root / where)]

    return make


def _plan(*extra: str, missing_dir: bool = False) -> Callable[[Env], list[str]]:
    def make(env: Env) -> list[str]:
        if missing_dir:
            env.set("population", {"dir": str(env.root / "elsewhere")})
        return ["plan", str(env.study), *extra]

    return make


def _fifo(relative: str) -> Callable[[Env], Path]:
    """A named pipe at `relative` (reading it would wait for a writer forever)."""

    def step(env: Env) -> Path:
        path = env.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        return path

    return step


def _folder(relative: str) -> Callable[[Env], Path]:
    def step(env: Env) -> Path:
        path = env.root / relative
        path.mkdir(parents=True)
        return path

    return step


def _billion_laughs(levels: int = 9) -> str:
    """The classic: `levels` levels of 9 aliases each, 9**levels strings once expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _many_aliases(env: Env) -> None:
    text = env.study.read_text() + "notes: &n x\nmore: [" + ", ".join(["*n"] * 1001) + "]\n"
    env.study.write_text(text)


def _recorded_report_dir(
    value: str, *, link_report_out: bool = False
) -> Callable[[Env], list[str]]:
    """Sweep, then record `value` as the stored study's report_dir, as a crafted store would;
    with `link_report_out`, the store's folder also holds `report` → a folder elsewhere."""

    def make(env: Env) -> list[str]:
        _sound_run(env)
        with Store(env.store, create=False) as store:
            study = json.loads(store.get_meta("study") or "{}")
            store.set_meta("study", json.dumps(dict(study, report_dir=value)))
        if link_report_out:
            (env.root / "elsewhere").mkdir()
            shutil.rmtree(env.out / "report")  # the run's own report
            (env.out / "report").symlink_to(env.root / "elsewhere")
        return ["report", str(env.out)]

    return make


def _layerwise(**options: Any) -> Callable[[Env], None]:
    """Ask for layer-wise connectivity on the study's path split with `options`."""
    return _set("analyses", {"layerwise": {"split": "mnli", **options}})


def _nothing_elsewhere(env: Env) -> None:
    assert not any((env.root / "elsewhere").iterdir()), "the report was written outside"


def _spawn(**section: Any) -> Callable[[Env], None]:
    """A `train` recipe of 4 steps (64 examples, batch 16) in place of the population, and
    an ``analyses.spawn`` section with `section`."""

    def step(env: Env) -> None:
        env.set("population", DROP)
        env.set(
            "train",
            {
                "examples": 64,
                "batch_size": 16,
                "lr": 1e-3,
                "arms": [{"name": "seed", "members": 3, "data": "mnli_train"}],
            },
        )
        env.set("analyses", {"spawn": {"steps": [0, 2], "split": "mnli", **section}})

    return step  # fmt: skip


# ---- cue datasets and counterfactual sets (Lubana et al. 2023)
DIGITS = {"kind": "digits", "sample_size": 8}
CUE_SETS = {"clean": "d_clean", "cue": "d_cue", "random_cue": "d_random",
            "random_image": "d_image"}  # fmt: skip


def _cue_study(env: Env, **sets: str) -> None:
    """Four digits splits playing the four sets, and `analyses.mechanisms` naming them
    (with `sets` overriding the roles)."""

    def change(data: dict[str, Any]) -> None:
        data["splits"].update(
            d_clean={**DIGITS},
            d_cue={**DIGITS, "cue": "label"},
            d_random={**DIGITS, "cue": "random"},
            d_image={**DIGITS, "cue": "random_image"},
        )
        data.setdefault("analyses", {})["mechanisms"] = {"sets": {**CUE_SETS, **sets}}

    env.edit(change)


def _unknown_recipe(env: Env) -> None:
    def change(data: dict[str, Any]) -> None:
        del data["population"]
        data["train"] = {"arms": [{"name": "a", "members": 2, "data": "mnli_train",
                                   "recipe": "magic"}]}  # fmt: skip

    env.edit(change)


def _text_arm_with_vary_init(env: Env) -> None:
    def change(data: dict[str, Any]) -> None:
        del data["population"]
        data["train"] = {"arms": [{"name": "a", "members": 2, "data": "mnli_train",
                                   "vary": "init"}]}  # fmt: skip

    env.edit(change)


def _two_members_in_all(env: Env) -> None:
    def change(data: dict[str, Any]) -> None:
        del data["population"]
        data["train"] = {"arms": [{"name": "a", "members": 2, "data": "mnli_train"}]}

    env.edit(change)


def _arm_examples_below_a_batch(env: Env) -> None:
    def change(data: dict[str, Any]) -> None:
        del data["population"]
        data["train"] = {"batch_size": 32, "arms": [
            {"name": "a", "members": 3, "data": "mnli_train", "examples": 16}]}  # fmt: skip

    env.edit(change)


def _from_arm_with_vary_init(env: Env) -> None:
    def change(data: dict[str, Any]) -> None:
        del data["population"]
        data["train"] = {"arms": [
            {"name": "a", "members": 2, "data": "mnli_train"},
            {"name": "b", "members": 2, "data": "mnli_train", "recipe": "ft-s", "from": "a",
             "vary": "init"}]}  # fmt: skip

    env.edit(change)


def _cnn_option(**options: Any) -> Callable[[Env], None]:
    """The study's model a `kind: cnn` with `options` beside its widths."""

    def step(env: Env) -> None:
        labels = yaml.safe_load(env.study.read_text())["model"]["label_order"]
        env.set("model", {"kind": "cnn", "label_order": labels,
                          "options": {"widths": [4], **options}})  # fmt: skip

    return step


CASES = [
    # ---- members
    Bad("member-wrong-shape", _with(_change_member(2, _wrong_head)), PopulationError,
        ("'m2'", "classifier.bias", "(2,)", "(3,)")),
    Bad("member-nan", _with(_change_member(1, _poke("classifier.weight", float("nan")))),
        PopulationError, ("'m1'", "m1.safetensors", "'classifier.weight'", "NaN")),
    Bad("member-inf", _with(_change_member(0, _poke("bert.pooler.dense.bias", float("inf")))),
        PopulationError, ("'m0'", "'bert.pooler.dense.bias'", "inf")),
    Bad("member-missing-key",
        _with(_change_member(1, lambda s: s.pop("bert.pooler.dense.weight"))),
        PopulationError, ("'m1'", "lacks key 'bert.pooler.dense.weight'", "(16, 16)")),
    Bad("member-extra-key",
        _with(_change_member(1, lambda s: s.update({"bert.adapter.weight": torch.zeros(4)}))),
        PopulationError, ("'m1'", "'bert.adapter.weight'", "(4,)")),
    Bad("member-malicious-pickle", _with(_evil_member), UnsafeCheckpointError,
        ("'evil'", "evil.pt", "weights_only", "safetensors"), check=_not_pwned),
    Bad("member-pickle-not-state-dict",
        _with(lambda env: torch.save([1, 2, 3], env.members / "m3.pt")),
        PopulationError, ("'m3'", "m3.pt", "list", "not a state dict")),
    Bad("member-corrupt-safetensors", _with(_write("members/m1.safetensors", b"\x07garbage")),
        PopulationError, ("'m1'", "m1.safetensors", "not a readable safetensors file")),
    Bad("member-truncated-safetensors", _with(_truncate(2)), PopulationError,
        ("'m2'", "m2.safetensors", "not a readable safetensors file")),
    Bad("members-dir-empty", _with(_empty_members), PopulationError,
        ("{members}", "has no members")),
    Bad("members-duplicate-id", _with(_write("members/m1.json", '{"id": "m0"}')),
        PopulationError, ("'m0'", "m0.safetensors", "m1.safetensors")),
    Bad("member-sidecar-not-json", _with(_write("members/m2.json", "{head_seed: 0")),
        PopulationError, ("m2.json", "not readable JSON")),
    Bad("member-sidecar-wrong-type", _with(_write("members/m0.json", '{"head_seed": "zero"}')),
        PopulationError, ("m0.json", "'head_seed'", "'zero'")),
    Bad("member-file-missing", _with(_members_list("m0.safetensors", "m9.safetensors")),
        PopulationError, ("m9.safetensors", "does not exist")),
    Bad("member-wrong-suffix",
        _with(_write("members/m3.txt", "weights"), _members_list("m0.safetensors", "m3.txt")),
        PopulationError, ("m3.txt", "'.txt'")),
    Bad("members-fewer-than-two", _with(_only_one_member), ConfigError,
        ("at least 2 members", "found 1", "{members}")),
    Bad("member-label-order-differs", _with(_member_dir_other_label_order), ConfigError,
        ("member 'm3'", "m3/config.json", "[contradiction, entailment, neutral]",
         "model.label_order is [entailment, neutral, contradiction]")),
    Bad("model-label-order-differs", _with(lambda env: _model_copy(env, _reorder_id2label)),
        ConfigError, ("model.pretrained", "model/config.json",
                      "[neutral, entailment, contradiction]", "model.label_order")),
    Bad("members-same-weights", _with(_duplicate_member), PopulationError,
        ("members 'm2' ({members}/m2.safetensors) and 'm3' ({members}/m3.safetensors)",
         "have the same weights", "remove one")),
    Bad("members-dir-is-a-file", _with(lambda env: env.set("population.dir", str(env.study))),
        PopulationError, ("{root}/tiny.yaml", "is a file, not a folder")),
    Bad("member-is-a-fifo",
        _with(_fifo("members/m9.safetensors"), _members_list("m0.safetensors", "m9.safetensors")),
        PopulationError, ("{members}/m9.safetensors", "is a named pipe (FIFO)")),
    # ---- data
    Bad("split-empty-after-filters",
        _with(_set("splits.hans_lo.where", {"heuristic": ["lexical_overlapp"]})),
        DataError, ("split 'hans_lo'", "hans/eval.tsv", "no rows left")),
    Bad("split-unknown-label", _with(_set("splits.hans_lo.classes", DROP)), DataError,
        ("split 'hans_lo'", "'non-entailment'", "label_values")),
    Bad("split-class-unknown-model-label",
        _with(_set("splits.hans_sub.classes", {"entailment": ["entailed"], "no": ["neutral"]})),
        ConfigError, ("split 'hans_sub'", "'entailed'", "label_order")),
    Bad("split-missing-column", _with(_set("splits.mnli.text_b", "hypothesis_x")), DataError,
        ("split 'mnli'", "'hypothesis_x'", "mnli/dev_matched.tsv")),
    Bad("split-missing-file", _with(_set("splits.hans_sub.path", "hans/missing.tsv")), DataError,
        ("split 'hans_sub'", "hans/missing.tsv", "does not exist")),
    Bad("split-malformed-file", _with(_malformed_tsv), DataError,
        ("split 'mnli'", "bad.tsv", "line 3")),
    Bad("split-short-row", _with(_short_row_tsv), DataError,
        ("split 'mnli'", "short.tsv", "line 3", "2 fields", "3")),
    Bad("split-path-is-a-folder",
        _with(lambda env: env.set("splits.mnli.path", str(_folder("data-folder")(env)))),
        DataError, ("split 'mnli'", "{root}/data-folder", "is a folder, not a file")),
    Bad("split-empty-file", _with(_empty_tsv), DataError,
        ("split 'hans_sub'", "empty.tsv", "is empty")),
    Bad("split-bad-rows", _with(_set("splits.mnli.rows", "6000-7000")), ConfigError,
        ("split 'mnli'", "rows", "'6000-7000'", "start:stop")),
    Bad("split-cue-fraction-outside",
        _with(_set("splits.mnli.cue", "label"), _set("splits.mnli.cue_fraction", 1.5)),
        ConfigError, ("splits.mnli", "cue_fraction", "[0, 1]", "1.5")),
    Bad("split-cue-unknown", _with(_set("splits.mnli.cue", "sometimes")), ConfigError,
        ("splits.mnli.cue", "'random_text'", "'sometimes'")),
    Bad("split-cue-tokens-miscounted",
        _with(_set("splits.mnli.cue", "label"), _set("splits.mnli.cue_tokens", ["apple", "fig"])),
        ConfigError, ("split 'mnli'", "2 words for 3 classes", "splits.mnli.cue_tokens")),
    Bad("split-text-cue-on-digits",
        _with(_set("splits.images", {"kind": "digits", "cue": "random_text"})), ConfigError,
        ("splits.images", "cue: random_text", "digits split cannot hold a text cue")),
    Bad("data-root-missing", _with(_set("data_root", "/nonexistent/data")), ConfigError,
        ("data root", "/nonexistent/data", "MODECONN_DATA")),
    # ---- the study file
    Bad("paths-unknown-split", _with(_set("paths.splits", ["mnli", "hans_xx"])), ConfigError,
        ("paths.splits", "'hans_xx'", "declare it")),
    Bad("basins-unknown-split", _with(_set("basins.ood", ["hans_lo", "hans_zz"])), ConfigError,
        ("basins.ood", "'hans_zz'")),
    Bad("basins-preset-contradicted",
        _with(_set("basins.preset", "paper"), _set("basins.delta", "median")), ConfigError,
        ("basins: preset: paper sets delta to 1.0", "'median'", "Remove basins.delta")),
    Bad("basins-landmarks-with-all-pairs-analysis",
        _with(_set("basins.landmarks", 3), _set("analyses", {"distances": ["euclidean"]})),
        ConfigError, ("basins.landmarks", "analyses.distances needs every pair",
                      "remove analyses.distances or basins.landmarks")),
    Bad("basins-landmarks-too-few", _with(_set("basins.landmarks", 2)), ConfigError,
        ("basins.landmarks", "greater than or equal to 3")),
    Bad("basins-landmark-completion-unknown",
        _with(_set("basins.landmarks", 3), _set("basins.landmark_completion", "mds")),
        ConfigError, ("basins.landmark_completion", "'nystrom' or 'triangle'")),
    Bad("basins-landmark-choice-unknown",
        _with(_set("basins.landmarks", 3), _set("basins.landmark_choice", "maxmin")),
        ConfigError, ("basins.landmark_choice", "'random', 'kmeans++' or 'farthest'")),
    Bad("basins-landmark-completion-without-landmarks",
        _with(_set("basins.landmark_completion", "triangle")), ConfigError,
        ("basins.landmark_completion is set but basins.landmarks is not",
         "set basins.landmarks: m or remove basins.landmark_completion")),
    Bad("paths-tolerance-other-distance",
        _with(_set("paths.tolerance", 0.01), _set("basins.distance", "auc")), ConfigError,
        ("paths.tolerance", "basins.distance is 'auc'", "set basins.distance: convexity_gap")),
    Bad("paths-tolerance-not-positive", _with(_set("paths.tolerance", 0)), ConfigError,
        ("paths.tolerance", "greater than 0")),
    Bad("paths-sequential-tolerance-not-positive",
        _with(_set("paths.sequential", {"tolerance": 0})), ConfigError,
        ("paths.sequential.tolerance", "greater than 0")),
    Bad("paths-sequential-tolerance-missing", _with(_set("paths.sequential", {"block": 8})),
        ConfigError, ("paths.sequential.tolerance", "required")),
    Bad("paths-sequential-block-zero",
        _with(_set("paths.sequential", {"tolerance": 0.05, "block": 0})), ConfigError,
        ("paths.sequential.block", "greater than or equal to 1")),
    Bad("paths-sequential-min-blocks-zero",
        _with(_set("paths.sequential", {"tolerance": 0.05, "min_blocks": 0})), ConfigError,
        ("paths.sequential.min_blocks", "greater than or equal to 1")),
    Bad("paths-sequential-confidence-above-one",
        _with(_set("paths.sequential", {"tolerance": 0.05, "confidence": 1.5})), ConfigError,
        ("paths.sequential.confidence", "less than 1")),
    Bad("paths-sequential-too-few-resamples",
        _with(_set("paths.sequential", {"tolerance": 0.05, "resamples": 5})), ConfigError,
        ("paths.sequential.resamples", "greater than or equal to 10")),
    Bad("paths-sequential-unknown-field",
        _with(_set("paths.sequential", {"tolerance": 0.05, "blocks": 4})), ConfigError,
        ("paths.sequential.blocks", "unknown field")),
    Bad("paths-sequential-never-stops-early",
        _with(_set("paths.sequential", {"tolerance": 0.05, "block": 4096})), ConfigError,
        ("paths.sequential", "block × min_blocks = 4096 × 2", "lower paths.sequential.block")),
    Bad("paths-sequential-affinity-above-one",
        _with(_set("paths.sequential", {"tolerance": 0.05, "block": 2, "affinity": 1.5})),
        ConfigError, ("paths.sequential.affinity", "less than 1")),
    Bad("paths-sequential-affinity-median-staged-landmarks",
        _with(_set("paths.sequential", {"tolerance": 0.05, "block": 2, "affinity": 0.05}),
              _set("basins.landmarks", 3), _set("basins.landmark_choice", "kmeans++")),
        ConfigError, ("paths.sequential.affinity with basins.delta: median",
                      "'kmeans++'", "set basins.delta to a number")),
    Bad("paths-sequential-other-distance",
        _with(_set("paths.sequential", {"tolerance": 0.05, "block": 2}),
              _set("basins.distance", "auc")), ConfigError,
        ("paths.sequential", "basins.distance is 'auc'", "set basins.distance: convexity_gap")),
    Bad("paths-sequential-remote-backend",
        _with(_set("paths.sequential", {"tolerance": 0.05, "block": 2}),
              _set("sweep", {"backend": "process", "workers": 2})), ConfigError,
        ("paths.sequential runs on the local sweep only", "set sweep.backend: local")),
    Bad("study-unknown-field", _with(_set("basins.n_basin", 3)), ConfigError,
        ("basins.n_basin", "unknown field")),
    Bad("study-wrong-field-type", _with(_set("paths.points", "eleven")), ConfigError,
        ("paths.points", "integer", "'eleven'")),
    Bad("study-negative-sample-size", _with(_set("splits.mnli.sample_size", -5)), ConfigError,
        ("splits.mnli.sample_size", "-5")),
    Bad("study-not-yaml", _with(_write("tiny.yaml", "name: [tiny\n  paths: : :\n")),
        ConfigError, ("tiny.yaml", "not valid YAML", "line 2")),
    Bad("study-binary", _with(_write("tiny.yaml", b"\xff\xfe\x00\x01PK\x03\x04")), ConfigError,
        ("tiny.yaml", "not a text file")),
    Bad("study-not-a-mapping", _with(_write("tiny.yaml", "- name: tiny\n- paths: {}\n")),
        ConfigError, ("tiny.yaml", "mapping", "list")),
    Bad("study-file-missing", lambda env: ["run", str(env.root / "nope.yaml")], ConfigError,
        ("nope.yaml", "does not exist")),
    Bad("study-duplicate-key", _with(_duplicate_split_key), ConfigError,
        ("tiny.yaml", "key 'mnli' appears twice", "at line", "and line")),
    Bad("study-is-a-folder", lambda env: ["run", str(_folder("study.yaml")(env))], ConfigError,
        ("{root}/study.yaml", "is a folder, not a file")),
    Bad("study-is-a-fifo", lambda env: ["run", str(_fifo("pipe.yaml")(env))], ConfigError,
        ("{root}/pipe.yaml", "is a named pipe (FIFO), not a file")),
    Bad("study-is-a-device", lambda env: ["run", "/dev/null"], ConfigError,
        ("/dev/null", "is a character device, not a file")),
    Bad("study-too-large", _with(_write("tiny.yaml", "# padding\n" * 500_000)), ConfigError,
        ("tiny.yaml", "too large to be a study", "5,000,000 bytes")),
    Bad("study-billion-laughs", _with(_write("tiny.yaml", _billion_laughs())), ConfigError,
        ("tiny.yaml", "expands to more than 200,000 nodes", "490,329,064 once")),
    Bad("study-nested-too-deep", _with(_write("tiny.yaml", "a: " + "[" * 5000 + "]" * 5000)),
        ConfigError, ("tiny.yaml", "nests deeper than 64 levels", "line 1")),
    Bad("study-too-many-aliases", _with(_many_aliases), ConfigError,
        ("tiny.yaml", "more than 1000 aliases")),
    # ---- spawn time (analyses.spawn)
    Bad("spawn-step-beyond-training", _with(_spawn(steps=[0, 2, 9])), ConfigError,
        ("analyses.spawn.steps", "spawn step 9", "beyond the parent's training (4 steps")),
    Bad("spawn-steps-not-increasing", _with(_spawn(steps=[2, 1])), ConfigError,
        ("analyses.spawn.steps", "strictly increasing", "2 then 1")),
    Bad("spawn-one-child", _with(_spawn(children=1)), ConfigError,
        ("analyses.spawn.children", "at least 2", "got 1")),
    # ---- layer-wise connectivity (analyses.layerwise): refused before anything is swept
    Bad("curvature-unknown-batchnorm-mode",
        _with(_set("analyses", {"curvature": {"split": "mnli", "batchnorm": "running"}})),
        ConfigError, ("analyses.curvature.batchnorm", "'frozen'", "'batch'")),
    Bad("layerwise-unknown-block", _with(_layerwise(blocks=["bert.encoder", "bert.decoder"])),
        ConfigError, ("analyses.layerwise.blocks", "'bert.decoder'", "depth 2",
                      "bert.embeddings, bert.encoder, bert.pooler, classifier")),
    Bad("layerwise-unknown-pair-member", _with(_layerwise(pairs=[["m0", "m7"]])), ConfigError,
        ("analyses.layerwise.pairs", "'m7'", "members: m0, m1, m2")),
    Bad("layerwise-pair-of-one-member", _with(_layerwise(pairs=[["m1", "m1"]])), ConfigError,
        ("analyses.layerwise.pairs", "[m1, m1]", "two different members")),
    Bad("layerwise-predict-even-points", _with(_layerwise(predict=True, points=4)),
        ConfigError, ("analyses.layerwise.points", "odd", "got 4", "use 5")),
    Bad("layerwise-training-without-checkpoints", _with(_layerwise(training=True)),
        ConfigError, ("analyses.layerwise.training", "train.checkpoints", "checkpoints_dir")),
    # ---- the model
    Bad("model-unknown-builtin", _with(_set("model.pretrained", "builtin:bert-huge")),
        ConfigError, ("'builtin:bert-huge'", "not a built-in model")),
    Bad("model-dir-without-config", _with(_model_dir_without_config), ConfigError,
        ("not-a-model", "config.json")),
    Bad("model-without-tokenizer", _with(lambda env: _model_copy(env, _no_tokenizer)),
        ConfigError, ("{root}/model", "tokenizer has 5 tokens", "vocabulary has 30522")),
    Bad("model-config-not-json", _with(lambda env: _model_copy(env, _config_json("{bert"))),
        ConfigError, ("{root}/model", "config.json", "not a valid JSON")),
    Bad("model-unknown-model-type",
        _with(lambda env: _model_copy(env, _config_json('{"model_type": "bert-huge"}'))),
        ConfigError, ("{root}/model", "config.json", "bert-huge")),
    Bad("model-pickled-weights", _with(_pickled_model), UnsafeCheckpointError,
        ("{root}/model/pytorch_model.bin", "never load it with weights_only=False",
         "safetensors"), check=_not_pwned),
    # ---- the store
    Bad("store-of-another-study", _with(_set("name", "tiny-2")), StoreError,
        ("{out}/results.sqlite", "'tiny'", "'tiny-2'")),
    Bad("store-not-sqlite", _with(_store_bytes(b"not a database\n" * 20)), StoreError,
        ("{out}/results.sqlite", "not an SQLite database", "untouched")),
    Bad("store-foreign-sqlite", _with(_foreign_sqlite), StoreError,
        ("{out}/results.sqlite", "another application")),
    Bad("store-newer-schema", _with(_newer_store), StoreError,
        ("{out}/results.sqlite", "schema version 99")),
    Bad("store-damaged-page", _with(_damage_page(1)), StoreError,
        ("{out}/results.sqlite", "is damaged", "malformed")),
    Bad("status-damaged-page",
        lambda env: (_damage_page(-1)(env), ["status", str(env.out)])[1],
        StoreError, ("{out}/results.sqlite", "is damaged", "malformed")),
    Bad("status-corrupt-store",
        lambda env: (_store_bytes(b"\x00" * 4096)(env), ["status", str(env.out)])[1],
        StoreError, ("{out}/results.sqlite", "not an SQLite database")),
    Bad("export-damaged-store",
        lambda env: (_damage_page(1)(env), ["export", str(env.out), "--out", str(env.root)])[1],
        StoreError, ("{out}/results.sqlite", "is damaged")),
    Bad("status-store-is-a-fifo",
        lambda env: ["status", str(_fifo("sent/results.sqlite")(env).parent)], StoreError,
        ("{root}/sent/results.sqlite", "is a named pipe (FIFO), not a file")),
    Bad("status-store-is-a-folder",
        lambda env: ["status", str(_folder("sent/results.sqlite")(env).parent)], StoreError,
        ("{root}/sent/results.sqlite", "is a folder, not a results store")),
    Bad("run-store-is-a-fifo",
        lambda env: (env.store.unlink(), _fifo("out/results.sqlite")(env), env.run())[2],
        StoreError, ("{out}/results.sqlite", "is a named pipe (FIFO), not a file")),
    Bad("report-json-missing-store",
        lambda env: ["report", str(env.root / "nowhere" / "results.sqlite"), "--json"],
        StoreError, ("no results store at {root}/nowhere/results.sqlite",)),
    Bad("report-dir-recorded-outside", _recorded_report_dir("../../evil", link_report_out=True),
        StoreError, ("{out}/results.sqlite", "outside its folder", "'../../evil'", "--out"),
        check=_nothing_elsewhere),
    # ---- output paths
    Bad("export-out-is-a-file",
        lambda env: ["export", str(env.out), "--out", str(env.study)], StoreError,
        ("{root}/tiny.yaml", "is a file, not a folder")),
    Bad("export-out-impossible",
        lambda env: ["export", str(env.out), "--out", str(env.study / "csv")], NotADirectoryError,
        ("{root}/tiny.yaml/csv", "Not a directory", "ENOTDIR")),
    Bad("run-out-is-a-file", lambda env: [*env.run(), "--out", str(env.study)], FileExistsError,
        ("{root}/tiny.yaml", "File exists", "EEXIST")),
    Bad("report-out-is-a-file", _report_out("tiny.yaml"), FileExistsError,
        ("{root}/tiny.yaml", "File exists")),
    Bad("report-out-impossible", _report_out("tiny.yaml/report"), NotADirectoryError,
        ("{root}/tiny.yaml/report", "Not a directory")),
    # ---- analyses
    Bad("curves-unknown-member", _with(_curves(pairs=[["m0", "m9"]])), ConfigError,
        ("analyses.curves.pairs", "'m9'", "m0, m1, m2")),
    Bad("curves-members-differ",
        _with(_change_member(2, _wrong_head), _curves(pairs=[["m0", "m2"]])), PopulationError,
        ("'m2'", "classifier.bias", "(2,)", "(3,)")),
    Bad("curves-zero-steps", _with(_curves(steps=0)), ConfigError,
        ("analyses.curves.steps", "greater than or equal to 1")),
    Bad("curves-one-member-pair", _with(_curves(pairs=[["m1", "m1"]])), ConfigError,
        ("analyses.curves.pairs", "[m1, m1]", "two members")),
    Bad("curves-unknown-split", _with(_curves(eval_splits=["mnli", "hans_zz"])), ConfigError,
        ("analyses.curves.eval_splits", "'hans_zz'", "declare it")),
    Bad("curves-unknown-kind", _with(_curves(kind="spline")), ConfigError,
        ("analyses.curves.kind", "'bezier' or 'chain'")),
    # ---- cue datasets and counterfactual sets
    Bad("cue-fraction-outside-0-1",
        _with(_set("splits.d_cue", {**DIGITS, "cue": "label", "cue_fraction": 1.5})),
        ConfigError, ("splits.d_cue.cue_fraction", "1.5")),
    Bad("cue-spots-outside-the-image",
        _with(_set("splits.d_cue", {**DIGITS, "cue": "label",
                                    "cue_spots": [[0, 2 * i] for i in range(9)] + [[27, 0]]})),
        ConfigError, ("splits.d_cue", "label 9's box at [27, 0], outside the 28×28 image",
                      "0..25")),
    Bad("mechanisms-set-wrong-cue", _with(lambda env: _cue_study(env, random_cue="d_clean")),
        ConfigError, ("analyses.mechanisms.sets.random_cue names split 'd_clean'",
                      "cue is 'none'", "`cue: random`")),
    Bad("mechanisms-text-set-with-wrong-cue",
        _with(lambda env: _cue_study(env, random_image="mnli")), ConfigError,
        ("analyses.mechanisms.sets.random_image names split 'mnli'", "cue is 'none'",
         "`cue: random_text`")),
    Bad("train-unknown-recipe", _with(_unknown_recipe), ConfigError,
        ("train.arms.0.recipe", "'magic'")),
    Bad("train-vary-init-on-a-text-arm", _with(_text_arm_with_vary_init), ConfigError,
        ("train.arms[a].vary: 'init'", "model.kind: cnn", "vary: both, head or data")),
    Bad("train-vary-init-with-from", _with(_from_arm_with_vary_init), ConfigError,
        ("train.arms[b].vary: 'init'", "members of 'a'", "remove `vary: init`")),
    Bad("train-two-members-in-all", _with(_two_members_in_all), ConfigError,
        ("train.arms: 2 member(s) in all", "at least 3", "raise an arm's `members`")),
    Bad("train-arm-examples-below-a-batch", _with(_arm_examples_below_a_batch), ConfigError,
        ("train.arms[a].examples (16)", "train.batch_size (32)", "no step")),
    Bad("cnn-unknown-activation", _with(_cnn_option(activation="tanh")), ConfigError,
        ("model.options.activation", "relu, gelu, softplus", "'tanh'")),
    Bad("cnn-unknown-pool", _with(_cnn_option(activation="gelu", pool="min")), ConfigError,
        ("model.options.pool", "max, avg", "'min'")),
    # ---- plan
    Bad("plan-one-member", _plan("--members", "1"), ConfigError,
        ("at least 2 members", "got 1", "--members")),
    Bad("plan-members-elsewhere", _plan(missing_dir=True), ConfigError,
        ("population.dir", "{root}/elsewhere", "--members N")),
    Bad("plan-zero-workers", _plan("--workers", "0"), ConfigError, ("--workers", "got 0")),
    Bad("plan-negative-throughput", _plan("--throughput", "-70"), ConfigError,
        ("--throughput", "-70")),
]  # fmt: skip


# --------------------------------------------------------------------------- the test


def _record_errors(monkeypatch: pytest.MonkeyPatch) -> list[Exception]:
    """Wrap every subcommand so the error it raises is kept before `main` prints it."""
    seen: list[Exception] = []
    for name in dir(cli):
        original = getattr(cli, name)
        if not (name.startswith("cmd_") and callable(original)):
            continue

        def recorded(args: Any, _original: Callable[[Any], int] = original) -> int:
            try:
                return _original(args)
            except (ModeconnError, OSError) as err:
                seen.append(err)
                raise

        monkeypatch.setattr(cli, name, recorded)
    return seen


def _snapshot(out: Path) -> dict[str, bytes]:
    """The bytes of every file in the output folder but SQLite's -wal/-shm companions."""
    return {
        p.name: p.read_bytes()
        for p in sorted(out.iterdir())
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def _no_pending_wal(out: Path) -> None:
    """A write-ahead log left beside the store must hold no frames (so no change).

    SQLite's read-only probe of a WAL-mode file creates empty -wal/-shm companions, and
    only a read-write connection removes them on close; when the store is refused after
    the probe (a newer schema) they stay, empty.
    """
    wal = out / f"{STORE}-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "a write to the store is pending"


@pytest.fixture(scope="module")
def store_counts(store_file: Path) -> dict[str, int]:
    with Store(store_file, create=False) as store:
        return store.counts()


def test_cases_are_many_and_distinct() -> None:
    assert len(CASES) >= 20
    assert len({c.name for c in CASES}) == len(CASES)


MESSAGES: dict[str, str] = {}  # case name → its error line, as docs/errors.md shows it
DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
_BEGIN, _END = "<!-- cases: generated by tests/test_bad_inputs.py -->", "<!-- cases: end -->"


def _as_documented(message: str, env: Env, model: Path, data: Path) -> str:
    """The message with this run's folders (and weight hashes) written as placeholders."""
    for path, name in ((env.root, "{root}"), (model, "{model}"), (data, "{data}")):
        message = message.replace(str(path), name)
    return re.sub(r"\b[0-9a-f]{12}…", "<hash>…", message)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(
    case: Bad,
    env: Env,
    tiny_model_dir: Path,
    data_root: Path,
    store_file: Path,
    store_counts: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = case.make(env)
    before = _snapshot(env.out)
    seen = _record_errors(monkeypatch)
    capsys.readouterr()

    code = cli.main(argv)

    err = capsys.readouterr().err
    assert code == 2, err
    assert len(seen) == 1, err
    assert type(seen[0]) is case.error, f"{type(seen[0]).__name__}: {seen[0]}"
    lines = [ln for ln in err.splitlines() if ln.startswith("modeconn: error:")]
    assert len(lines) == 1, err
    message = lines[0].removeprefix("modeconn: error: ")
    if isinstance(seen[0], ModeconnError):
        assert message == str(seen[0]), err
    assert "\n" not in message and "Traceback" not in err, f"not one line: {err!r}"
    for needle in case.names:
        assert needle.format(**env.names()) in message, f"{needle!r} not in {message!r}"
    MESSAGES[case.name] = _as_documented(message, env, tiny_model_dir, data_root)
    if case.check is not None:
        case.check(env)
    # the output folder, the store above all, is as it was (or, where the failing step
    # had begun to write, still sound)
    if case.untouched:
        assert _snapshot(env.out) == before
        _no_pending_wal(env.out)
    else:
        with Store(env.store, create=False) as store:
            assert store.integrity_check() == "ok"
    if before.get(STORE) == store_file.read_bytes():  # the sound store: still sound
        with Store(env.store, study="tiny", create=False) as store:
            assert store.integrity_check() == "ok"
            assert store.counts() == store_counts


# --------------------------------------------------------------------------- docs/errors.md


def _table() -> str:
    """The generated part of docs/errors.md: the count, then one row per case."""
    rows = [
        f"{len(CASES)} bad inputs, each refused with one line and exit status 2:",
        "",
        "| case | error | the line `modeconn` prints (after `modeconn: error:`) |",
        "| --- | --- | --- |",
    ]
    for c in CASES:
        message = MESSAGES.get(c.name, "?").replace("|", "\\|")
        rows.append(f"| `{c.name}` | `{c.error.__name__}` | {message} |")
    return "\n".join(rows)


def _generated(text: str) -> str:
    assert _BEGIN in text and _END in text, f"{DOC} lacks the markers {_BEGIN} … {_END}"
    return text.split(_BEGIN, 1)[1].split(_END, 1)[0].strip()


def test_errors_doc_lists_every_case() -> None:
    """Without running the battery: the doc counts and names exactly these cases."""
    listed = re.findall(r"^\| `([^`]+)` \|", _generated(DOC.read_text()), flags=re.M)
    assert listed == [c.name for c in CASES]
    assert _generated(DOC.read_text()).startswith(f"{len(CASES)} bad inputs")


def test_errors_doc_shows_each_error_line() -> None:
    """After the whole battery ran: the doc shows the very line each case printed."""
    if len(MESSAGES) < len(CASES):
        pytest.skip("run the whole battery (tests/test_bad_inputs.py) to check the messages")
    text = DOC.read_text()
    if os.environ.get("MODECONN_WRITE_DOCS") == "1":
        before, rest = text.split(_BEGIN, 1)
        after = rest.split(_END, 1)[1]
        text = f"{before}{_BEGIN}\n{_table()}\n{_END}{after}"
        DOC.write_text(text)
    assert _generated(text) == _table(), (
        "docs/errors.md is out of date: MODECONN_WRITE_DOCS=1 pytest tests/test_bad_inputs.py"
    )


# --------------------------------------------------------------------------- not errors
# Inputs a user (or whoever sent the store) controls that must be taken as they are,
# without an error, and never followed outside the store's folder.


@pytest.mark.parametrize("recorded", ["../../evil", "ABSOLUTE"])
def test_report_of_a_sent_store_stays_in_its_folder(
    env: Env, recorded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store whose recorded report_dir leaves its folder: `modeconn report STORE` writes
    to report/ beside the store, says so, and writes nothing where the record points."""
    target = env.root / "abs-target" if recorded == "ABSOLUTE" else env.out / recorded
    value = str(target) if recorded == "ABSOLUTE" else recorded
    argv = _recorded_report_dir(value)(env)
    shutil.rmtree(env.out / "report")  # the run's own report, to see where this one goes
    capsys.readouterr()

    assert cli.main(argv) == 0

    err = capsys.readouterr().err
    assert f"report_dir {value!r}, outside the store's folder" in err, err
    assert (env.out / "report" / "report.html").is_file()
    assert not target.exists() and not (env.root.parent / "evil").exists()


def test_member_ids_with_mathtext_reach_the_report_as_typed(env: Env) -> None:
    """Member ids `$\\frac{a}{b}$_x` and a malformed `$\\frac{a}$`: the run, its figures and
    the report go through, with the ids as typed."""
    odd, broken = "$\\frac{a}{b}$_x", "$\\frac{a}$"
    (env.members / "m1.json").write_text(json.dumps({"id": odd}))
    (env.members / "m2.json").write_text(json.dumps({"id": broken}))
    shutil.rmtree(env.out)  # a fresh store: these ids are new names for new runs

    assert cli.main(env.run()) == 0

    html = (env.out / "report" / "report.html").read_text()
    assert html.count("frac{a}{b}$_x") >= 1 and "$\\frac{a}$" in html
    assert len(list((env.out / "report").rglob("*.png"))) >= 3
