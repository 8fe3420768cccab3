"""A population: models fine-tuned from one pretrained checkpoint that differ only in seeds.

Every question modeconn asks (are two members in one basin? does the basin explain
out-of-distribution behaviour?) starts from a set of weight files of one architecture. This
module finds those files, reads their metadata, loads their weights *without executing code*,
fingerprints them, and checks that they really share one architecture.

Members come in three forms, each with an optional JSON *sidecar* of metadata::

    runs/
      seed0.safetensors   seed0.json        # kind "safetensors", sidecar beside the file
      seed1.pt            seed1.json        # kind "torch": torch.load(weights_only=True) only
      seed2/                                # kind "hf": a save_pretrained directory
        config.json  model.safetensors  modeconn.json   # sidecar inside the directory

A sidecar holds ``head_seed``, ``data_seed``, ``arm`` and ``step`` (all optional), an
optional ``id`` that overrides the member id (by default the file stem or directory name),
and anything else, which is kept in ``MemberMeta.extra``::

    {"id": "plain-h0-d1", "head_seed": 0, "data_seed": 1, "arm": "plain", "step": 1200}

>>> import tempfile
>>> from safetensors.torch import save_file
>>> root = Path(tempfile.mkdtemp())
>>> save_file({"w": torch.ones(2, 3)}, str(root / "a.safetensors"))
>>> _ = (root / "a.json").write_text('{"head_seed": 0, "arm": "plain"}')
>>> pop = Population.from_dir(root)
>>> pop.ids, pop["a"].meta.arm
(('a',), 'plain')
>>> pop.load("a")["w"].shape
torch.Size([2, 3])

Loading never unpickles arbitrary objects (see DESIGN.md, "Rules of the house"): a pickle that
needs code to rebuild raises :class:`~modeconn.errors.UnsafeCheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from modeconn.errors import PopulationError, UnsafeCheckpointError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HF_SIDECAR",
    "TORCH_SUFFIXES",
    "WEIGHT_SUFFIXES",
    "Member",
    "MemberKind",
    "MemberMeta",
    "Population",
    "check_compatible",
    "load_state_dict",
    "sidecar_path",
    "weights_hash",
]

MemberKind = Literal["safetensors", "torch", "hf"]

TORCH_SUFFIXES = (".pt", ".bin", ".pth")
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
HF_SIDECAR = "modeconn.json"

# Weight files of a Hugging Face save_pretrained directory, in order of preference.
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Keys a training script commonly nests the state dict under (Lightning, plain loops).
_WRAPPER_KEYS = ("state_dict", "model")
_SAVE_HINT = "save model.state_dict() with safetensors.torch.save_file"


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class MemberMeta:
    """What produced a member: its seeds, training arm and step. Every field may be unknown.

    ``extra`` keeps any other sidecar field verbatim; it takes no part in ``hash()``.

    >>> m = MemberMeta.from_dict({"head_seed": 3, "arm": "lp-ft", "lr": 2e-5})
    >>> m.head_seed, m.data_seed, m.extra
    (3, None, {'lr': 2e-05})
    >>> MemberMeta.from_dict(m.to_dict()) == m
    True
    """

    head_seed: int | None = None
    data_seed: int | None = None
    arm: str | None = None
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemberMeta:
        """Build from a sidecar mapping; unknown fields go to ``extra``. Does not read ``id``."""
        if not isinstance(data, Mapping):
            raise PopulationError(
                f"member metadata must be a JSON object; got {type(data).__name__}: "
                'write it as {"head_seed": 0, "data_seed": 0, "arm": "plain", "step": 100}'
            )
        rest = dict(data)
        rest.pop("id", None)  # the member id lives on Member, not in its metadata
        values: dict[str, Any] = {}
        for name in ("head_seed", "data_seed", "step"):
            value = rest.pop(name, None)
            # bool is an int subclass; a seed of `true` is a mistake, not 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise PopulationError(
                    f"metadata field {name!r} must be an integer or null; got {value!r} "
                    f"({type(value).__name__}): write it as a JSON integer, e.g. {name!r}: 0"
                )
            values[name] = value
        arm = rest.pop("arm", None)
        if arm is not None and not isinstance(arm, str):
            raise PopulationError(
                f"metadata field 'arm' must be a string or null; got {arm!r} "
                f'({type(arm).__name__}): write it as e.g. "arm": "plain"'
            )
        return cls(arm=arm, extra=rest, **values)

    def to_dict(self) -> dict[str, Any]:
        """The sidecar form: the four known fields (``None`` where unknown), then ``extra``."""
        return {
            "head_seed": self.head_seed,
            "data_seed": self.data_seed,
            "arm": self.arm,
            "step": self.step,
            **self.extra,
        }


@dataclass(frozen=True)
class Member:
    """One model of a population: an id, where its weights live, and how to read them."""

    id: str
    source: Path
    kind: MemberKind
    meta: MemberMeta = field(default_factory=MemberMeta)

    @classmethod
    def from_path(cls, path: str | Path) -> Member:
        """A member from a weight file or a Hugging Face directory, with its sidecar if any."""
        source = Path(path)
        if not source.exists():
            raise PopulationError(
                f"member {source} does not exist: pass an existing .safetensors/.pt/.bin/.pth "
                "file or a Hugging Face model directory"
            )
        kind = _kind_of(source)
        sidecar = sidecar_path(source, kind)
        data = _read_sidecar(sidecar)
        member_id = data.get("id", _default_id(source, kind))
        if not isinstance(member_id, str) or not member_id:
            raise PopulationError(
                f"sidecar {sidecar} has 'id' {member_id!r}; it must be a non-empty string "
                "(or leave it out to use the file name)"
            )
        try:
            meta = MemberMeta.from_dict(data)
        except PopulationError as err:
            raise PopulationError(f"sidecar {sidecar}: {err}") from None
        return cls(id=member_id, source=source, kind=kind, meta=meta)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: id, source (as a string), kind and the metadata fields."""
        return {"id": self.id, "source": str(self.source), "kind": self.kind, **self.meta.to_dict()}


