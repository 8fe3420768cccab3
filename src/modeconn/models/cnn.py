"""A small convolutional classifier with BatchNorm, for image populations.

The mechanistic-connectivity paper (Lubana et al., ICML 2023) studies image classifiers
with BatchNorm (a VGG-13 variant and ResNet-18, SGD from scratch). This is the CPU-sized
version of that family: ``len(widths)`` blocks of conv 3×3 → BatchNorm → ReLU → 2×2
max-pool, then global average pooling and one linear head::

    images (B, C, H, W) → [conv-BN-ReLU-pool] × k → mean over H, W → linear → (B, classes)

**Smooth variants** (``model.options.activation: gelu | softplus``, ``pool: avg``). ReLU
and max-pooling make the loss only piecewise smooth in the weights: along a path its
second derivative has a part concentrated at every kink the path crosses, which a
Hessian-vector product (ReLU'' = 0) never sees. GELU (Hendrycks & Gimpel 2016), softplus
log(1 + eˣ) and 2×2 average pooling are smooth, so the curvature analysis's barrier forms
(:mod:`modeconn.analyses.curvature`, Singh et al. 2024) can be checked on the same family
without the kinks. The defaults (relu, max) are the network above, parameter for
parameter; every variant has the same state-dict keys and shapes (the activation and the
pooling have no weights), so permutations, layer-wise blocks and recipes carry over.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modeconn.config.engine import CNN_CHOICES
from modeconn.errors import ConfigError

HEAD = "classifier"  # the linear classifier's module name (the recipes' head_prefix)


@dataclass(frozen=True)
class CNNConfig:
    """The architecture: channel widths per block, input channels, classes, and the
    blocks' nonlinearity (``activation``) and downsampling (``pool``).

    >>> CNNConfig(widths=(16, 32)).n_params
    5226
    >>> CNNConfig(widths=(16, 32), activation="gelu", pool="avg").n_params
    5226
    """

    widths: tuple[int, ...] = (16, 32, 32)
    in_channels: int = 1
    num_classes: int = 10
    activation: str = "relu"  # relu | gelu | softplus
    pool: str = "max"  # max | avg (2×2, stride 2)

    def __post_init__(self) -> None:
        if not self.widths or any(w < 1 for w in self.widths):
            raise ConfigError(
                f"model.options.widths must list one positive channel count per conv block (e.g. "
                f"[16, 32, 32]); got {list(self.widths)}"
            )
        if self.num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes; got {self.num_classes}")
        for name in CNN_CHOICES:
            value, allowed = getattr(self, name), CNN_CHOICES[name]
            if value not in allowed:
                raise ConfigError(
                    f"model.options.{name} must be one of {', '.join(allowed)}; got {value!r}"
                )

    @property
    def n_params(self) -> int:
        """Trainable parameters (conv weights and biases, BN affine, head)."""
        total, c_in = 0, self.in_channels
        for w in self.widths:
            total += c_in * w * 9 + w + 2 * w  # conv weight + bias, BN weight + bias
            c_in = w
        return total + c_in * self.num_classes + self.num_classes


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": nn.functional.gelu,  # exact (erf) form: smooth
    "softplus": nn.functional.softplus,  # log(1 + exp(x)), beta 1
}


def _max_pool2(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.max_pool2d(x, 2)


def _avg_pool2(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.avg_pool2d(x, 2)


POOLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"max": _max_pool2, "avg": _avg_pool2}


class ConvBlock(nn.Module):
    """conv 3×3 (same padding) → BatchNorm → activation → 2×2 pool (halves H and W).

    :meth:`activations` is the block up to its activation, before pooling (what
    activation matching compares, :mod:`modeconn.engine.permute`); :meth:`pool` the rest.
    Both act channel by channel.
    """

    def __init__(
        self, c_in: int, c_out: int, *, activation: str = "relu", pool: str = "max"
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)
        # plain functions, not modules: the state dict and module names are the ReLU net's
        self.activation, self._act = activation, ACTIVATIONS[activation]
        self.pooling, self._pool = pool, POOLS[pool]

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → (B, C_out, H, W): conv, BatchNorm, activation."""
        return self._act(self.bn(self.conv(x)))

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C, H // 2, W // 2)."""
        return self._pool(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activations(x))

    def extra_repr(self) -> str:
        return f"activation={self.activation}, pool={self.pooling}"


class SmallCNN(nn.Module):
    """conv blocks, global average pool, linear head; ``forward(images=...)`` → logits."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        chans = (config.in_channels, *config.widths)
        self.blocks = nn.Sequential(
            *(
                ConvBlock(a, b, activation=config.activation, pool=config.pool)
                for a, b in itertools.pairwise(chans)
            )
        )
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


def cnn_config(
    widths: Sequence[int],
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    activation: str = "relu",
    pool: str = "max",
) -> CNNConfig:
    """A :class:`CNNConfig` from a study's ``model`` section values."""
    return CNNConfig(tuple(int(w) for w in widths), in_channels, num_classes, activation, pool)


def build_skeleton(source: Any) -> tuple[nn.Module, tuple[str, ...]]:
    """The ``cnn`` model kind (:data:`modeconn.config.engine.MODEL_BUILDERS`): the study's shared
    starting point (``model.options``: ``widths``, ``init_seed``, ``activation``,
    ``pool``), one output per label.

    `source` is a :class:`~modeconn.engine.spec.ModelSource` whose ``options`` carry the
    widths and the init seed. The engine writes each member's weights into it; building it
    from the init seed makes it also the body every member of the study trains from.
    """
    widths = source.option("widths")
    if not widths:
        raise ConfigError("model kind 'cnn' needs model.options.widths (e.g. [16, 32, 32])")
    labels = tuple(source.label_order)
    config = cnn_config(
        widths,
        num_classes=len(labels),
        activation=source.option("activation", "relu"),
        pool=source.option("pool", "max"),
    )
    return build_cnn(config, seed=int(source.option("init_seed", 0))), labels
