"""The recipes that fine-tune a trained member (Lubana et al. 2023, Table 1), one module
each behind :class:`~modeconn.population.recipes.base.Recipe`, and the arms that use them.

An image study's arm names its recipe and, with ``from``, the arm whose member i its
member i starts from::

    train:
      arms:
        - {name: cue, members: 3, data: train_cue, recipe: cue, vary: data}
        - {name: ft-s, members: 3, data: ft_clean, recipe: ft-s, from: cue}
        - {name: cbft, members: 3, data: ft_clean, recipe: cbft, from: cue}

Defaults, the paper's values (CIFAR-10, 2,500 clean images, batch 256) and ours (MNIST,
the arm's clean set, ``train.batch_size``); the arm's ``lr`` and ``examples`` override them:

=========  ===========================  ==============================================
recipe     paper                        ours (default)
=========  ===========================  ==============================================
ft-s       small lr, 20 epochs, cosine  lr 0.001, 20 epochs of the clean set
ft-m       medium lr, 20 epochs         lr 0.01, 20 epochs
llrt       lr 30, 200 epochs            lr 0.1, 200 epochs (features computed once)
lp-ft      LLRT, then FT                probe as llrt, then FT at lr 0.01, 20 epochs
cbft       lr 0.01, 20 epochs, λ = 1,   lr 0.01, 20 epochs, λ = 1, m = 1
           m = 1
=========  ===========================  ==============================================

LP-FT's probe takes the arm's ``probe_lr`` / ``probe_examples`` when given.
Every recipe: SGD, momentum 0.9, weight decay 1e-4 (none on the linear probe), cosine to 0
(CBFT holds the peak through its warm-up epoch and the next, as the official code does).

A text study (``model.kind: hf``, e.g. MiniLM on MNLI with the token cue of
:mod:`modeconn.data.text_cues`) takes the same arms: the ``cue`` arm is the plain
fine-tuning recipe (AdamW, :mod:`modeconn.population.train`) on a cued text split, and the
``from`` arms run these recipes on the split's token tables (the same tokenization as the
engine's), the features being the pooled [CLS] vector the classifier reads. The defaults
above are image-sized; a text study sets each arm's ``lr`` (``demo-cues-nli``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from modeconn.errors import ConfigError
from modeconn.population.recipes.base import (
    FineTuneConfig,
    Inputs,
    Recipe,
    RecipePlan,
    recipe_fingerprint,
    train_recipe_member,
)
from modeconn.population.recipes.cbft import CBFT
from modeconn.population.recipes.finetune import FineTune
from modeconn.population.recipes.llrt import LLRT
from modeconn.population.recipes.lp_ft import LPFT

if TYPE_CHECKING:
    from modeconn.config.arms import ArmConfig
    from modeconn.config.study import Study
    from modeconn.engine.spec import ModelSource

RECIPES: dict[str, Recipe] = {
    "ft-s": FineTune("ft-s"),
    "ft-m": FineTune("ft-m"),
    "llrt": LLRT(),
    "lp-ft": LPFT(),
    "cbft": CBFT(),
}
# recipe → (peak lr, epochs of the clean set); see the table above
DEFAULTS: dict[str, tuple[float, int]] = {
    "ft-s": (1e-3, 20),
    "ft-m": (1e-2, 20),
    "llrt": (0.1, 200),
    "lp-ft": (1e-2, 20),
    "cbft": (1e-2, 20),
}


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe '{name}'; the recipes are {', '.join(RECIPES)}")
    return RECIPES[name]


def arm_config(arm: ArmConfig, n_clean: int, batch_size: int) -> FineTuneConfig:
    lr, epochs = DEFAULTS[arm.recipe]
    return FineTuneConfig(
        examples=arm.examples or epochs * n_clean,
        batch_size=min(batch_size, n_clean),
        lr=arm.lr or lr,
    )


def _settings(arm: ArmConfig, n_clean: int) -> tuple[tuple[str, Any], ...]:
    if arm.recipe != "lp-ft":
        return ()
    probe_lr, probe_epochs = DEFAULTS["llrt"]
    given = arm.model_fields_set
    return (
        ("probe_examples", arm.probe_examples or probe_epochs * n_clean),
        ("probe_lr", arm.probe_lr if "probe_lr" in given else probe_lr),
    )


def recipe_data(study: Study, name: str) -> tuple[Inputs, torch.Tensor]:
    """Split `name` as a recipe's data: its sample as model inputs, and model-output labels.

    A digits split gives its images; a text split its token tables, sampled, cued and
    tokenized exactly as the engine prepares it (:func:`modeconn.data.text.build_split`).
    """
    recipe = study.split_recipe(name)
    if recipe.kind == "digits":
        from modeconn.data.digits import digits_sample

        return digits_sample(recipe)
    if recipe.kind == "text":
        from modeconn.data.text import build_split

        split = build_split(recipe, study.model.label_order)
        if list(split.groups) != [(i,) for i in range(len(study.model.label_order))]:
            raise ConfigError(
                f"split '{name}' maps its classes {list(split.classes)} onto model outputs "
                "(`classes`); a recipe trains on the model's own labels: remove `classes`"
            )
        return split.example_table().inputs, split.labels
    raise ConfigError(
        f"split '{name}' is of kind '{recipe.kind}'; the recipes read digits or text splits"
    )


def recipe_plans(study: Study, members_dir: Path) -> list[RecipePlan]:
    """The members of every arm with ``from``; their start members must be on disk."""
    from safetensors.torch import load_file

    from modeconn.population.weights import weights_hash

    train = study.train
    if train is None:
        return []
    arms = {a.name: a for a in train.arms}
    plans = []
    for arm in train.arms:
        if arm.from_ is None:
            continue
        source = arms[arm.from_]
        images, labels = recipe_data(study, arm.data)
        cue_images: Inputs | None = None
        cue_labels: torch.Tensor | None = None
        if arm.recipe == "cbft":
            cue_images, cue_labels = recipe_data(study, arm.cue_data or source.data)
        config = arm_config(arm, len(labels), train.batch_size)
        for i in range(arm.members):
            start_id = f"{source.name}-{i % source.members:02d}"
            path = members_dir / f"{start_id}.safetensors"
            if not path.is_file():
                raise ConfigError(
                    f"train.arms[{arm.name}]: its member {i} starts from '{start_id}', not "
                    f"found at {path}; train arm '{source.name}' first"
                )
            start = load_file(str(path))
            plans.append(
                RecipePlan(
                    member_id=f"{arm.name}-{i:02d}",
                    arm=arm.name,
                    recipe=arm.recipe,
                    seed=arm.seed_offset + i,
                    start_id=start_id,
                    start_hash=weights_hash(start),
                    start=start,
                    images=images,
                    labels=labels,
                    config=config,
                    cue_images=cue_images,
                    cue_labels=cue_labels,
                    settings=_settings(arm, len(labels)),
                )
            )
    return plans


def train_recipe_members(
    study: Study,
    source: ModelSource,
    *,
    base: str,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Train (or find) the members of every ``from`` arm, in arm order."""
    from tqdm.auto import tqdm

    from modeconn.models import build_model
    from modeconn.population.train import is_trained

    out = study.members_dir()
    plans = recipe_plans(study, out)
    todo = [p for p in plans if not is_trained(out, p.member_id, recipe_fingerprint(p, base))]
    if todo:
        say(f"fine-tuning {len(todo)} of {len(plans)} members (recipes) into {out}")
    for plan in tqdm(todo, desc="recipes", unit="member", disable=not progress):
        train_recipe_member(
            lambda: build_model(source)[0],
            get(plan.recipe),
            plan,
            out,
            base=base,
            progress=progress,
        )
    return [out / f"{p.member_id}.safetensors" for p in plans]