def sidecar_path(source: Path, kind: MemberKind | None = None) -> Path:
    """Where a member's metadata lives: ``x.json`` beside ``x.pt``; ``modeconn.json`` in a dir.

    >>> sidecar_path(Path("runs/seed0.safetensors"))
    PosixPath('runs/seed0.json')
    >>> sidecar_path(Path("runs/seed2"), "hf")
    PosixPath('runs/seed2/modeconn.json')
    """
    if kind is None:
        kind = "hf" if source.is_dir() else "safetensors"  # any file kind: same rule
    return source / HF_SIDECAR if kind == "hf" else source.with_suffix(".json")


def _kind_of(source: Path) -> MemberKind:
    if source.is_dir():
        return "hf"
    suffix = source.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    raise PopulationError(
        f"member {source} has suffix {source.suffix!r}; expected one of "
        f"{', '.join(WEIGHT_SUFFIXES)} or a Hugging Face model directory"
    )


def _default_id(source: Path, kind: MemberKind) -> str:
    return source.name if kind == "hf" else source.stem


def _read_sidecar(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PopulationError(
            f"sidecar {path} is not readable JSON ({_one_line(err)}); fix it or delete it "
            "(sidecars are optional)"
        ) from None
    if not isinstance(data, dict):
        raise PopulationError(
            f"sidecar {path} holds a JSON {type(data).__name__}, not an object; write it as "
            '{"head_seed": 0, "data_seed": 0, "arm": "plain", "step": 100}'
        )
    return data


# --------------------------------------------------------------------------- loading


def load_state_dict(source: str | Path, *, name: str | None = None) -> dict[str, torch.Tensor]:
    """Read the weights of a member from ``source`` onto the CPU, never executing its code.

    ``source`` is a ``.safetensors`` file, a ``.pt``/``.bin``/``.pth`` file (read only with
    ``torch.load(weights_only=True)``; a dict nested under ``"state_dict"`` or ``"model"`` is
    unwrapped), or a Hugging Face directory (``model.safetensors``, its sharded index, or
    ``pytorch_model.bin``). ``name`` names the member in errors (default: the path).

    Raises :class:`UnsafeCheckpointError` for a pickle that needs code to load, and
    :class:`PopulationError` for a missing or malformed file, a value that is not a tensor,
    or a tensor holding NaN or inf.

    >>> import tempfile
    >>> from safetensors.torch import save_file
    >>> path = Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> save_file({"b": torch.zeros(2), "a": torch.ones(1, 2)}, str(path))
    >>> sorted(load_state_dict(path))
    ['a', 'b']
    """
    source = Path(source)
    label = f"member {name!r} ({source})" if name is not None else f"checkpoint {source}"
    if not source.exists():
        raise PopulationError(
            f"{label} does not exist: check the path, or re-run training for this member"
        )
    kind = _kind_of(source)
    try:
        if kind == "hf":
            state = _load_hf_dir(source)
        elif kind == "safetensors":
            state = _load_safetensors(source)
        else:
            state = _load_torch(source)
    except PopulationError as err:
        if name is None:
            raise
        raise type(err)(f"member {name!r}: {err}") from None  # keeps UnsafeCheckpointError
    return _validated(state, label)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError, or OSError
        raise PopulationError(
            f"{path} is not a readable safetensors file ({_one_line(err)}); "
            f"re-save it: {_SAVE_HINT}"
        ) from None


def _load_torch(path: Path) -> Any:
    try:
        # weights_only=True is the whole point: an explicit True cannot be overridden by
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, and the restricted unpickler runs no code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path} cannot be loaded with torch.load(weights_only=True) "
            f"({_unpickler_reason(err)}); modeconn refuses to unpickle arbitrary objects; "
            f"re-save it as safetensors from a trusted environment: {_SAVE_HINT}"
        ) from None
    except Exception as err:  # corrupt zip, truncated file, unreadable path
        raise PopulationError(
            f"{path} is not a readable torch checkpoint ({type(err).__name__}: "
            f"{_one_line(err)}); re-save it: {_SAVE_HINT}"
        ) from None
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> Any:
    """A training checkpoint often nests the weights: ``{"state_dict": {...}, "epoch": 3}``."""
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    if not isinstance(obj, Mapping):
        raise PopulationError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of name to "
            f"tensor); {_SAVE_HINT} (or torch.save(model.state_dict(), ...))"
        )
    return obj


