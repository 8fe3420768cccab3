"""Parameter points as functions of path coordinates.

The linear segment between members A and B is θα = α·θA + (1−α)·θB (Juneja et al. 2023,
following Frankle et al. 2020), evaluated on a uniform α grid; α = 0 is B and α = 1 is A.
The grid identifier (e.g. ``"linear:11"``) is part of every stored row's key, so results
on different grids never mix.

Curves beyond the line (:func:`curve_coefficients`): a quadratic Bézier curve, or a
Bernstein curve of any degree, and a polygonal chain, both through trained bends
(:mod:`modeconn.engine.curves` trains them). Their maths is written in the curve's own
parameter t, which runs from A (t = 0) to B (t = 1) as in Garipov et al. (2018); every
path coordinate a user sees — stored points, figures, tables — is the sweep's α, with
α = 1 at A and α = 0 at B, so t = 1 − α (:func:`curve_t`). At equal α the curve with its
bends on the line and the line itself are the same point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from modeconn.errors import ConfigError


def alpha_grid(points: int = 11) -> tuple[float, ...]:
    """α = 0, 1/(n−1), …, 1, rounded to 12 decimals so values are exact store keys.

    >>> alpha_grid(5)
    (0.0, 0.25, 0.5, 0.75, 1.0)
    """
    if points < 2:
        raise ConfigError(f"an α grid needs at least 2 points; got {points}")
    return tuple(round(float(a), 12) for a in np.linspace(0.0, 1.0, points))


def grid_id(path: str, points: int) -> str:
    return f"{path}:{points}"


ALPHA_AT_A = 1.0
"""The one convention of every path coordinate modeconn stores or shows: α = 1 is member A
(the pair's first), α = 0 member B; records of curves carry it (``alpha_at_a``)."""


def curve_t(alpha: float) -> float:
    """The curve parameter t (0 at A, 1 at B) of the path coordinate α (1 at A, 0 at B).

    Exact at the ends and for α ≥ ½ (Sterbenz), within one rounding elsewhere.

    >>> curve_t(1.0), curve_t(0.0), curve_t(0.25)
    (0.0, 1.0, 0.75)
    """
    return 1.0 - float(alpha)


def segment(
    point_a: Sequence[torch.Tensor], point_b: Sequence[torch.Tensor], alpha: float
) -> list[torch.Tensor]:
    """θα = α·θA + (1−α)·θB as new tensors (the engine writes the same in place)."""
    return list(torch._foreach_lerp(list(point_b), list(point_a), float(alpha)))


# --------------------------------------------------------------------------- curves


CURVE_KINDS = ("bezier", "chain")


def _check_curve(kind: str, bends: int, t: float) -> None:
    if kind not in CURVE_KINDS:
        raise ConfigError(
            f"analyses.curves.kind must be one of {', '.join(CURVE_KINDS)}; got {kind!r}"
        )
    if isinstance(bends, bool) or not isinstance(bends, int) or bends < 1:
        raise ConfigError(f"analyses.curves.bends must be an integer ≥ 1; got {bends!r}")
    if not 0.0 <= t <= 1.0:
        raise ConfigError(f"a point on a curve needs its parameter t in [0, 1]; got {t!r}")


def curve_coefficients(kind: str, bends: int, t: float) -> np.ndarray:
    """Weights cₖ(t) of the curve's nodes [θA, θ₁ … θ_bends, θB]: θ(t) = Σₖ cₖ(t)·θₖ.

    t is the curve's own parameter, from A (t = 0) to B (t = 1), the form of Garipov et al.
    (2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs"); the path
    coordinate α that results carry is 1 − t (:func:`curve_t`), so α = 1 is A as on the
    line (Lubana et al. 2023 write the curve in α directly, α = 1 at their first model):

    * ``bezier`` — the Bernstein polynomials of degree n = bends + 1,
      cₖ(t) = C(n, k) tᵏ (1 − t)ⁿ⁻ᵏ; one bend is the quadratic Bézier curve
      θ(t) = (1 − t)²θA + 2t(1 − t)θ₁ + t²θB = α²θA + 2α(1 − α)θ₁ + (1 − α)²θB;
    * ``chain`` — the polygonal chain through the nodes at t = k / (bends + 1): on the
      segment j ≤ t·(bends + 1) ≤ j + 1 only nodes j and j + 1 weigh, (1 − u) and u with
      u = t·(bends + 1) − j (Garipov et al.'s "polygonal chain", one bend: their eq. 4).

    The weights are non-negative and sum to 1 (a convex combination of the nodes), and
    both kinds reproduce the straight line when the bends sit on it at k / (bends + 1)
    (:func:`line_bends`); t = 0 (α = 1) gives exactly [1, 0, …, 0] and t = 1 (α = 0)
    exactly [0, …, 0, 1].

    >>> curve_coefficients("bezier", 1, 0.5).tolist()
    [0.25, 0.5, 0.25]
    >>> curve_coefficients("chain", 1, 0.25).tolist()
    [0.5, 0.5, 0.0]
    """
    _check_curve(kind, bends, t)
    n = bends + 1  # segments of a chain; degree of the Bernstein polynomials
    x = float(t)
    out = np.zeros(n + 1)
    if kind == "bezier":
        for k in range(n + 1):
            out[k] = math.comb(n, k) * x**k * (1.0 - x) ** (n - k)
        return out
    r = x * n
    j = min(math.floor(r), n - 1)
    u = r - j
    out[j], out[j + 1] = 1.0 - u, u
    return out


def bend_gradient_scales(kind: str, bends: int, t: float) -> np.ndarray:
    """∂θ(t)/∂θₖ for each bend k = 1 … bends: the factor the chain rule puts on its step.

    θ(t) = Σ cₖ(t)θₖ is linear in every node, so ∇_θₖ L(θ(t)) = cₖ(t)·∇L(θ(t)): a bend
    moves by the loss gradient at the curve's point times its own weight there. For the
    quadratic Bézier curve that is 2t(1 − t) = 2α(1 − α), the scaling of Lubana et al.'s
    code (the same in either parameter).

    >>> round(float(bend_gradient_scales("bezier", 1, 0.3)[0]), 12)  # 2 · 0.3 · 0.7
    0.42
    """
    return curve_coefficients(kind, bends, t)[1:-1]


def line_bends(bends: int) -> tuple[float, ...]:
    """Where the bends start: at t = k / (bends + 1) of the segment from A to B (the line's
    α = 1 − t).

    A bend initialised at (1 − t)·θA + t·θB makes the untrained curve the straight line
    itself, for both kinds (Bernstein polynomials have linear precision,
    Σₖ cₖ(t)·k/n = t), so training starts from the line and every gain is the bend's.

    >>> line_bends(3)
    (0.25, 0.5, 0.75)
    """
    if isinstance(bends, bool) or not isinstance(bends, int) or bends < 1:
        raise ConfigError(f"analyses.curves.bends must be an integer ≥ 1; got {bends!r}")
    return tuple(k / (bends + 1) for k in range(1, bends + 1))


def curve_point(nodes: Sequence[Sequence[torch.Tensor]], kind: str, t: float) -> list[torch.Tensor]:
    """θ(t) = Σₖ cₖ(t)·θₖ as new tensors, `nodes` = [θA, θ₁ … θ_bends, θB], t = 0 at A
    (the path coordinate α = 1 − t; the engine writes the same point in place,
    :meth:`~modeconn.engine.evaluate.Evaluator.set_weighted`).

    >>> a, m, b = [torch.tensor([0.0])], [torch.tensor([2.0])], [torch.tensor([4.0])]
    >>> curve_point([a, m, b], "bezier", 0.5)
    [tensor([2.])]
    """
    c = curve_coefficients(kind, len(nodes) - 2, t)
    out = []
    for parts in zip(*nodes, strict=True):
        acc = torch.zeros_like(parts[0])
        for w, t in zip(c, parts, strict=True):
            if w != 0.0:
                acc = acc + float(w) * t
        out.append(acc)
    return out
