"""Adaptive α grids (stats.adaptive_grid): the full lattice's convexity gap, to tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeconn.errors import ConfigError
from modeconn.measures.barriers import convexity_gap
from modeconn.stats.adaptive_grid import adaptive_gap, coarse_indices, to_refine

LATTICE = tuple(k / 20 for k in range(21))  # the 21-point grid


def _curve(params: dict, alphas: tuple[float, ...] = LATTICE) -> np.ndarray:
    """A convex bowl plus Gaussian bumps (widths ≥ the coarse spacing's half)."""
    x = np.asarray(alphas)
    y = params["a"] * (x - params["c"]) ** 2 + params["slope"] * x + params["base"]
    for h, mu, sigma in params["bumps"]:
        y = y + h * np.exp(-(((x - mu) / sigma) ** 2) / 2)
    return y


bump = st.tuples(
    st.floats(0.0, 3.0),  # height
    st.floats(0.0, 1.0),  # centre
    st.floats(0.1, 0.4),  # width σ (the coarse spacing is 0.25)
)
curves = st.fixed_dictionaries(
    {
        "a": st.floats(0.0, 4.0),
        "c": st.floats(0.0, 1.0),
        "slope": st.floats(-2.0, 2.0),
        "base": st.floats(0.0, 3.0),
        "bumps": st.lists(bump, max_size=2),
    }
)


@settings(max_examples=500, deadline=None)
@given(params=curves, tolerance=st.sampled_from([0.003, 0.01, 0.03]))
def test_adaptive_gap_equals_full_grid_gap(params: dict, tolerance: float) -> None:
    y = _curve(params)
    full = convexity_gap(y, LATTICE)
    calls: list[int] = []

    def evaluate(k: int) -> float:
        calls.append(k)
        return float(y[k])

    gap, used = adaptive_gap(evaluate, LATTICE, tolerance)
    assert abs(gap - full) <= tolerance
    assert len(calls) == len(set(calls)), "a lattice point evaluated twice"
    assert set(used) == set(calls) and all(used[k] == y[k] for k in used)


@settings(max_examples=100, deadline=None)
@given(a=st.floats(0.0, 4.0), c=st.floats(0.0, 1.0), slope=st.floats(-2.0, 2.0))
def test_convex_curves_have_no_gap_and_stop_early(a: float, c: float, slope: float) -> None:
    y = _curve({"a": a, "c": c, "slope": slope, "base": 1.0, "bumps": []})
    gap, used = adaptive_gap(lambda k: float(y[k]), LATTICE, 0.01)
    assert gap == pytest.approx(0.0, abs=1e-12)
    assert convexity_gap(y, LATTICE) == pytest.approx(0.0, abs=1e-12)
    assert len(used) < 21


def test_known_points_are_not_evaluated_again() -> None:
    y = _curve({"a": 1.0, "c": 0.5, "slope": 0.0, "base": 0.0, "bumps": [(1.0, 0.5, 0.15)]})
    _, first = adaptive_gap(lambda k: float(y[k]), LATTICE, 0.01)

    def never(k: int) -> float:
        raise AssertionError(f"index {k} was known")

    gap, again = adaptive_gap(never, LATTICE, 0.01, known=first)
    assert again == first and gap == pytest.approx(convexity_gap(y, LATTICE), abs=0.01)


def test_points_are_lattice_points_and_coarse_grid() -> None:
    assert coarse_indices(21, levels=2) == (0, 5, 10, 15, 20)
    assert coarse_indices(21) == (0, 2, 5, 7, 10, 12, 15, 17, 20)
    assert coarse_indices(3) == (0, 1, 2)
    assert to_refine(LATTICE, {0: 0.0, 20: 0.0}, 0.01) == [10]  # no triple: refine


def test_bad_tolerance() -> None:
    with pytest.raises(ConfigError, match=r"paths\.tolerance must be a number > 0"):
        adaptive_gap(lambda k: 0.0, LATTICE, 0.0)
