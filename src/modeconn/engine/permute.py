"""Activation matching: align the hidden units of one CNN to another's before interpolating.

A network's hidden units can be reordered without changing its function: permute the
output channels of a conv layer, the BatchNorm that follows it (weight, bias *and*
running statistics) and the input channels of the next layer, and every output is the
same (ReLU and max-pooling act channel by channel, as do the smooth variants' GELU,
softplus and average pooling). Two networks trained apart may thus
sit in one basin up to such a permutation, and a barrier on the plain linear path
between them says nothing until the permutation is undone (Entezari et al., ICLR 2022;
Ainsworth et al., ICLR 2023, "Git Re-Basin").

Lubana et al. (ICML 2023, "Mechanistic Mode Connectivity", Sec. 4 and App. "Permuted
linear connectivity") align network B to network A by **activation matching** before
they test linear connectivity between models trained from scratch:

1. per layer, the post-ReLU activations (the smooth variants: post-GELU / softplus) of
   both networks on the same clean images, each channel's values over
   (images × positions) **centred** (its mean removed);
2. the cosine similarity of every channel of A with every channel of B — on centred
   values this is their Pearson correlation, a (C × C) matrix;
3. the one-to-one assignment of B's channels to A's that maximises the summed similarity
   (the Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``);
4. B's weights permuted accordingly (:func:`apply_permutation`).

Each layer is matched on the networks *as trained*: permuting B's earlier layers leaves
the activations of its later layers unchanged as a set of channels (B computes the same
function), so the layers can be matched independently and the permutations applied
together.

What a permutation touches is a :data:`PermutationSpec`: per hidden layer, the state-dict
entries that carry its channels and the axis along which they do
(:func:`cnn_permutation_spec` writes it for :class:`~modeconn.models.cnn.SmallCNN`).

>>> from modeconn.models.cnn import CNNConfig, build_cnn
>>> spec = cnn_permutation_spec(CNNConfig(widths=(4, 8)))
>>> [(k, axis) for k, axis in spec[0].entries][:3]
[('blocks.0.conv.weight', 0), ('blocks.0.conv.bias', 0), ('blocks.0.bn.weight', 0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from modeconn.errors import DataError, PopulationError
from modeconn.models.cnn import CNNConfig, ConvBlock, SmallCNN


@dataclass(frozen=True)
class PermutedLayer:
    """One hidden layer's channels: its name, width, and every (state-dict key, axis)
    whose entries along that axis follow the layer's channels."""

    name: str
    width: int
    entries: tuple[tuple[str, int], ...]


PermutationSpec = tuple[PermutedLayer, ...]


def cnn_permutation_spec(config: CNNConfig) -> PermutationSpec:
    """The permutation spec of a :class:`SmallCNN`: one layer per conv block.

    Block k's channels are the out-channels of its conv (weight axis 0, bias), its
    BatchNorm's weight, bias, running mean and running variance, and the in-channels of
    what reads them: block k + 1's conv (weight axis 1) or, for the last block, the
    linear head (weight axis 1). ``num_batches_tracked`` is a count, not per channel.
    """
    layers = []
    n = len(config.widths)
    for k, width in enumerate(config.widths):
        own = [(f"blocks.{k}.conv.weight", 0), (f"blocks.{k}.conv.bias", 0)]
        own += [
            (f"blocks.{k}.bn.{p}", 0) for p in ("weight", "bias", "running_mean", "running_var")
        ]
        reader = f"blocks.{k + 1}.conv.weight" if k + 1 < n else "classifier.weight"
        layers.append(PermutedLayer(f"blocks.{k}", width, (*own, (reader, 1))))
    return tuple(layers)


