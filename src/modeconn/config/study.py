"""The study file: one YAML document that says what to train, sweep and cluster.

Validated with pydantic; every problem becomes one :class:`~modeconn.errors.ConfigError`
line naming the field, what was expected and what was received. Relative paths resolve
against the study file's folder (``output_dir``, members) or ``data_root`` (split files).
A minimal study::

    name: my-mnli
    output_dir: runs/my-mnli
    model:
      pretrained: /models/bert-base-uncased
      label_order: [entailment, neutral, contradiction]
    population: {dir: /models/mnli-seeds}
    splits:
      mnli: {path: mnli/dev_matched.tsv, text_a: premise, text_b: hypothesis, label: gold_label}
      hans_lo:
        path: hans/eval.tsv
        text_a: sentence1
        text_b: sentence2
        label: gold_label
        where: {heuristic: [lexical_overlap], gold_label: [non-entailment]}
        classes: {entailment: [entailment], non-entailment: [neutral, contradiction]}
        role: ood
    paths: {splits: [mnli, hans_lo]}
    basins: {split: mnli, ood: [hans_lo]}

An optional ``sweep`` section spreads the path evaluations over worker processes or a
Ray cluster (:mod:`modeconn.engine.backends`); without it the sweep runs in this process::

    sweep: {backend: ray, workers: 8, threads_per_worker: 2, address: null, max_retries: 3}
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from modeconn.config import sections, yamlfile
from modeconn.config.basins import BasinsConfig
from modeconn.config.engine import EvalConfig, ModelConfig, SweepConfig
from modeconn.config.paths import PathsConfig, SequentialConfig, check_paths
from modeconn.config.splits import (
    SPLIT_KINDS,
    SplitConfig,
    SplitEntry,
    SplitSpec,
    split_kind,
)
from modeconn.config.splits import resolve_path as _resolve

__all__ = [
    "ArmConfig",
    "EvalConfig",
    "MixConfig",
    "ModelConfig",
    "PathsConfig",
    "SequentialConfig",
    "SplitConfig",
    "SplitSpec",
    "Study",
    "SweepConfig",
    "TrainConfig",
    "TrainSection",
    "load_study",
    "parse_study",
]
from modeconn.config.arms import ArmConfig, MixConfig, TrainSection
from modeconn.config.train import TrainConfig
from modeconn.errors import ConfigError, path_kind

BUILTIN_MODEL = "builtin:all-MiniLM-L6-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _split_entry_type() -> Any:
    """A `splits:` entry: the model registered for its ``kind`` (text when it names none)."""
    choices = tuple(Annotated[cls, Tag(kind)] for kind, cls in SPLIT_KINDS.items())
    union = choices[0] if len(choices) == 1 else Union[choices]  # noqa: UP007
    return Annotated[
        union,
        Discriminator(
            split_kind,
            custom_error_type="split_kind",
            custom_error_message=f"unknown split kind; known kinds: {', '.join(SPLIT_KINDS)}",
        ),
    ]


SplitEntryType = _split_entry_type()


class PopulationConfig(_Strict):
    dir: str | None = None
    members: list[str] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PopulationConfig:
        if (self.dir is None) == (self.members is None):
            raise ValueError("give exactly one of `dir` (a folder of members) or `members`")
        return self


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: str
    report_dir: str = Field(
        default="report", description="the HTML report's folder, relative to output_dir"
    )
    data_root: str | None = None
    model: ModelConfig
    splits: dict[str, SplitEntryType]  # type: ignore[valid-type]
    train: TrainSection | None = None
    population: PopulationConfig | None = None
    paths: PathsConfig
    member_splits: list[str] = Field(
        default_factory=list, description="splits evaluated per member only (e.g. full OOD sets)"
    )
    basins: BasinsConfig
    eval: EvalConfig = EvalConfig()
    sweep: SweepConfig = SweepConfig()
    analyses: dict[str, Any] = Field(
        default_factory=dict,
        description="one section per analysis, each validated by its own type "
        "(modeconn.config.sections; `modeconn analyses` lists them)",
    )
    base_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _analysis_sections(cls, data: Any) -> Any:
        """Each ``analyses.<key>`` validated by the section type its analysis registered."""
        if isinstance(data, dict):
            raw = data.get("analyses")
            data = {**data, "analyses": sections.validate(raw, _section_error)}
        return data

    @field_validator("splits")
    @classmethod
    def _some_splits(cls, v: dict[str, SplitEntry]) -> dict[str, SplitEntry]:
        if not v:
            raise ValueError("declare at least one split")
        return v

    @model_validator(mode="after")
    def _references(self) -> Study:
        need = self.check_split
        for s in self.paths.splits:
            need("paths.splits", s)
        if self.eval.batchnorm_split is not None:
            need("eval.batchnorm_split", self.eval.batchnorm_split)
        for s in self.member_splits:
            need("member_splits", s)
        need("basins.split", self.basins.split)
        if self.basins.split not in self.paths.splits:
            raise ValueError(
                f"basins.split '{self.basins.split}' must be one of paths.splits "
                f"{self.paths.splits}: the distance is computed from its path curves"
            )
        for s in self.basins.ood:
            need("basins.ood", s)
        if self.basins.sort_by is not None:
            need("basins.sort_by", self.basins.sort_by)
        for name in self.splits:
            entry = self.split_entry(name)
            if isinstance(entry, SplitConfig) and entry.cue != "none":
                try:  # one cue word per class: checked now, before anything is read
                    entry.cue_words(name, self.model.label_order)
                except ConfigError as err:
                    raise ValueError(str(err)) from None
        if self.train is not None:
            for arm in self.train.arms:
                need(f"train.arms[{arm.name}].data", arm.data)
                if arm.mix is not None:
                    need(f"train.arms[{arm.name}].mix.split", arm.mix.split)
                if arm.cue_data is not None:
                    need(f"train.arms[{arm.name}].cue_data", arm.cue_data)
                if arm.vary == "init" and arm.from_ is not None:
                    raise ValueError(
                        f"train.arms[{arm.name}].vary: 'init' draws a fresh initialisation, "
                        f"but the arm starts from the members of '{arm.from_}'; remove "
                        "`vary: init` (or `from`)"
                    )
                if arm.vary == "init" and self.model.kind != "cnn":
                    raise ValueError(
                        f"train.arms[{arm.name}].vary: 'init' re-draws the whole "
                        f"initialisation of an image model (model.kind: cnn); a "
                        f"'{self.model.kind}' member starts from its pretrained body: use "
                        "vary: both, head or data"
                    )
                if arm.from_ is not None and arm.mix is not None:
                    raise ValueError(
                        f"train.arms[{arm.name}].mix: an arm with `from` fine-tunes trained "
                        "members on its `data` alone; remove `mix` (or `from`)"
                    )
        self._check_landmarks()
        check_paths(self)
        sections.check(self)
        if self.train is None and self.population is None:
            raise ValueError("give `population` (existing members) or `train` (to make them)")
        return self

    def _check_landmarks(self) -> None:
        m = self.basins.landmarks
        if m is None:
            defaults = {"landmark_choice": "random", "landmark_completion": "nystrom"}
            for key, default in defaults.items():
                if getattr(self.basins, key) != default:
                    raise ValueError(
                        f"basins.{key} is set but basins.landmarks is not: every pair is "
                        f"measured and nothing is completed; set basins.landmarks: m or "
                        f"remove basins.{key}"
                    )
            return
        for key in ("distances", "uncertainty", "trajectory"):
            if sections.is_set(self.analyses.get(key)):
                raise ValueError(
                    f"basins.landmarks measures only the paths to {m} landmarks, but "
                    f"analyses.{key} needs every pair; remove analyses.{key} or "
                    "basins.landmarks"
                )
        if self.basins.n_basins is not None and m < self.basins.n_basins:
            raise ValueError(
                f"basins.landmarks ({m}) must be at least basins.n_basins "
                f"({self.basins.n_basins}): each basin needs a landmark to be seen"
            )

    def check_split(self, field: str, name: str) -> None:
        """Raise ValueError unless split `name` (named by `field`) is declared."""
        if name not in self.splits:
            raise ValueError(
                f"{field} names split '{name}', which is not declared under `splits` "
                f"(declared: {', '.join(sorted(self.splits))}); declare it or fix the name"
            )

    # ---- resolved paths -------------------------------------------------------------

    @property
    def base(self) -> Path:
        return Path(self.base_dir)

    def out_path(self) -> Path:
        return _resolve(self.base, self.output_dir)

    def store_path(self) -> Path:
        return self.out_path() / "results.sqlite"

    def members_dir(self) -> Path:
        if self.population is not None and self.population.dir is not None:
            return _resolve(self.base, self.population.dir)
        assert self.train is not None
        return _resolve(self.out_path(), self.train.out_dir)

    def section(self, key: str) -> Any:
        """The typed section ``analyses.<key>`` (None, or ``[]`` for a list, if not set)."""
        return self.analyses.get(key)

    def resolve(self, path: str) -> Path:
        """A path of the study file, relative to the study's folder."""
        return _resolve(self.base, path)

    def member_paths(self) -> list[Path] | None:
        if self.population is not None and self.population.members is not None:
            return [_resolve(self.base, p) for p in self.population.members]
        return None

    def data_path(self) -> Path:
        return find_data_root(self.data_root, self.base)

    def split_entry(self, name: str) -> SplitEntry:
        if name not in self.splits:
            raise ConfigError(
                f"unknown split '{name}'; this study declares: {', '.join(sorted(self.splits))}"
            )
        entry: SplitEntry = self.splits[name]
        return entry

    def split_spec(self, name: str) -> SplitSpec:
        """A text split's spec (what training and the text engine read)."""
        entry = self.split_entry(name)
        if not isinstance(entry, SplitConfig):
            raise ConfigError(
                f"split '{name}' is of kind '{entry.kind}', not a text split; this step reads "
                "text splits only"
            )
        return entry.spec(name, self.data_path(), self.model.label_order)

    def split_recipe(self, name: str) -> Any:
        """The frozen recipe the engine prepares split `name` from (any kind)."""
        return self.split_entry(name).recipe(name, self)

    def model_source(self) -> str:
        """The model's source for a worker: a ``builtin:`` name, else an absolute path."""
        p = self.model.pretrained
        if p is None:  # a kind built from its options alone (cnn)
            return f"{self.model.kind}:"
        if p.lower().startswith("builtin:"):
            return p
        return str(_resolve(self.base, p).resolve())

    def batchnorm_split(self) -> str | None:
        """The split BatchNorm statistics are re-estimated on (``eval.batchnorm_split``,
        else the first training arm's data), or None."""
        if self.eval.batchnorm_split is not None:
            return self.eval.batchnorm_split
        if self.train is not None:
            return self.train.arms[0].data
        return None

    def eval_splits(self) -> list[str]:
        """Every split evaluated per member: path splits first, then member-only splits."""
        extra = sections.eval_splits(self.analyses)
        return list(
            dict.fromkeys([*self.paths.splits, *self.member_splits, *self.basins.ood, *extra])
        )


