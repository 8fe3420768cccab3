"""Sequential samples (stats.sequential): the stop never fires before min_blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeconn.errors import ConfigError
from modeconn.measures.barriers import convexity_gap
from modeconn.stats.sequential import sequential_gap, should_stop

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    block=st.integers(1, 16),
    min_blocks=st.integers(1, 6),
    blocks=st.integers(1, 12),
    spread=st.sampled_from([0.0, 1e-6, 0.01, 1.0]),
    tolerance=st.sampled_from([1e-9, 0.01, 10.0]),
)
def test_stop_never_fires_before_min_blocks(
    seed: int, block: int, min_blocks: int, blocks: int, spread: float, tolerance: float
) -> None:
    rng = np.random.default_rng(seed)
    n = block * blocks
    sample = rng.normal(1.0, spread, size=(len(ALPHAS), n)) + np.array([[0], [1], [2], [1], [0]])
    for seen in range(1, n + 1):  # any prefix, even a partial block
        stop = should_stop(
            sample[:, :seen],
            ALPHAS,
            block=block,
            min_blocks=min_blocks,
            tolerance=tolerance,
            n_boot=20,
        )
        if seen // block < min_blocks:
            assert not stop
    r = sequential_gap(
        lambda b: sample[:, b * block : (b + 1) * block],
        ALPHAS,
        n,
        block=block,
        min_blocks=min_blocks,
        tolerance=tolerance,
        n_boot=20,
    )
    assert r.blocks >= min(min_blocks, blocks)
    assert r.examples == min(n, r.blocks * block)
    if not r.stopped_early:
        assert r.blocks == blocks  # ran to the end of the sample
    used = sample[:, : r.examples]
    assert r.gap == pytest.approx(convexity_gap(used.mean(axis=1), ALPHAS))


def test_a_clear_pair_stops_early_and_a_noisy_one_does_not() -> None:
    rng = np.random.default_rng(0)
    bump = np.array([[0.0], [0.5], [1.0], [0.5], [0.0]])
    clear = 1 + bump + rng.normal(0, 0.01, size=(5, 512))
    noisy = 1 + bump + rng.normal(0, 2.0, size=(5, 512))
    kw = {"block": 64, "min_blocks": 2, "tolerance": 0.05}
    a = sequential_gap(lambda b: clear[:, 64 * b : 64 * b + 64], ALPHAS, 512, **kw)
    b = sequential_gap(lambda b: noisy[:, 64 * b : 64 * b + 64], ALPHAS, 512, **kw)
    assert a.stopped_early and a.blocks == 2
    assert not b.stopped_early and b.blocks == 8


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="min_blocks"):
        should_stop(np.ones((3, 4)), (0, 0.5, 1), block=2, min_blocks=0, tolerance=0.1)
    with pytest.raises(ConfigError, match="tolerance"):
        should_stop(np.ones((3, 4)), (0, 0.5, 1), block=2, min_blocks=1, tolerance=0)


def test_a_convex_looking_start_does_not_stop_a_barrier() -> None:
    """The gap's own bootstrap interval is [0, 0] when every resample looks convex; the
    rule reads the curve's intervals instead, so noisy convex blocks do not end the path."""
    from modeconn.stats.sequential import bootstrap_gap_interval

    rng = np.random.default_rng(3)
    bowl = np.array([[0.0], [-0.3], [-0.4], [-0.3], [0.0]])  # clearly convex
    sample = 1 + bowl + rng.normal(0, 0.05, size=(5, 512))
    sample[:, 40:] += np.array([[0.0], [0.6], [0.9], [0.6], [0.0]])  # a barrier later on
    first = sample[:, :40]
    assert bootstrap_gap_interval(first, ALPHAS) == (0.0, 0.0)  # would have stopped
    assert not should_stop(first, ALPHAS, block=20, min_blocks=2, tolerance=0.01)
    r = sequential_gap(
        lambda b: sample[:, 20 * b : 20 * b + 20],
        ALPHAS,
        512,
        block=20,
        min_blocks=2,
        tolerance=0.01,
    )
    full = convexity_gap(sample.mean(axis=1), ALPHAS)
    assert r.examples > 40 and abs(r.gap - full) < 0.05
