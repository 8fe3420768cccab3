"""Member weights: read them without executing code, fingerprint them, compare shapes.

* :func:`load_state_dict` reads a ``.safetensors`` file, a ``.pt``/``.bin``/``.pth`` file
  (only through ``torch.load(weights_only=True)``, whose restricted unpickler runs no code)
  or a Hugging Face directory, and checks every value is a finite dense tensor. A pickle
  that needs code to load raises :class:`~modeconn.errors.UnsafeCheckpointError`, whose
  message says to re-save the weights as safetensors — never to load them with
  ``weights_only=False``, which would run whatever the file holds.
* :func:`weights_hash` is the SHA-256 of a state dict: the store keys every row by it.
* :func:`check_compatible` names the first key where two members' architectures differ.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from modeconn.errors import PopulationError, UnsafeCheckpointError

__all__ = [
    "TORCH_SUFFIXES",
    "WEIGHT_SUFFIXES",
    "MemberKind",
    "check_compatible",
    "kind_of",
    "load_state_dict",
    "weights_hash",
]

MemberKind = Literal["safetensors", "torch", "hf"]

TORCH_SUFFIXES = (".pt", ".bin", ".pth")
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)

# Weight files of a Hugging Face save_pretrained directory, in order of preference.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Keys a training script commonly nests the state dict under (Lightning, plain loops).
_WRAPPER_KEYS = ("state_dict", "model")
_SAVE_HINT = "save model.state_dict() with safetensors.torch.save_file"


def kind_of(source: Path) -> MemberKind:
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
    kind = kind_of(source)
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
            f"{path} is not a readable safetensors file ({one_line(err)}); re-save it: {_SAVE_HINT}"
        ) from None


def _load_torch(path: Path) -> Any:
    try:
        # weights_only=True is the whole point: an explicit True cannot be overridden by
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, and the restricted unpickler runs no code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError.refused(path, err, fix=_SAVE_HINT) from None
    except Exception as err:  # corrupt zip, truncated file, unreadable path
        raise PopulationError(
            f"{path} is not a readable torch checkpoint ({type(err).__name__}: "
            f"{one_line(err)}); re-save it: {_SAVE_HINT}"
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
    for filename in HF_WEIGHT_FILES:
        weights = path / filename
        if not weights.is_file():
            continue
        if filename.endswith(".index.json"):
            return _load_sharded(weights)
        if filename.endswith(".safetensors"):
            return _load_safetensors(weights)
        return _load_torch(weights)
    raise PopulationError(
        f"Hugging Face directory {path} has none of {', '.join(HF_WEIGHT_FILES)}; "
        "save the model with model.save_pretrained(path)"
    )


def _load_sharded(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise PopulationError(
            f"shard index {index} is not a JSON object with a 'weight_map' of key to shard file "
            f"({type(err).__name__}: {one_line(err)}); re-save with model.save_pretrained"
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


def one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