def refresh_split_kinds() -> None:
    """Rebuild the study model after a split kind was added to ``SPLIT_KINDS`` at run time
    (:func:`modeconn.data.base.register_split_kind`); kinds listed in the source need not."""
    Study.model_fields["splits"].annotation = dict[str, _split_entry_type()]  # type: ignore[assignment,misc]
    Study.model_rebuild(force=True)


def find_data_root(declared: str | None, base: Path) -> Path:
    """The folder split paths are relative to.

    In order: ``MODECONN_DATA``; the study's ``data_root`` (relative to the study file);
    else a ``shared/data`` folder in or beside the current directory or one of its
    parents, or beside the package's checkout.
    """
    env = os.environ.get("MODECONN_DATA")
    if env:
        candidates = [Path(env).expanduser()]
    elif declared is not None:
        candidates = [_resolve(base, declared)]
    else:
        here = Path(__file__).resolve()
        roots = [Path.cwd(), *Path.cwd().parents, *here.parents]
        candidates = list(dict.fromkeys(r / "shared" / "data" for r in roots))
    for c in candidates:
        if c.is_dir():
            return c
    tried = ", ".join(str(c) for c in candidates[:4])
    raise ConfigError(
        f"data root not found (tried {tried}); set MODECONN_DATA=/path/to/data or the study's "
        "`data_root`"
    )