def match_channels(acts_a: NDArray[np.floating], acts_b: NDArray[np.floating]) -> NDArray[np.int64]:
    """The permutation of B's channels that best matches A's, by centred cosine similarity.

    ``acts_a`` and ``acts_b`` are (n, C): n observations (images × positions) of C
    channels of the same layer of each network, on the same inputs. Returns ``perm``
    with B's channel ``perm[i]`` matched to A's channel i (so ``acts_b[:, perm]`` lines
    up with ``acts_a``). A channel that never varies (a dead ReLU) has similarity 0 to
    every channel.

    >>> a = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0]])
    >>> match_channels(a, a[:, [2, 0, 1]]).tolist()
    [1, 2, 0]
    """
    a = np.asarray(acts_a, dtype=np.float64)
    b = np.asarray(acts_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise DataError(
            f"activation matching needs two (observations, channels) arrays of one shape; "
            f"got {a.shape} and {b.shape}"
        )
    sim = channel_similarity(a, b)  # (C, C)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    perm = np.empty(a.shape[1], dtype=np.int64)
    perm[rows] = cols
    return perm


def channel_similarity(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """(C, C) cosine similarity of the centred channels of `a` and `b` (each (n, C)):
    entry [i, j] is the Pearson correlation of A's channel i with B's channel j."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na = np.linalg.norm(a, axis=0)
    nb = np.linalg.norm(b, axis=0)
    sim = (a.T @ b) / np.outer(np.where(na > 0, na, 1.0), np.where(nb > 0, nb, 1.0))
    return sim


def apply_permutation(
    state: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    perms: Sequence[NDArray[np.int64] | Sequence[int]],
) -> dict[str, torch.Tensor]:
    """A new state dict: every entry of each layer of `spec` indexed by its permutation.

    ``perms[k][i]`` is the old channel that becomes channel i of layer k. Entries outside
    the spec (``num_batches_tracked``, the head's bias) are copied unchanged.
    """
    if len(perms) != len(spec):
        raise DataError(f"one permutation per layer of the spec ({len(spec)}); got {len(perms)}")
    out = {k: v.clone() for k, v in state.items()}
    for layer, perm in zip(spec, perms, strict=True):
        p = torch.as_tensor(np.asarray(perm, dtype=np.int64))
        if sorted(p.tolist()) != list(range(layer.width)):
            raise DataError(
                f"layer {layer.name}: a permutation of its {layer.width} channels is needed; "
                f"got {p.tolist()}"
            )
        for key, axis in layer.entries:
            if key not in out:
                raise PopulationError(
                    f"the state dict lacks '{key}', which layer {layer.name} permutes; is it "
                    "the model the spec was written for?"
                )
            out[key] = out[key].index_select(axis, p)
    return out


@torch.no_grad()
def block_activations(model: SmallCNN, batches: Iterable[torch.Tensor]) -> list[np.ndarray]:
    """Post-activation (ReLU, or the block's GELU / softplus), pre-pool outputs of every
    conv block on `batches` of images, in eval mode (BatchNorm with its running
    statistics): per block an (images·H·W, C) float64 array.
    """
    was_training = model.training
    model.eval()
    try:
        per_block: list[list[np.ndarray]] = [[] for _ in model.blocks]
        for images in batches:
            x = images
            for k, block in enumerate(model.blocks):
                assert isinstance(block, ConvBlock)
                h = block.activations(x)  # (B, C, H, W)
                per_block[k].append(
                    h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).double().cpu().numpy()
                )
                x = block.pool(h)
    finally:
        model.train(was_training)
    return [np.concatenate(chunks) for chunks in per_block]


def activation_matching(
    model: SmallCNN,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    batches: Sequence[torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[NDArray[np.int64]]]:
    """B's weights aligned to A's by activation matching, and the permutation per layer.

    `model` is a skeleton of the architecture (its own weights are restored afterwards);
    `batches` are the images (e.g. clean training images) both networks see. The
    returned state computes the same function as `state_b`.
    """
    keep = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        model.load_state_dict(dict(state_a))
        acts_a = block_activations(model, batches)
        model.load_state_dict(dict(state_b))
        acts_b = block_activations(model, batches)
    finally:
        model.load_state_dict(keep)
    perms = [match_channels(a, b) for a, b in zip(acts_a, acts_b, strict=True)]
    return apply_permutation(state_b, cnn_permutation_spec(model.config), perms), perms
