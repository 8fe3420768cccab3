"""A small convolutional classifier with BatchNorm, for image populations.

The mechanistic-connectivity paper (Lubana et al., ICML 2023) studies image classifiers
with BatchNorm (a VGG-13 variant and ResNet-18, SGD from scratch). This is the CPU-sized
version of that family: ``len(widths)`` blocks of conv 3×3 → BatchNorm → ReLU → 2×2
max-pool, then global average pooling and one linear head::

    images (B, C, H, W) → [conv-BN-ReLU-pool] × k → mean over H, W → linear → (B, classes)

The model takes its input by keyword (``model(images=...)``), as every model the engine
evaluates does (``model(**batch)``), and returns the logits tensor.

BatchNorm's running statistics are buffers: a member's state dict holds
``blocks.N.bn.running_mean`` / ``running_var`` (float, interpolated with the weights)
and ``num_batches_tracked`` (an integer, kept from the skeleton). What the statistics
should be at an interpolated point is a policy of the engine (``eval.batchnorm``).

>>> model = build_cnn(CNNConfig(widths=(4, 8)), seed=0)
>>> model(images=torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modeconn.errors import ConfigError

HEAD = "classifier"  # the linear classifier's module name (the recipes' head_prefix)


@dataclass(frozen=True)
class CNNConfig:
    """The architecture: channel widths per block, input channels, classes.

    >>> CNNConfig(widths=(16, 32)).n_params
    5226
    """

    widths: tuple[int, ...] = (16, 32, 32)
    in_channels: int = 1
    num_classes: int = 10

    def __post_init__(self) -> None:
        if not self.widths or any(w < 1 for w in self.widths):
            raise ConfigError(
                f"model.options.widths must list one positive channel count per conv block (e.g. "
                f"[16, 32, 32]); got {list(self.widths)}"
            )
        if self.num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes; got {self.num_classes}")

    @property
    def n_params(self) -> int:
        """Trainable parameters (conv weights and biases, BN affine, head)."""
        total, c_in = 0, self.in_channels
        for w in self.widths:
            total += c_in * w * 9 + w + 2 * w  # conv weight + bias, BN weight + bias
            c_in = w
        return total + c_in * self.num_classes + self.num_classes


class ConvBlock(nn.Module):
    """conv 3×3 (same padding) → BatchNorm → ReLU → 2×2 max-pool (halves H and W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)


class SmallCNN(nn.Module):
    """conv blocks, global average pool, linear head; ``forward(images=...)`` → logits."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        chans = (config.in_channels, *config.widths)
        self.blocks = nn.Sequential(*(ConvBlock(a, b) for a, b in itertools.pairwise(chans)))
        self.classifier = nn.Linear(chans[-1], config.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, widths[-1]): the pooled output of the last block."""
        return self.blocks(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))  # (B, num_classes)


def init_weights(model: nn.Module, *, seed: int, prefix: str = "") -> int:
    """Seeded initialisation of every conv/linear (and BN) module whose name starts with
    `prefix` (all by default); returns how many modules it touched.

    Kaiming-normal conv weights (fan-out, ReLU gain), PyTorch's default uniform linear
    layer, zero biases, BatchNorm at weight 1, bias 0 with fresh running statistics. One
    ``torch.Generator`` seeded with `seed` draws every tensor in module order, so the same
    seed gives the same weights on every machine and the global RNG is not touched.
    """
    gen = torch.Generator().manual_seed(seed)
    touched = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if not name.startswith(prefix) or name == "":
                continue
            if isinstance(mod, nn.Conv2d):
                fan_out = mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
                mod.weight.copy_(
                    torch.randn(mod.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5
                )
            elif isinstance(mod, nn.Linear):
                bound = 1.0 / mod.in_features**0.5
                mod.weight.copy_((torch.rand(mod.weight.shape, generator=gen) * 2 - 1) * bound)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.reset_parameters()  # weight 1, bias 0, running mean 0 / var 1, count 0
                touched += 1
                continue
            else:
                continue
            if mod.bias is not None:
                mod.bias.zero_()
            touched += 1
    return touched


def build_cnn(config: CNNConfig, *, seed: int = 0) -> SmallCNN:
    """A :class:`SmallCNN` with every weight drawn from `seed` (see :func:`init_weights`)."""
    model = SmallCNN(config)
    init_weights(model, seed=seed)
    return model


def cnn_config(widths: Sequence[int], *, in_channels: int = 1, num_classes: int = 10) -> CNNConfig:
    """A :class:`CNNConfig` from a study's ``model`` section values."""
    return CNNConfig(tuple(int(w) for w in widths), in_channels, num_classes)


def build_skeleton(source: Any) -> tuple[nn.Module, tuple[str, ...]]:
    """The ``cnn`` model kind (:data:`modeconn.config.engine.MODEL_BUILDERS`): the study's shared
    starting point (``model.options``: ``widths``, ``init_seed``), one output per label.

    `source` is a :class:`~modeconn.engine.spec.ModelSource` whose ``options`` carry the
    widths and the init seed. The engine writes each member's weights into it; building it
    from the init seed makes it also the body every member of the study trains from.
    """
    widths = source.option("widths")
    if not widths:
        raise ConfigError("model kind 'cnn' needs model.options.widths (e.g. [16, 32, 32])")
    labels = tuple(source.label_order)
    config = cnn_config(widths, num_classes=len(labels))
    return build_cnn(config, seed=int(source.option("init_seed", 0))), labels
