"""Activation matching (Lubana et al. 2023, permuted linear connectivity): a permuted CNN
computes the same function, and a planted permutation is recovered exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import FLOAT32_LOSS_ATOL

from modeconn.config.splits import DigitsSpec
from modeconn.data.digits import digits_sample
from modeconn.engine.permute import (
    activation_matching,
    apply_permutation,
    channel_similarity,
    cnn_permutation_spec,
    match_channels,
)
from modeconn.errors import DataError
from modeconn.models.cnn import CNNConfig, build_cnn

CONFIG = CNNConfig(widths=(6, 8, 5))
# the ReLU / max-pool network and its smooth variants (model.options.activation, pool)
VARIANTS = [CONFIG, CNNConfig(widths=(6, 8, 5), activation="gelu", pool="avg"),
            CNNConfig(widths=(6, 8, 5), activation="softplus", pool="max")]  # fmt: skip
VARIANT_IDS = ["relu-max", "gelu-avg", "softplus-max"]


def _trained_like(seed: int, config: CNNConfig = CONFIG) -> torch.nn.Module:
    """A CNN with random BatchNorm statistics and affine parameters (a fresh init has
    them at 0/1, which would leave channels too alike to test the matching)."""
    model = build_cnn(config, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for block in model.blocks:
            c = block.bn.num_features
            block.bn.weight.copy_(0.5 + torch.rand(c, generator=gen))
            block.bn.bias.copy_(0.3 * torch.randn(c, generator=gen))
            block.bn.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            block.bn.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            block.conv.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    x, _ = digits_sample(DigitsSpec(name="t", part="train", sample_size=48, sample_seed=3))
    return x


def _planted(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(w) for w in CONFIG.widths]


@pytest.mark.parametrize("config", VARIANTS, ids=VARIANT_IDS)
def test_a_permuted_network_computes_the_same_function(
    images: torch.Tensor, config: CNNConfig
) -> None:
    model = _trained_like(0, config)
    state = model.state_dict()
    before = model(images=images)
    spec = cnn_permutation_spec(CONFIG)
    permuted = apply_permutation(state, spec, _planted(1))
    assert any(not torch.equal(permuted[k], state[k]) for k in state)  # the weights moved
    model.load_state_dict(permuted)
    after = model.eval()(images=images)
    torch.testing.assert_close(after, before, atol=FLOAT32_LOSS_ATOL, rtol=1e-5)
    # the features too: only the hidden channels moved, the head reads them in their order
    assert permuted["classifier.bias"].equal(state["classifier.bias"])
    assert permuted["blocks.0.bn.num_batches_tracked"].equal(
        state["blocks.0.bn.num_batches_tracked"]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_permutation_is_recovered_exactly(images: torch.Tensor, seed: int) -> None:
    model = _trained_like(seed)
    state_a = {k: v.clone() for k, v in model.state_dict().items()}
    spec = cnn_permutation_spec(CONFIG)
    planted = _planted(seed + 10)
    state_b = apply_permutation(state_a, spec, planted)  # B = A with its channels shuffled
    aligned, perms = activation_matching(model, state_a, state_b, [images[:24], images[24:]])
    # B's channel perm[i] is A's channel i: the inverse of the planted shuffle
    for p, q in zip(perms, planted, strict=True):
        assert np.array_equal(q[p], np.arange(len(q)))
    for key in state_a:
        assert torch.equal(aligned[key], state_a[key]), key
    # the skeleton's own weights are left as they were
    assert all(torch.equal(v, state_a[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("config", VARIANTS[1:], ids=VARIANT_IDS[1:])
def test_matching_reads_the_smooth_blocks_own_activations(
    images: torch.Tensor, config: CNNConfig
) -> None:
    """A smooth variant's planted permutation is recovered from its own (GELU / softplus,
    average-pooled) activations, and the aligned B computes A's function."""
    model = _trained_like(4, config)
    state_a = {k: v.clone() for k, v in model.state_dict().items()}
    planted = _planted(7)
    state_b = apply_permutation(state_a, cnn_permutation_spec(config), planted)
    aligned, perms = activation_matching(model, state_a, state_b, [images])
    for p, q in zip(perms, planted, strict=True):
        assert np.array_equal(q[p], np.arange(len(q)))
    before = model(images=images)
    model.load_state_dict(aligned)
    torch.testing.assert_close(model(images=images), before, atol=FLOAT32_LOSS_ATOL, rtol=1e-5)


def test_the_similarity_is_the_pearson_correlation() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 3)) + 2.0
    ref = np.corrcoef(a.T, b.T)[:4, 4:]  # float64 reference
    assert np.allclose(channel_similarity(a, b), ref, atol=1e-12)


def test_a_dead_channel_matches_what_is_left() -> None:
    a = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 3.0]])  # channel 0 is dead
    b = a[:, [1, 2, 0]]
    assert match_channels(a, b).tolist() == [2, 0, 1]


def test_bad_permutations_are_refused() -> None:
    state = build_cnn(CONFIG, seed=0).state_dict()
    spec = cnn_permutation_spec(CONFIG)
    with pytest.raises(DataError, match=r"blocks\.1: a permutation of its 8 channels"):
        apply_permutation(state, spec, [np.arange(6), np.zeros(8, int), np.arange(5)])
    with pytest.raises(DataError, match="one permutation per layer"):
        apply_permutation(state, spec, [np.arange(6)])
    with pytest.raises(DataError, match="of one shape"):
        match_channels(np.zeros((4, 2)), np.zeros((4, 3)))