def _section_error(err: ValidationError, prefix: str) -> str:
    return format_validation_error(err, "", prefix=prefix)


def format_validation_error(err: ValidationError, source: str, *, prefix: str = "") -> str:
    """One line per problem: ``source: field.path: what was expected; got …``.

    ``prefix`` names where the validated value sits (``analyses.sharpness``); its fields
    are then written in full (``analyses.sharpness.epsilon: …``) without a source.
    """
    lines = []
    for e in err.errors():
        parts = [p for p in e["loc"] if p != "root"]
        if len(parts) >= 3 and parts[0] == "splits" and parts[2] in SPLIT_KINDS:
            del parts[2]  # the kind's tag, which the entry itself names
        names = [str(p) for p in parts]
        loc = ".".join([prefix, *names] if prefix else names) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling against the study format"
        elif e["type"] == "missing":
            msg = "required field is missing; add it"
        else:
            msg = msg.replace("Input should be", "expected")
        got = e.get("input")
        if e["type"] == "split_kind":
            msg = (
                f"unknown split kind {split_kind(got)!r}; known kinds: "
                f"{', '.join(sorted(SPLIT_KINDS))}"
            )
        quiet = e["type"] in ("missing", "extra_forbidden", "value_error", "split_kind")
        shown = "" if quiet else f"; got {got!r:.60}"
        where = f"{loc}: " if (e["loc"] or prefix) else ""
        lines.append(f"{source}: {where}{msg}{shown}" if source else f"{where}{msg}{shown}")
    return "; ".join(lines)


