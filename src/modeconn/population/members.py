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

A sidecar holds ``head_seed``, ``data_seed``, ``init_seed`` (the seed a member's whole
model was drawn from, image arms with ``vary: init``; absent otherwise), ``arm`` and
``step`` (all optional), an optional ``id`` that overrides the member id (by default the
file stem or directory name), and anything else, which is kept in ``MemberMeta.extra``::

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

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from modeconn.errors import ConfigError, PopulationError, path_kind

# Loading, hashing and shape checks live in modeconn.population.weights; imported here too,
# so `from modeconn.population.members import load_state_dict` keeps working.
from modeconn.population.weights import (
    HF_WEIGHT_FILES,
    TORCH_SUFFIXES,
    WEIGHT_SUFFIXES,
    MemberKind,
    check_compatible,
    kind_of,
    load_state_dict,
    one_line,
    weights_hash,
)

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

HF_SIDECAR = "modeconn.json"


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class MemberMeta:
    """What produced a member: its seeds, training arm and step. Every field may be unknown;
    ``init_seed`` is known only for a member drawn from its own initialisation.

    ``extra`` keeps any other sidecar field verbatim; it takes no part in ``hash()``.

    >>> m = MemberMeta.from_dict({"head_seed": 3, "arm": "lp-ft", "lr": 2e-5})
    >>> m.head_seed, m.data_seed, m.extra
    (3, None, {'lr': 2e-05})
    >>> MemberMeta.from_dict(m.to_dict()) == m
    True
    """

    head_seed: int | None = None
    data_seed: int | None = None
    init_seed: int | None = None
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
        for name in ("head_seed", "data_seed", "init_seed", "step"):
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
        """The sidecar form: the known fields (``None`` where unknown; ``init_seed`` only when
        known, as the recipes write it), then ``extra``."""
        return {
            "head_seed": self.head_seed,
            "data_seed": self.data_seed,
            **({} if self.init_seed is None else {"init_seed": self.init_seed}),
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
        kind_found = path_kind(source)
        if kind_found not in ("a file", "a folder"):
            what = "does not exist" if kind_found is None else f"is {kind_found}"
            raise PopulationError(
                f"member {source} {what}: pass an existing .safetensors/.pt/.bin/.pth "
                "file or a Hugging Face model directory"
            )
        kind = kind_of(source)
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


def _default_id(source: Path, kind: MemberKind) -> str:
    return source.name if kind == "hf" else source.stem


def _read_sidecar(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PopulationError(
            f"sidecar {path} is not readable JSON ({one_line(err)}); fix it or delete it "
            "(sidecars are optional)"
        ) from None
    if not isinstance(data, dict):
        raise PopulationError(
            f"sidecar {path} holds a JSON {type(data).__name__}, not an object; write it as "
            '{"head_seed": 0, "data_seed": 0, "arm": "plain", "step": 100}'
        )
    return data


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
        found = path_kind(root)
        if found != "a folder":
            what = (
                "does not exist or is not a directory"
                if found is None
                else f"is {found}, not a folder"
            )
            raise PopulationError(
                f"population directory {root} {what}; pass the folder that holds the member "
                "weight files (population.members lists files one by one)"
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

    def hashes(self) -> dict[str, str]:
        """Every member's :meth:`hash`, by id; two members with the same weights raise.

        A population holds distinct models: the same weights under two ids would be
        counted twice by every correlation over members (and their rows, keyed by weights,
        could not be told apart). Raises :class:`PopulationError` naming both ids.
        """
        seen: dict[str, str] = {}
        for member in self.members:
            h = self.hash(member.id)
            if h in seen:
                first = self[seen[h]]
                raise PopulationError(
                    f"members {first.id!r} ({first.source}) and {member.id!r} ({member.source}) "
                    "have the same weights; a population needs distinct models: remove one "
                    "of them (or retrain it with another seed)"
                )
            seen[h] = member.id
        return {member_id: h for h, member_id in seen.items()}

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
        (``init_seed`` is in the report's members table, :func:`modeconn.results.member_table`.)
        """
        import pandas as pd

        columns = ["id", "source", "kind", "head_seed", "data_seed", "arm", "step"]
        frame = pd.DataFrame([m.to_dict() for m in self.members], columns=columns)
        for column in ("head_seed", "data_seed", "step"):
            frame[column] = frame[column].astype("Int64")
        return frame


_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


def check_label_order(folder: Path, label_order: Sequence[str], *, what: str) -> None:
    """Refuse a model directory whose ``config.json`` ``id2label`` disagrees with the study.

    The study's ``model.label_order`` says which class each output logit is; a fine-tuned
    model records its own in ``config.json``. The orders of one task differ by source
    (MNLI: the "BERTs of a feather" runs put contradiction at 0, many hub models
    entailment), and a wrong order gives silently wrong accuracies and HANS scores. Names
    are compared without case; generic names (``LABEL_0``, ``LABEL_1``, …: a config that
    records none) and a folder without ``config.json`` are not checked.

    >>> import tempfile, json
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}}))
    >>> check_label_order(d, ["A", "b"], what="member 'x'")
    >>> check_label_order(d, ["b", "a"], what="member 'x'")
    Traceback (most recent call last):
    ...
    modeconn.errors.ConfigError: member 'x' (.../config.json) has id2label [a, b] but ...
    """
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        raw = json.loads(path.read_text(encoding="utf-8")).get("id2label")
    except (OSError, ValueError, AttributeError):
        return  # an unreadable config fails, with its own message, where the model loads
    if not isinstance(raw, dict) or not raw:
        return
    try:
        names = [str(v) for _, v in sorted(raw.items(), key=lambda kv: int(kv[0]))]
    except (TypeError, ValueError):
        return
    if all(_GENERIC_LABEL.match(n) for n in names):
        return
    if [n.lower() for n in names] != [str(n).lower() for n in label_order]:
        raise ConfigError(
            f"{what} ({path}) has id2label [{', '.join(names)}] but model.label_order is "
            f"[{', '.join(map(str, label_order))}]: its outputs are in another order, and "
            "every accuracy and HANS score would be silently wrong; set model.label_order "
            "to the model's order (or correct id2label in its config.json)"
        )


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in HF_WEIGHT_FILES
    )
