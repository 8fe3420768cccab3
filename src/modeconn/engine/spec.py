"""One engine spec: what builds the evaluator and the prepared splits, anywhere.

:class:`EngineSpec` is a frozen, picklable, torch-free description of an evaluation
engine: the model (:class:`ModelSource`: kind, weights' source, label order), one recipe
per split (any kind, :mod:`modeconn.data.base`), the evaluation options (device, dtype,
compile, threads) and the BatchNorm policy. :func:`engine_spec` reads it from a study;
:func:`build_engine` turns it into an :class:`~modeconn.engine.evaluate.Evaluator` and its
splits. The study runner (:class:`modeconn.pipeline.StudyRunner`) and every process or
Ray sweep worker (:mod:`modeconn.engine.pools`) build through this one function, so a new
kind of split or model changes neither.

**BatchNorm.** A linear path θα = αθA + (1−α)θB interpolates every float state entry,
BatchNorm running means and variances included; but the running statistics of θα are
not the interpolated ones (the activations' moments are not linear in the weights), and a
path evaluated with them shows barriers that re-estimated statistics remove (Jordan et al.
2023, "REPAIR"). Lubana et al. (2023, Mechanistic Mode Connectivity) therefore reset the
statistics at every α and re-estimate them in train mode over the clean training set.
``eval.batchnorm`` picks the policy for a model with BatchNorm layers:

* ``reestimate`` (the default) — at every point (member, path, plane), reset the running
  statistics and re-estimate them by forward passes in train mode, without gradients,
  with ``momentum=None`` (a cumulative average over the batches), over the split named by
  ``eval.batchnorm_split`` (``eval.batchnorm_batches`` batches of it, all by default);
* ``interpolate`` — keep the interpolated float buffers (the engine's behaviour for
  every model before the policy existed).

The policy is part of a point's key: a model with BatchNorm keys its rows under
``split#fingerprint|bn=reestimate:<batchnorm split key>[:batches]`` (or
``|bn=interpolate``), so rows of one policy never resume another. A model without
BatchNorm ignores the policy and its keys are the plain ``split#fingerprint``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modeconn.errors import ConfigError

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.data.base import Split, SplitRecipe
    from modeconn.engine.evaluate import Evaluator

BatchNormMode = Literal["reestimate", "interpolate"]


@dataclass(frozen=True)
class ModelSource:
    """Where the engine's skeleton comes from; ``kind`` picks the builder
    (:data:`modeconn.config.engine.MODEL_BUILDERS`). ``path`` is an absolute directory or a
    ``builtin:`` name each worker resolves from its own installed package; ``options``
    are kind-specific settings as sorted ``(name, value)`` pairs."""

    kind: str
    path: str
    label_order: tuple[str, ...]
    num_layers: int | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class BatchNormPolicy:
    """``eval.batchnorm``; ``recipe`` is the split statistics are re-estimated on."""

    mode: BatchNormMode = "reestimate"
    recipe: Any = None  # a SplitRecipe, or None when no split is declared
    batches: int | None = None  # batches of the split to use; None = all


@dataclass(frozen=True)
class EngineSpec:
    """Everything that builds an evaluator and its splits; small and picklable."""

    model: ModelSource
    splits: tuple[Any, ...]  # SplitRecipe of every evaluation split, in study order
    batchnorm: BatchNormPolicy = BatchNormPolicy()
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False
    threads: int | None = None

    def with_threads(self, threads: int | None) -> EngineSpec:
        return dataclasses.replace(self, threads=threads)


def engine_spec(study: Study) -> EngineSpec:
    """The engine a study asks for (torch-free): model, evaluation splits, options."""
    ev = study.eval
    recipes = tuple(study.split_recipe(name) for name in study.eval_splits())
    bn_split = study.batchnorm_split()
    return EngineSpec(
        model=ModelSource(
            kind=study.model.kind,
            path=study.model_source(),
            label_order=tuple(study.model.label_order),
            num_layers=study.model.num_layers,
            options=tuple(sorted(study.model.kind_options().items())),
        ),
        splits=recipes,
        batchnorm=BatchNormPolicy(
            mode=ev.batchnorm,
            recipe=None if bn_split is None else study.split_recipe(bn_split),
            batches=ev.batchnorm_batches,
        ),
        device=ev.device,
        dtype=ev.dtype,
        compile=ev.compile,
        threads=ev.threads,
    )


def build_engine(spec: EngineSpec) -> tuple[Evaluator, dict[str, Split]]:
    """The evaluator and the prepared splits (keyed for its BatchNorm policy) of `spec`.

    The model is built first: its label order maps every split's classes, and whether it
    has BatchNorm decides if the re-estimation split is prepared at all.
    """
    from modeconn.data.base import build_split
    from modeconn.engine.evaluate import Evaluator, has_batchnorm
    from modeconn.models import build_model

    skeleton, labels = build_model(spec.model)
    bn = spec.batchnorm
    splits = {r.name: build_split(r, labels) for r in spec.splits}
    bn_split = None
    if has_batchnorm(skeleton) and bn.mode == "reestimate":
        if bn.recipe is None:
            raise ConfigError(
                "the model has BatchNorm layers and eval.batchnorm is 'reestimate', but no "
                "split to re-estimate their statistics on: set eval.batchnorm_split to a "
                "declared training split, or `eval.batchnorm: interpolate`"
            )
        bn_split = splits.get(bn.recipe.name) or build_split(bn.recipe, labels)
    evaluator = Evaluator(
        skeleton,
        device=spec.device,
        dtype=spec.dtype,
        compile=spec.compile,
        batchnorm=bn.mode,
        batchnorm_split=bn_split,
        batchnorm_batches=bn.batches,
    )
    return evaluator, {name: evaluator.keyed(s) for name, s in splits.items()}


def resolved(recipe: SplitRecipe) -> SplitRecipe:
    """`recipe` with its data paths absolute (a worker's working directory is not ours)."""
    spec = getattr(recipe, "spec", None)
    if spec is not None and isinstance(getattr(spec, "path", None), Path):
        return dataclasses.replace(  # type: ignore[type-var]
            recipe, spec=dataclasses.replace(spec, path=spec.path.resolve())
        )
    path = getattr(recipe, "path", None)
    if isinstance(path, Path) and dataclasses.is_dataclass(recipe):
        return dataclasses.replace(recipe, path=path.resolve())
    return recipe


def check_keys(splits: Mapping[str, Split], keys: Sequence[tuple[str, str]], where: str) -> None:
    """Raise DataError unless every split reads as the key the plan used."""
    from modeconn.errors import DataError

    for name, key in keys:
        got = splits[name].key
        if got != key:
            recipe_path = getattr(splits[name].spec, "path", None)
            source = f" ({recipe_path})" if recipe_path is not None else ""
            raise DataError(
                f"split '{name}'{source} reads as {got} on worker {where}, but the sweep was "
                f"planned with {key}; give every worker the same data files and the same "
                "modeconn/tokenizer versions"
            )