def _load_hf_dir(path: Path) -> dict[str, torch.Tensor]:
    for filename in _HF_WEIGHT_FILES:
        weights = path / filename
        if not weights.is_file():
            continue
        if filename.endswith(".index.json"):
            return _load_sharded(weights)
        if filename.endswith(".safetensors"):
            return _load_safetensors(weights)
        return _load_torch(weights)
    raise PopulationError(
        f"Hugging Face directory {path} has none of {', '.join(_HF_WEIGHT_FILES)}; "
        "save the model with model.save_pretrained(path)"
    )


def _load_sharded(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise PopulationError(
            f"shard index {index} is not a JSON object with a 'weight_map' of key to shard file "
            f"({type(err).__name__}: {_one_line(err)}); re-save with model.save_pretrained"
        ) from None
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        shard_path = index.parent / shard
        if not shard_path.is_file():
            raise PopulationError(
                f"shard {shard_path} named in {index} is missing; copy the complete "
                "directory or re-save with model.save_pretrained"
            )
        loaded = (
            _load_safetensors(shard_path)
            if shard_path.suffix == ".safetensors"
            else _load_torch(shard_path)
        )
        state.update(_validated(loaded, f"shard {shard_path}"))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise PopulationError(
            f"shard index {index} maps key {missing[0]!r} to {weight_map[missing[0]]!r}, "
            "which lacks it; re-save with model.save_pretrained"
        )
    return state


def _validated(state: Any, label: str) -> dict[str, torch.Tensor]:
    """Check a loaded object is a non-empty mapping of str → finite dense tensor."""
    if not isinstance(state, Mapping):
        raise PopulationError(
            f"{label} holds a {type(state).__name__}, not a mapping of name to tensor; {_SAVE_HINT}"
        )
    if not state:
        raise PopulationError(f"{label} holds no tensors; {_SAVE_HINT} from a trained model")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise PopulationError(
                f"{label} has a key {key!r} of type {type(key).__name__}; state dict keys "
                f"must be strings: {_SAVE_HINT}"
            )
        if not isinstance(value, torch.Tensor):
            raise PopulationError(
                f"{label} key {key!r} holds a {type(value).__name__}, not a tensor; keep only "
                f"weights in the checkpoint: {_SAVE_HINT}"
            )
        if value.layout != torch.strided:
            raise PopulationError(
                f"{label} key {key!r} is a {value.layout} tensor; modeconn needs dense "
                "tensors: save tensor.to_dense()"
            )
        if (value.is_floating_point() or value.is_complex()) and value.numel():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise PopulationError(
                    f"{label} key {key!r} has {bad} NaN/inf value(s) of {value.numel()}: "
                    "the run diverged; retrain this member or leave it out of the population"
                )
        out[key] = value.detach()  # an nn.Parameter becomes a plain tensor
    return out


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unpickler_reason(err: BaseException) -> str:
    """The short reason inside torch's long multi-paragraph weights-only error."""
    message = str(err)
    found = re.search(r"GLOBAL (\S+)", message)
    if found:
        return f"its pickle needs {found.group(1)}"
    boilerplate = ("Weights only load failed", "Check the documentation")
    paragraphs = [p for p in message.split("\n\n") if p.strip()]
    reasons = [p for p in paragraphs if not p.strip().startswith(boilerplate)]
    return _one_line(Exception(reasons[0] if reasons else message))


# --------------------------------------------------------------------------- fingerprints


def weights_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (64 hex digits) of a state dict: every key's name, dtype, shape and raw bytes.

    Keys are visited in sorted order, so insertion order does not matter; the bytes are those
    of a contiguous CPU copy, so the same weights hash the same whether read from safetensors,
    a ``.pt`` file or a Hugging Face directory, in any process. A different dtype (float16 vs
    float32) is a different hash. Callers may shorten it (``h[:16]``).

    >>> h = weights_hash({"w": torch.zeros(2, 3)})
    >>> len(h), h == weights_hash({"w": torch.zeros(2, 3)})
    (64, True)
    >>> other_shape, other_dtype = torch.zeros(3, 2), torch.zeros(2, 3, dtype=torch.float16)
    >>> weights_hash({"w": other_shape}) == h, weights_hash({"w": other_dtype}) == h
    (False, False)
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        # length-prefixed fields, so that no two different state dicts share a byte stream
        header = json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header)
        raw = tensor.reshape(-1).view(torch.uint8).numpy()  # (numel * itemsize,)
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw.data)
    return digest.hexdigest()