def parse_study(data: Any, *, source: str = "<study>", base_dir: Path | None = None) -> Study:
    """Validate a study given as a mapping; raise ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a study must be a mapping of fields; got {type(data).__name__}"
        )
    try:
        return Study.model_validate({**data, "base_dir": str(base_dir or Path.cwd())})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_study(path: str | Path, **overrides: Any) -> Study:
    """Read and validate a study YAML file. `overrides` replace top-level fields.

    A study may start from another: ``extends: demo-mnli`` (a built-in study) or
    ``extends: base.yaml`` (relative to this file). The base's fields are merged with this
    file's: mappings merge key by key, anything else (lists, numbers, strings) is replaced.
    """
    p = Path(path)
    data = _read_yaml(p)
    if isinstance(data, dict):
        data = _extend(data, p, seen=(p.resolve(),))
        data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_study(data, source=str(p), base_dir=p.resolve().parent)


def _extend(data: dict[str, Any], path: Path, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    """`data` merged over the study it ``extends`` (recursively), without the key itself."""
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(
            f"{path}: extends: expected a built-in study name or a YAML path; got {base_name!r}"
        )
    candidate = _resolve(path.resolve().parent, base_name)
    base_path = candidate if candidate.suffix in (".yaml", ".yml") else None
    if base_path is None:
        base_path = builtin_study_path(base_name)
    if base_path.resolve() in seen:
        raise ConfigError(f"{path}: extends: {base_name} extends itself (a cycle); break it")
    base = _read_yaml(base_path)
    if not isinstance(base, dict):
        raise ConfigError(f"{base_path}: a study must be a mapping of fields")
    base = _extend(base, base_path, seen=(*seen, base_path.resolve()))
    return _merge(base, data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(p: Path) -> Any:
    kind = path_kind(p)
    if kind is None:
        raise ConfigError(f"study file {p} does not exist; check the path")
    if kind != "a file":
        raise ConfigError(f"study file {p} is {kind}, not a file; give the path of a YAML study")
    size = p.stat().st_size
    if size > yamlfile.MAX_CHARS * 4:  # UTF-8: at most 4 bytes a character; read no more
        raise ConfigError(
            f"{p}: too large to be a study ({size:,} bytes; a study is a few kilobytes); "
            "give the path of a YAML study"
        )
    try:
        data = yamlfile.load(p.read_text(encoding="utf-8"))  # safe, and no duplicate keys
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not a text file (byte {exc.start} is not UTF-8); give a YAML study file"
        ) from None
    except yamlfile.ParseLimitError as exc:
        raise ConfigError(
            f"{p}: too large or too complex to be a study: {_yaml_problem(exc)}; a study is "
            "a few kilobytes of plain mappings and lists"
        ) from None
    except yamlfile.DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise ConfigError(
            f"{p}: key {exc.key!r} appears twice in one mapping, at line {exc.first_line} and "
            f"line {line}; YAML would keep only the last: remove or rename one"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {_yaml_problem(exc)}; fix the syntax") from None
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split())


def builtin_studies() -> list[str]:
    """Names of the built-in studies (``modeconn demo --study NAME``)."""
    folder = resources.files("modeconn") / "studies"
    names = (p.name for p in folder.iterdir())
    return sorted(n.removesuffix(".yaml") for n in names if n.endswith(".yaml"))


def builtin_study_path(name: str = "demo-mnli") -> Path:
    ref = resources.files("modeconn") / "studies" / f"{name}.yaml"
    with resources.as_file(ref) as p:
        if not p.is_file():
            raise ConfigError(
                f"no built-in study named '{name}'; the built-in studies are: "
                f"{', '.join(builtin_studies())}"
            )
        return p
