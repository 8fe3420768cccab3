"""Tests for modeconn.population.members: safe loading, sidecars, fingerprints, compatibility."""

from __future__ import annotations

import json
import os
import pickle
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from safetensors.torch import save_file

from modeconn.errors import PopulationError, UnsafeCheckpointError
from modeconn.population.members import (
    Member,
    MemberMeta,
    Population,
    check_compatible,
    load_state_dict,
    weights_hash,
)

if TYPE_CHECKING:  # transformers is imported lazily: it costs seconds at collection
    from transformers import BertConfig, BertForSequenceClassification

EvilWriter = Callable[[Path, Path], None]

# --------------------------------------------------------------------------- fixtures


def _tiny_bert_config(num_labels: int = 2) -> BertConfig:
    from transformers import BertConfig

    config = BertConfig(
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        vocab_size=50,
        max_position_embeddings=16,
    )
    config.num_labels = num_labels
    return config


@pytest.fixture(scope="module")
def tiny_bert() -> BertForSequenceClassification:
    """A 2-layer, width-8 BERT classifier, built locally (no download) with a fixed seed."""
    from transformers import BertForSequenceClassification

    with torch.random.fork_rng():  # never leak a seed into global state
        torch.manual_seed(0)
        return BertForSequenceClassification(_tiny_bert_config()).eval()


def _state(seed: int = 0, *, out: int = 3) -> dict[str, torch.Tensor]:
    """A tiny two-layer MLP state dict, seeded."""
    g = torch.Generator().manual_seed(seed)
    return {
        "0.weight": torch.randn(4, 5, generator=g),
        "0.bias": torch.randn(4, generator=g),
        "2.weight": torch.randn(out, 4, generator=g),
        "2.bias": torch.randn(out, generator=g),
    }


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