# --------------------------------------------------------------------------- compatibility


def check_compatible(
    reference: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor],
    *,
    name: str,
    reference_name: str = "the reference",
) -> None:
    """Raise :class:`PopulationError` at the first key, in sorted order, where two differ.

    A key the candidate lacks, a key it has extra, or a shape that differs is an error;
    a dtype that differs is not (interpolating float16 and float32 members is allowed, and
    the evaluator casts to one dtype).

    >>> ref = {"classifier.weight": torch.zeros(3, 384)}
    >>> check_compatible(ref, {"classifier.weight": torch.zeros(3, 384)}, name="m1")
    >>> check_compatible(ref, {"classifier.weight": torch.zeros(2, 384)}, name="m3")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    modeconn.errors.PopulationError: member 'm3' key 'classifier.weight' has shape (2, 384), ...
    """
    same_arch = "members must share one architecture (same num_labels / layers)"
    for key in sorted(set(reference) | set(candidate)):
        if key not in candidate:
            raise PopulationError(
                f"member {name!r} lacks key {key!r} that {reference_name} has (shape "
                f"{_shape(reference[key])}): {same_arch}; re-save it from the same model class"
            )
        if key not in reference:
            raise PopulationError(
                f"member {name!r} has key {key!r} (shape {_shape(candidate[key])}) that "
                f"{reference_name} lacks: {same_arch}; re-save it from the same model class"
            )
        if candidate[key].shape != reference[key].shape:
            raise PopulationError(
                f"member {name!r} key {key!r} has shape {_shape(candidate[key])}, "
                f"{reference_name} has {_shape(reference[key])}: {same_arch}"
            )


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


# --------------------------------------------------------------------------- population


