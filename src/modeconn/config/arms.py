"""The ``train:`` section of a study: its arms and their recipes (pydantic; torch-free).

An arm is a group of members trained the same way; :class:`TrainSection` lists them and
the settings of the plain recipe. Arms with ``from`` are fine-tuned from the members of an
earlier arm (:mod:`modeconn.population.recipes`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modeconn.config.train import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MixConfig(_Strict):
    split: str
    fraction: float = Field(gt=0.0, lt=1.0)
    label_map: dict[str, str] = Field(default_factory=dict)


# recipes that start from the members of another arm (`from:`), image and text studies
FROM_RECIPES = ("ft-s", "ft-m", "llrt", "lp-ft", "cbft")
IMAGE_RECIPES = ("cue", *FROM_RECIPES)


class ArmConfig(_Strict):
    """One arm of the population: its members, their data and the recipe that trains them.

    Image (``model.kind: cnn``) and text (``hf``) studies also take the recipes of Lubana et
    al. (2023): ``cue`` (the plain recipe on cued data, a name for what ``finetune`` does), and
    ``ft-s``, ``ft-m``, ``llrt``, ``lp-ft``, ``cbft``, each starting member i from member i
    of the arm named by ``from`` (:mod:`modeconn.population.recipes`); ``lr`` and
    ``examples`` override the recipe's defaults, ``cue_data`` is CBFT's cued set (default:
    the ``from`` arm's data).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    members: int = Field(ge=1)
    data: str
    mix: MixConfig | None = None
    seed_offset: int = 0
    vary: Literal["both", "head", "data", "init"] = Field(
        default="both",
        description=(
            "what the member's seed re-draws: both (head and data order), head, data; init "
            "(image arms): the whole initialisation and the data order, a model from scratch"
        ),
    )
    recipe: Literal["finetune", "lp-ft", "cue", "ft-s", "ft-m", "llrt", "cbft"] = Field(
        default="finetune",
        description=(
            "finetune; lp-ft: linear probe of the head, then full fine-tuning; cue, and with "
            "`from` ft-s, ft-m, llrt, lp-ft, cbft (Lubana et al. 2023)"
        ),
    )
    from_: str | None = Field(
        default=None,
        alias="from",
        description="the arm whose member i starts this arm's member i",
    )
    lr: float | None = Field(default=None, gt=0, description="the recipe's learning rate")
    examples: int | None = Field(default=None, ge=1, description="examples seen per member")
    cue_data: str | None = Field(default=None, description="cbft: the cued set (D_C)")
    probe_examples: int | None = Field(
        default=None, ge=1, description="lp-ft: examples seen by the probe (default: examples)"
    )
    probe_lr: float = Field(default=1e-3, gt=0, description="lp-ft: the probe's learning rate")

    @model_validator(mode="after")
    def _probe_needs_lp_ft(self) -> ArmConfig:
        # a value equal to its default is no request (a study read back from a store
        # carries every field, defaults included)
        given = {
            f
            for f in {"probe_examples", "probe_lr"} & self.model_fields_set
            if getattr(self, f) != type(self).model_fields[f].default
        }
        if given and self.recipe != "lp-ft":
            names = " and ".join(sorted(given))
            verb = "is" if len(given) == 1 else "are"
            raise ValueError(
                f"{names} of arm '{self.name}' {verb} used only with `recipe: lp-ft` (the "
                f"arm's recipe is '{self.recipe}'); add `recipe: lp-ft` or remove {names}"
            )
        return self


class TrainSection(_Strict):
    """How to train the population (:mod:`modeconn.population.train`), one entry per arm::

        train:
          examples: 3200
          checkpoints: [0.25, 0.5]     # also keep the weights at 25 % and 50 % of the steps
          arms:
            - {name: ft, members: 10, data: mnli_train}
            - {name: lpft, members: 10, data: mnli_train, recipe: lp-ft,
               probe_examples: 3200, probe_lr: 1.0e-3}

    ``recipe: lp-ft`` (Kumar et al. 2022) trains the head alone on the frozen body for
    ``probe_examples`` examples (default: ``examples``) at ``probe_lr`` first. Checkpoints
    go to ``<out_dir>/checkpoints/<member>@<step>.safetensors``, a population of their own.
    """

    out_dir: str = "members"
    examples: int = Field(default=3200, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=2e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup: float = Field(default=0.1, ge=0, lt=1)
    bucket: int = Field(default=8, ge=1)
    head_prefix: str = "classifier"
    checkpoints: list[float] = Field(
        default_factory=list,
        description="fractions of the steps, each in (0, 1), to also save weights at",
    )
    arms: list[ArmConfig] = Field(min_length=1)

    @field_validator("checkpoints")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0.0 < f < 1.0]
        if bad:
            raise ValueError(
                "fractions of the training steps, each strictly between 0 and 1 (the final "
                f"weights are the member itself); got {bad[0]!r}: write e.g. [0.25, 0.5]"
            )
        return v

    @model_validator(mode="after")
    def _sources(self) -> TrainSection:
        seen: dict[str, ArmConfig] = {}
        for arm in self.arms:
            where = f"train.arms[{arm.name}]"
            if arm.from_ is None and arm.recipe in FROM_RECIPES and arm.recipe != "lp-ft":
                raise ValueError(
                    f"{where}: recipe '{arm.recipe}' starts from trained members; name their "
                    "arm with `from: <arm>` (an earlier arm of recipe cue or finetune)"
                )
            if arm.from_ is not None:
                src = seen.get(arm.from_)
                if src is None:
                    raise ValueError(
                        f"{where}.from names '{arm.from_}', not an earlier arm (arms: "
                        f"{', '.join(a.name for a in self.arms)}); list the source arm first"
                    )
                if src.from_ is not None or src.recipe not in ("cue", "finetune"):
                    raise ValueError(
                        f"{where}.from names '{arm.from_}' (recipe {src.recipe}); a source arm "
                        "is trained from the shared initialisation (recipe cue or finetune)"
                    )
                if arm.recipe not in FROM_RECIPES:
                    raise ValueError(
                        f"{where}: `from` is used by the recipes {', '.join(FROM_RECIPES)}; "
                        f"the arm's recipe is '{arm.recipe}'"
                    )
            if arm.cue_data is not None and arm.recipe != "cbft":
                raise ValueError(f"{where}.cue_data is used only with `recipe: cbft`")
            seen[arm.name] = arm
        return self

    @model_validator(mode="after")
    def _probe_takes_a_step(self) -> TrainSection:
        for arm in self.arms:
            if arm.from_ is None and arm.examples is not None and arm.examples < self.batch_size:
                raise ValueError(
                    f"train.arms[{arm.name}].examples ({arm.examples}) must be at least "
                    f"train.batch_size ({self.batch_size}): the member would take no step"
                )
            if arm.probe_examples is not None and arm.probe_examples < self.batch_size:
                raise ValueError(
                    f"train.arms[{arm.name}].probe_examples ({arm.probe_examples}) must be at "
                    f"least train.batch_size ({self.batch_size}): the probe would take no step"
                )
        return self

    def overrides(self, arm_name: str) -> dict[str, Any]:
        """The arm's own ``examples`` and ``lr``, for an arm trained by the plain recipe.

        Arms with ``from`` read these in their recipe (:mod:`modeconn.population.recipes`);
        an arm without ``from`` trains with ``train``'s values unless it gives its own, so
        ``{name: probe, members: 2, data: x, examples: 320}`` trains 320 examples a member.
        """
        arm = next(a for a in self.arms if a.name == arm_name)
        if arm.from_ is not None:
            return {}
        given = {"examples": arm.examples, "lr": arm.lr}
        return {k: v for k, v in given.items() if v is not None}

    def recipe(self, max_length: int) -> TrainConfig:
        return TrainConfig(
            examples=self.examples,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup=self.warmup,
            max_length=max_length,
            bucket=self.bucket,
            head_prefix=self.head_prefix,
            checkpoints=tuple(self.checkpoints),
        )
