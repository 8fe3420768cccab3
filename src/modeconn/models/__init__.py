"""Model kinds: how the engine builds the skeleton it evaluates every point with.

A study's ``model.kind`` names one entry of :data:`MODEL_BUILDERS`, a
``"module:function"`` taking a :class:`~modeconn.engine.spec.ModelSource` and returning
``(skeleton, label_order)``: the architecture with any weights (members are written into
it point by point) and the class name of each model output. ``hf`` is a Hugging Face
sequence classifier (:mod:`modeconn.models.hf`); a new kind (a CNN) adds one line here.
Torch-free until a builder is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modeconn.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

MODEL_BUILDERS: dict[str, str] = {
    "hf": "modeconn.models.hf:build_skeleton",
    "cnn": "modeconn.models.cnn:build_skeleton",
}


def build_model(source: Any) -> tuple[nn.Module, tuple[str, ...]]:
    """The skeleton and label order of the model `source` describes (its ``kind``)."""
    target = MODEL_BUILDERS.get(source.kind)
    if target is None:
        raise ConfigError(
            f"model.kind {source.kind!r} is not a known model kind; known: "
            f"{', '.join(sorted(MODEL_BUILDERS))}"
        )
    module, _, attr = target.partition(":")
    fn: Callable[[Any], tuple[nn.Module, tuple[str, ...]]] = getattr(
        importlib.import_module(module), attr
    )
    return fn(source)