class _Evil:
    """A pickle payload that runs a shell command when plainly unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


# --------------------------------------------------------------------------- formats


def test_three_formats_load_equal_tensors_and_hashes(
    tmp_path: Path, tiny_bert: BertForSequenceClassification
) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in tiny_bert.state_dict().items()}
    save_file(state, str(tmp_path / "st.safetensors"))
    torch.save(state, tmp_path / "pt.pt")
    tiny_bert.save_pretrained(tmp_path / "hf")

    pop = Population.from_dir(tmp_path)
    assert pop.ids == ("hf", "pt", "st")
    assert [m.kind for m in pop] == ["hf", "torch", "safetensors"]
    loaded = {member_id: pop.load(member_id) for member_id in pop.ids}
    for member_id, got in loaded.items():
        assert sorted(got) == sorted(state), member_id
        for key, tensor in state.items():
            assert torch.equal(got[key], tensor), (member_id, key)
            assert got[key].dtype == tensor.dtype
    expected = weights_hash(state)
    assert {pop.hash(member_id) for member_id in pop.ids} == {expected}


def test_sharded_hf_directory_loads_every_shard(
    tmp_path: Path, tiny_bert: BertForSequenceClassification
) -> None:
    tiny_bert.save_pretrained(tmp_path / "sharded", max_shard_size="2KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    got = load_state_dict(tmp_path / "sharded")
    assert weights_hash(got) == weights_hash(tiny_bert.state_dict())


def test_hf_directory_with_pytorch_model_bin(tmp_path: Path) -> None:
    hf = tmp_path / "old"
    hf.mkdir()
    _write_json(hf / "config.json", {"model_type": "bert"})
    torch.save(_state(), hf / "pytorch_model.bin")
    pop = Population.from_dir(tmp_path)
    assert pop["old"].kind == "hf"
    assert weights_hash(pop.load("old")) == weights_hash(_state())


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth"])
def test_torch_suffixes_load(tmp_path: Path, suffix: str) -> None:
    torch.save(_state(), tmp_path / f"m{suffix}")
    assert weights_hash(load_state_dict(tmp_path / f"m{suffix}")) == weights_hash(_state())


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_training_checkpoint_is_unwrapped(tmp_path: Path, wrapper: str) -> None:
    torch.save({wrapper: _state(), "epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pt")
    assert weights_hash(load_state_dict(tmp_path / "ckpt.pt")) == weights_hash(_state())


def test_parameters_load_as_plain_tensors(tmp_path: Path) -> None:
    torch.save({"w": torch.nn.Parameter(torch.ones(2))}, tmp_path / "p.pt")
    got = load_state_dict(tmp_path / "p.pt")
    assert type(got["w"]) is torch.Tensor
    assert not got["w"].requires_grad


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([torch.ones(2)], "holds a list"),
        ({"w": torch.ones(2), "epoch": 3}, "key 'epoch' holds a int"),
        ({}, "holds no tensors"),
    ],
)
def test_non_state_dict_checkpoint_is_rejected(tmp_path: Path, payload: object, match: str) -> None:
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(PopulationError, match=match):
        load_state_dict(tmp_path / "bad.pt")


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(PopulationError, match=r"nope\.safetensors does not exist"):
        load_state_dict(missing)
    with pytest.raises(PopulationError, match=r"nope\.safetensors does not exist"):
        Population.from_paths([missing])


def test_member_deleted_after_discovery_names_member_and_path(tmp_path: Path) -> None:
    save_file(_state(), str(tmp_path / "gone.safetensors"))
    pop = Population.from_dir(tmp_path)
    (tmp_path / "gone.safetensors").unlink()
    with pytest.raises(PopulationError, match=r"member 'gone' \(.*gone\.safetensors\) does not"):
        pop.load("gone")


def test_corrupt_files_are_population_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(PopulationError, match=r"junk\.safetensors is not a readable safetensors"):
        load_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(PopulationError, match=r"empty\.pt is not a readable torch checkpoint"):
        load_state_dict(tmp_path / "empty.pt")


# --------------------------------------------------------------------------- safety


def _write_evil_zip(path: Path, marker: Path) -> None:
    torch.save({"w": torch.zeros(2), "x": _Evil(marker)}, path)


def _write_evil_pickle_v2(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"w": _Evil(marker)}, protocol=2))


def _write_evil_pickle_default(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Evil(marker)))


_EVIL_WRITERS = [_write_evil_zip, _write_evil_pickle_v2, _write_evil_pickle_default]


@pytest.mark.parametrize("write", _EVIL_WRITERS, ids=lambda f: f.__name__.removeprefix("_write_"))
def test_payload_is_really_malicious(tmp_path: Path, write: EvilWriter) -> None:
    """Control: the payload does run code under a plain unpickler, so the next test means it."""
    marker = tmp_path / "pwned"
    write(tmp_path / "evil.pt", marker)
    if write is _write_evil_zip:
        torch.load(tmp_path / "evil.pt", weights_only=False)
    else:
        pickle.loads((tmp_path / "evil.pt").read_bytes())  # the point of the test
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("write", _EVIL_WRITERS, ids=lambda f: f.__name__.removeprefix("_write_"))
@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_malicious_pickle_is_refused_without_running(
    tmp_path: Path, write: EvilWriter, suffix: str
) -> None:
    marker = tmp_path / "pwned"
    write(tmp_path / f"evil{suffix}", marker)
    pop = Population.from_dir(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"member 'evil'.*refuses to unpickle") as info:
        pop.load("evil")
    assert "re-save it as safetensors" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_malicious_pytorch_model_bin_in_hf_dir_is_refused(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    _write_json(hf / "config.json", {"model_type": "bert"})
    marker = tmp_path / "pwned"
    _write_evil_zip(hf / "pytorch_model.bin", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system"):
        Population.from_dir(tmp_path).hash("hf")
    assert not marker.exists()


# --------------------------------------------------------------------------- non-finite


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_rejected(tmp_path: Path, bad: float) -> None:
    state = _state()
    state["2.weight"][1, 2] = bad
    save_file(state, str(tmp_path / "diverged.safetensors"))
    pop = Population.from_dir(tmp_path)
    with pytest.raises(PopulationError, match=r"member 'diverged'.*key '2\.weight' has 1 NaN/inf"):
        pop.load("diverged")


def test_integer_buffers_are_not_checked_for_finiteness(tmp_path: Path) -> None:
    save_file({"w": torch.ones(2), "steps": torch.tensor([3])}, str(tmp_path / "m.safetensors"))
    assert load_state_dict(tmp_path / "m.safetensors")["steps"].item() == 3


# --------------------------------------------------------------------------- sidecars


def test_sidecar_fields_extra_and_id_override(tmp_path: Path) -> None:
    save_file(_state(), str(tmp_path / "run7.safetensors"))
    _write_json(
        tmp_path / "run7.json",
        {"id": "plain-h0-d1", "head_seed": 0, "data_seed": 1, "arm": "plain", "step": 1200,
         "lr": 2e-5, "notes": ["ok"]},
    )  # fmt: skip
    member = Member.from_path(tmp_path / "run7.safetensors")
    assert member.id == "plain-h0-d1"
    assert member.kind == "safetensors"
    assert member.meta == MemberMeta(
        head_seed=0, data_seed=1, arm="plain", step=1200, extra={"lr": 2e-5, "notes": ["ok"]}
    )


def test_no_sidecar_means_unknown_metadata(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "bare.pt")
    member = Member.from_path(tmp_path / "bare.pt")
    assert member.id == "bare"
    assert member.meta == MemberMeta()
    assert member.meta.to_dict() == {
        "head_seed": None,
        "data_seed": None,
        "arm": None,
        "step": None,
    }


def test_hf_sidecar_lives_inside_the_directory(
    tmp_path: Path, tiny_bert: BertForSequenceClassification
) -> None:
    tiny_bert.save_pretrained(tmp_path / "seed3")
    _write_json(tmp_path / "seed3" / "modeconn.json", {"head_seed": 3, "arm": "lp-ft"})
    member = Population.from_dir(tmp_path)["seed3"]
    assert (member.kind, member.meta.head_seed, member.meta.arm) == ("hf", 3, "lp-ft")


@pytest.mark.parametrize("text", ["{not json", '{"head_seed": 1,}', "\xff"])
def test_non_json_sidecar_is_rejected_naming_the_file(tmp_path: Path, text: str) -> None:
    save_file(_state(), str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(text, encoding="latin-1")
    with pytest.raises(PopulationError, match=r"sidecar .*m\.json is not readable JSON"):
        Population.from_dir(tmp_path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (["a", "list"], "holds a JSON list, not an object"),
        ({"head_seed": "3"}, "field 'head_seed' must be an integer or null; got '3'"),
        ({"step": True}, "field 'step' must be an integer"),
        ({"data_seed": 1.5}, "field 'data_seed' must be an integer"),
        ({"arm": 1}, "field 'arm' must be a string"),
        ({"id": ""}, "has 'id' ''"),
    ],
)
def test_malformed_sidecar_fields_are_rejected(tmp_path: Path, data: object, match: str) -> None:
    torch.save(_state(), tmp_path / "m.pt")
    _write_json(tmp_path / "m.json", data)
    with pytest.raises(PopulationError, match=rf"m\.json.*{match}"):
        Member.from_path(tmp_path / "m.pt")


def test_member_meta_round_trips_and_hashes() -> None:
    meta = MemberMeta.from_dict({"head_seed": 1, "arm": "augmented", "lr": 1e-4, "id": "x"})
    assert meta.extra == {"lr": 1e-4}  # the id belongs to Member, not to its metadata
    assert MemberMeta.from_dict(meta.to_dict()) == meta
    assert hash(meta) == hash(MemberMeta(head_seed=1, arm="augmented"))  # extra is not hashed
    with pytest.raises(PopulationError, match="must be a JSON object"):
        MemberMeta.from_dict([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- discovery


def test_from_dir_orders_by_id_and_skips_non_members(
    tmp_path: Path, tiny_bert: BertForSequenceClassification
) -> None:
    torch.save(_state(1), tmp_path / "b.pt")
    save_file(_state(2), str(tmp_path / "c.safetensors"))
    torch.save(_state(3), tmp_path / "zz.bin")
    _write_json(tmp_path / "zz.json", {"id": "a"})  # the sidecar id sorts this one first
    tiny_bert.save_pretrained(tmp_path / "d_hf")
    (tmp_path / "notes.txt").write_text("not a member")
    (tmp_path / "logs").mkdir()  # a directory without config.json + weights
    (tmp_path / ".tmp.pt").write_bytes(b"half-written")  # hidden: skipped
    half = tmp_path / "e_half"
    half.mkdir()
    _write_json(half / "config.json", {})  # config but no weights: not (yet) a member
    pop = Population.from_dir(tmp_path)
    assert pop.ids == ("a", "b", "c", "d_hf")
    assert len(pop) == 4
    assert [m.id for m in pop] == list(pop.ids)
    assert pop["a"].source == tmp_path / "zz.bin"
    assert "b" in pop and "zz" not in pop


def test_from_paths_keeps_the_given_order(tmp_path: Path) -> None:
    for name in ("x", "y"):
        torch.save(_state(), tmp_path / f"{name}.pt")
    pop = Population.from_paths([tmp_path / "y.pt", str(tmp_path / "x.pt")])
    assert pop.ids == ("y", "x")


def test_empty_and_wrong_directories_are_rejected(
    tmp_path: Path, tiny_bert: BertForSequenceClassification
) -> None:
    with pytest.raises(PopulationError, match="has no members"):
        Population.from_dir(tmp_path)
    with pytest.raises(PopulationError, match="is not a directory"):
        Population.from_dir(tmp_path / "missing")
    tiny_bert.save_pretrained(tmp_path / "one")
    with pytest.raises(PopulationError, match="is itself one Hugging Face model"):
        Population.from_dir(tmp_path / "one")
    with pytest.raises(PopulationError, match="at least one member"):
        Population.from_paths([])
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(PopulationError, match=r"has suffix '\.npz'"):
        Population.from_paths([tmp_path / "w.npz"])


def test_duplicate_ids_name_the_id_and_both_paths(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "m1.pt")
    save_file(_state(), str(tmp_path / "m1.safetensors"))
    with pytest.raises(PopulationError, match=r"'m1' is used by both .*m1\.(pt|safetensors) and"):
        Population.from_dir(tmp_path)


def test_duplicate_ids_from_sidecars(tmp_path: Path) -> None:
    for name in ("p", "q"):
        torch.save(_state(), tmp_path / f"{name}.pt")
        _write_json(tmp_path / f"{name}.json", {"id": "same"})
    with pytest.raises(PopulationError, match=r"'same' is used by both .*p\.pt and .*q\.pt"):
        Population.from_paths([tmp_path / "p.pt", tmp_path / "q.pt"])


def test_unknown_id_lists_known_ids(tmp_path: Path) -> None:
    for i in range(7):
        torch.save(_state(), tmp_path / f"m{i}.pt")
    pop = Population.from_dir(tmp_path)
    with pytest.raises(PopulationError, match=r"no member 'm9'.*'m0', 'm1'.* and 2 more"):
        pop["m9"]


def test_to_frame(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "a.pt")
    save_file(_state(), str(tmp_path / "b.safetensors"))
    _write_json(tmp_path / "b.json", {"head_seed": 4, "arm": "plain", "extra_field": 1})
    frame = Population.from_dir(tmp_path).to_frame()
    assert list(frame.columns) == ["id", "source", "kind", "head_seed", "data_seed", "arm", "step"]
    assert frame["id"].tolist() == ["a", "b"]
    assert frame["kind"].tolist() == ["torch", "safetensors"]
    assert frame["source"].tolist() == [str(tmp_path / "a.pt"), str(tmp_path / "b.safetensors")]
    assert str(frame["head_seed"].dtype) == "Int64"
    assert frame["head_seed"].isna().tolist() == [True, False]
    assert frame["head_seed"].tolist()[1] == 4
    assert frame["arm"].tolist()[1] == "plain"


# --------------------------------------------------------------------------- hashing


def test_weights_hash_golden_value() -> None:
    # Pins the format: stores key results by this hash, so a change here orphans old results.
    state = {"b": torch.arange(3, dtype=torch.int64), "a": torch.arange(6.0).reshape(2, 3)}
    assert weights_hash(state) == _GOLDEN_HASH


def test_weights_hash_matches_a_numpy_reference() -> None:
    """The documented format, rebuilt from numpy bytes: length-prefixed header, then data."""
    import hashlib

    state = {"b": torch.arange(3, dtype=torch.int64), "a": torch.arange(6.0).reshape(2, 3)}
    digest = hashlib.sha256()
    for key in sorted(state):
        array = state[key].numpy()
        header = json.dumps([key, str(state[key].dtype), list(array.shape)]).encode()
        for part in (header, array.tobytes()):
            digest.update(len(part).to_bytes(8, "little") + part)
    assert weights_hash(state) == digest.hexdigest() == _GOLDEN_HASH


def test_weights_hash_sees_every_difference() -> None:
    base = _state()
    h = weights_hash(base)
    assert weights_hash(dict(reversed(list(base.items())))) == h  # order-free
    assert weights_hash({k: v.t().contiguous().t() for k, v in base.items()}) == h  # strides
    changed_value = dict(base, **{"0.bias": base["0.bias"] + 1e-6})
    renamed = {("x" + k if k == "0.bias" else k): v for k, v in base.items()}
    retyped = dict(base, **{"0.bias": base["0.bias"].double()})
    reshaped = dict(base, **{"0.weight": base["0.weight"].reshape(5, 4)})
    others = [changed_value, renamed, retyped, reshaped, _state(seed=1)]
    assert len({h, *(weights_hash(s) for s in others)}) == 1 + len(others)
    assert len(h) == 64 and int(h, 16) >= 0


def test_weights_hash_handles_scalars_and_bfloat16() -> None:
    state = {"s": torch.tensor(1.5), "b": torch.ones(2, dtype=torch.bfloat16)}
    assert weights_hash(state) == weights_hash({k: v.clone() for k, v in state.items()})


def test_hash_is_cached_per_population(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "m.pt")
    pop = Population.from_dir(tmp_path)
    first = pop.hash("m")
    (tmp_path / "m.pt").unlink()  # a second computation would now fail
    assert pop.hash("m") == first == weights_hash(_state())


# --------------------------------------------------------------------------- compatibility


def test_shape_mismatch_names_key_and_both_shapes() -> None:
    with pytest.raises(PopulationError) as info:
        check_compatible(_state(out=3), _state(out=2), name="m3")
    assert str(info.value) == (
        "member 'm3' key '2.bias' has shape (2,), the reference has (3,): "
        "members must share one architecture (same num_labels / layers)"
    )  # '2.bias' sorts before '2.weight': the first problem is reported


def test_missing_key_is_named() -> None:
    candidate = _state()
    del candidate["2.weight"]
    with pytest.raises(
        PopulationError, match=r"member 'm3' lacks key '2\.weight' that the reference has \(shape"
    ):
        check_compatible(_state(), candidate, name="m3")


def test_extra_key_is_named() -> None:
    candidate = dict(_state(), **{"3.weight": torch.zeros(1, 3)})
    with pytest.raises(
        PopulationError, match=r"member 'm3' has key '3\.weight' \(shape \(1, 3\)\) that base lacks"
    ):
        check_compatible(_state(), candidate, name="m3", reference_name="base")


def test_first_problem_in_sorted_key_order_wins() -> None:
    reference = {"a": torch.zeros(1), "b": torch.zeros(2), "c": torch.zeros(3)}
    candidate = {"a": torch.zeros(1), "b": torch.zeros(5), "d": torch.zeros(3)}
    with pytest.raises(PopulationError, match="key 'b' has shape"):
        check_compatible(reference, candidate, name="m")


def test_dtype_difference_is_compatible() -> None:
    check_compatible(_state(), {k: v.half() for k, v in _state().items()}, name="half")


def test_population_check_names_the_bad_member(
    tmp_path: Path, tiny_bert: BertForSequenceClassification
) -> None:
    from transformers import BertForSequenceClassification

    with torch.random.fork_rng():
        torch.manual_seed(1)
        three_way = BertForSequenceClassification(_tiny_bert_config(num_labels=3))
    three_way.save_pretrained(tmp_path / "a_mnli")
    tiny_bert.save_pretrained(tmp_path / "b_binary")
    pop = Population.from_dir(tmp_path)
    with pytest.raises(
        PopulationError,
        match=r"member 'b_binary' key 'classifier\.bias' has shape \(2,\), base has \(3,\)",
    ):
        pop.check(three_way.state_dict(), reference_name="base")
    Population.from_paths([tmp_path / "a_mnli"]).check(three_way.state_dict())


_GOLDEN_HASH = "f10c506306abd458f244194234a42a735040d8dcf0d6d93c69922483d8df2302"