class Population:
    """An ordered set of members with unique ids; loads weights on demand, never caches them.

    ``Population.from_dir(path)`` takes every weight file and Hugging Face directory in a
    folder, sorted by id; ``Population.from_paths(paths)`` keeps the order given.
    Only ``hash()`` results are cached, so a population is cheap to hold and pass around.
    """

    def __init__(self, members: Iterable[Member]) -> None:
        self.members: tuple[Member, ...] = tuple(members)
        if not self.members:
            raise PopulationError(
                "a population needs at least one member; pass weight files or directories"
            )
        seen: dict[str, Member] = {}
        for member in self.members:
            if member.id in seen:
                raise PopulationError(
                    f"member id {member.id!r} is used by both {seen[member.id].source} and "
                    f"{member.source}; rename one, or give one a different 'id' in its sidecar"
                )
            seen[member.id] = member
        self._by_id = seen
        self._hashes: dict[str, str] = {}

    @classmethod
    def from_dir(cls, path: str | Path) -> Population:
        """Every ``*.safetensors``/``*.pt``/``*.bin``/``*.pth`` file and every subdirectory
        with ``config.json`` and weights, sorted by member id. Sidecar ``.json`` files, hidden
        entries and other files are skipped."""
        root = Path(path)
        if not root.is_dir():
            raise PopulationError(
                f"population directory {root} does not exist or is not a directory; "
                "pass the folder that holds the member weight files"
            )
        if _is_hf_dir(root):
            raise PopulationError(
                f"{root} is itself one Hugging Face model, not a folder of members; pass its "
                "parent folder, or use Population.from_paths([...])"
            )
        sources = [
            entry
            for entry in sorted(root.iterdir())
            if not entry.name.startswith(".")
            and (
                (entry.is_file() and entry.suffix.lower() in WEIGHT_SUFFIXES)
                or (entry.is_dir() and _is_hf_dir(entry))
            )
        ]
        if not sources:
            raise PopulationError(
                f"population directory {root} has no members: expected "
                f"{'/'.join('*' + s for s in WEIGHT_SUFFIXES)} files or Hugging Face "
                "subdirectories (config.json + weights)"
            )
        return cls(sorted((Member.from_path(source) for source in sources), key=lambda m: m.id))

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> Population:
        """Members from explicit weight files / Hugging Face directories, in the order given."""
        return cls(Member.from_path(path) for path in paths)

    # -- container protocol ------------------------------------------------------------

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(member.id for member in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._by_id

    def __getitem__(self, member_id: str) -> Member:
        try:
            return self._by_id[member_id]
        except KeyError:
            shown = ", ".join(repr(i) for i in self.ids[:5])
            more = f" and {len(self) - 5} more" if len(self) > 5 else ""
            raise PopulationError(
                f"no member {member_id!r} in this population; known ids: {shown}{more}"
            ) from None

    def __repr__(self) -> str:
        shown = ", ".join(self.ids[:3]) + (", ..." if len(self) > 3 else "")
        return f"Population({len(self)} members: {shown})"

    # -- weights -------------------------------------------------------------------------

    def load(self, member_id: str) -> dict[str, torch.Tensor]:
        """The member's weights on the CPU (a fresh dict each call; nothing is cached)."""
        member = self[member_id]
        return load_state_dict(member.source, name=member.id)

    def hash(self, member_id: str) -> str:
        """:func:`weights_hash` of the member's weights, computed once per object."""
        if member_id not in self._hashes:
            self._hashes[member_id] = weights_hash(self.load(member_id))
        return self._hashes[member_id]

    def check(
        self, reference_state: Mapping[str, torch.Tensor], *, reference_name: str = "the reference"
    ) -> None:
        """Load every member in turn and :func:`check_compatible` it against the reference.

        Raises at the first member (in population order) that fails to load or differs.
        """
        for member in self.members:
            check_compatible(
                reference_state, self.load(member.id), name=member.id, reference_name=reference_name
            )

    def to_frame(self) -> pd.DataFrame:
        """One row per member: id, source, kind, head_seed, data_seed, arm, step.

        Seeds and step are nullable integers (``Int64``), so unknown values stay ``<NA>``.
        """
        import pandas as pd

        columns = ["id", "source", "kind", "head_seed", "data_seed", "arm", "step"]
        frame = pd.DataFrame([m.to_dict() for m in self.members], columns=columns)
        for column in ("head_seed", "data_seed", "step"):
            frame[column] = frame[column].astype("Int64")
        return frame


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in _HF_WEIGHT_FILES
    )
