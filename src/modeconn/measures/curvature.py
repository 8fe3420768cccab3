"""Curvature of the loss along a path and at a point: Hessian-vector products, no Hessian.

Singh et al. (2024, "Landscaping Linear Mode Connectivity", arXiv 2406.16300) explain the
barrier between two models θA, θB by the curvature of the loss along the segment between
them. With Δ = θB − θA and f(s) = L(θA + sΔ) (s runs from A: s = 1 − α of the sweep's
path coordinate, which is 1 at A),

    f'(s)  = ∇L(θA + sΔ)ᵀ Δ,
    f''(s) = Δᵀ ∇²L(θA + sΔ) Δ,

and :mod:`modeconn.measures.barrier_forms` turns these into the barrier's exact, midpoint
and endpoint forms. This module computes them for any model the engine holds:

* :func:`hessian_vector_product` — H·v by double backward (Pearlmutter 1994): the gradient
  is taken with ``create_graph=True`` and the gradient of gᵀv is H·v. One per batch,
  summed, so the memory is that of one batch's double backward; no Hessian is formed.
* :func:`curvature_along` (HVP) and :func:`curvature_fd` (the three-point difference
  (f(s+h) − 2f(s) + f(s−h))/h²) — the two cross-check each other (tests).
* :func:`hutchinson_trace` — tr H ≈ mean of zᵀHz over Rademacher z (Hutchinson 1990),
  with a Student-t interval over the draws.
* :func:`top_eigenvalues` — the largest (algebraic) eigenvalues of H by
  ``scipy.sparse.linalg.eigsh`` on a ``LinearOperator`` whose matvec is one HVP (ARPACK's
  implicitly restarted Lanczos; no hand-written Lanczos).

The core functions take a *loss as terms*: ``terms(params)`` yields scalar tensors whose
sum is the loss at ``params`` (one per batch), so a loss over many batches is
differentiated batch by batch. :class:`PathCurvature` builds these terms for an
:class:`~modeconn.engine.evaluate.Evaluator` and a split: the engine's loss (mean
cross-entropy over the split's fixed sample, after the split's logit map) as a function
of the model's *parameters*, via ``torch.func.functional_call`` on the resident skeleton.

**BatchNorm and other float buffers.** Only parameters are differentiated. Buffers —
BatchNorm's running mean and variance — are those the engine gives the point θ(s): the
resident point is set to θ(s) (``Evaluator.set_lerp``, buffers interpolated) and its
BatchNorm statistics refreshed by the engine's policy (``reestimate``: re-estimated at
θ(s) over ``eval.batchnorm_split``; ``interpolate``: the interpolated buffers). The model
stays in eval mode, so during every HVP, gradient and finite difference at s those
statistics are *frozen*: f''(s) is the curvature of the eval-mode loss with θ(s)'s
statistics, not of s ↦ "re-estimate, then evaluate" (which has extra terms through the
statistics). The sweep's measured barrier uses re-estimated statistics at each α, so for
a BatchNorm model the forms predict it only up to that difference (docs/method.md).

With ``batchnorm="batch"`` (:class:`PathCurvature`) every BatchNorm layer instead
normalises each batch by that batch's own mean and variance (train-mode BatchNorm) while
dropout stays off. The running buffers are never touched: each forward gets fresh copies
through ``functional_call``, so the resident model's statistics are unchanged. The split's
batches are fixed, so f(s) is one deterministic, differentiable function of the
parameters, and f, f' and f'' (and a barrier f(½) − ½(f(0) + f(1)) measured from f) all
belong to it — the forms and the measurement see the same f. (ReLU and max-pool kinks
crossed along the path still escape the HVP, ReLU'' = 0: docs/method.md; the CNN's
``model.options: {activation: gelu, pool: avg}`` has none.)

Dropout is off (eval mode), as in every engine evaluation. Attention runs in PyTorch's
``MATH`` SDPA kernel during derivatives: the fused CPU/GPU kernels have no double
backward. The evaluator's resident point, parameter flags and gradients are restored on
exit (:func:`modeconn.measures.sharpness.restoring`, the same guard ε-sharpness uses).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn

from modeconn.data.base import Split
from modeconn.engine.evaluate import Evaluator
from modeconn.errors import ConfigError, PopulationError
from modeconn.measures.sharpness import restoring

__all__ = [
    "PathCurvature",
    "TraceEstimate",
    "curvature_along",
    "curvature_fd",
    "directional_derivative",
    "dot",
    "hessian_vector_product",
    "hutchinson_trace",
    "loss_value",
    "top_eigenvalues",
]

BATCHNORM_MODES = ("frozen", "batch")  # PathCurvature's `batchnorm` option

Params = Sequence[torch.Tensor]
Terms = Callable[[Params], Iterator[torch.Tensor]]  # params → scalar terms summing to L


# --------------------------------------------------------------------------- the core


def dot(u: Params, v: Params) -> float:
    """Σ uᵢ·vᵢ over a list of tensors, accumulated in float64.

    >>> dot([torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 4.0])])
    11.0
    """
    return float(sum((a.double() * b.double()).sum() for a, b in zip(u, v, strict=True)))


def _axpy(x: Params, v: Params, s: float) -> list[torch.Tensor]:
    """x + s·v per tensor (new tensors)."""
    return [a + s * b for a, b in zip(x, v, strict=True)]


def _leaves(point: Params) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_(True) for p in point]


@torch.inference_mode(False)
def loss_value(terms: Terms, point: Params) -> float:
    """L(point) = Σ terms, accumulated in float64, no graph."""
    with torch.no_grad():
        return float(sum(float(t.double()) for t in terms(list(point))))


@torch.inference_mode(False)
def gradient(terms: Terms, point: Params) -> list[torch.Tensor]:
    """∇L(point), one tensor per parameter (zeros where L does not depend on it)."""
    leaves = _leaves(point)
    out = [torch.zeros_like(p) for p in leaves]
    with torch.enable_grad():
        for term in terms(leaves):
            grads = torch.autograd.grad(term, leaves, allow_unused=True)
            for acc, g in zip(out, grads, strict=True):
                if g is not None:
                    acc.add_(g)
    return out


def directional_derivative(terms: Terms, point: Params, v: Params) -> float:
    """∇L(point)ᵀv: f'(s) when point = θA + sΔ and v = Δ."""
    return dot(gradient(terms, point), v)


@torch.inference_mode(False)
def hessian_vector_product(terms: Terms, point: Params, v: Params) -> list[torch.Tensor]:
    """H·v at `point` by double backward, summed over the loss's terms.

    >>> # L(x) = x₀² + 3·x₀·x₁: H = [[2, 3], [3, 0]]
    >>> terms = lambda p: iter([p[0][0] ** 2 + 3 * p[0][0] * p[0][1]])
    >>> hessian_vector_product(terms, [torch.tensor([1.0, 1.0])], [torch.tensor([1.0, 0.0])])
    [tensor([2., 3.])]
    """
    leaves = _leaves(point)
    vs = [t.detach().to(p.dtype) for t, p in zip(v, leaves, strict=True)]
    out = [torch.zeros_like(p) for p in leaves]
    with torch.enable_grad():
        for term in terms(leaves):
            grads = torch.autograd.grad(term, leaves, create_graph=True, allow_unused=True)
            pairs = [(g, w) for g, w in zip(grads, vs, strict=True) if g is not None]
            if not pairs:
                continue
            gv = torch.stack([(g * w).sum() for g, w in pairs]).sum()
            hv = torch.autograd.grad(gv, leaves, allow_unused=True)
            for acc, h in zip(out, hv, strict=True):
                if h is not None:
                    acc.add_(h)
    return out


def curvature_along(terms: Terms, a: Params, delta: Params, s: float) -> float:
    """f''(s) = Δᵀ∇²L(θA + sΔ)Δ by one Hessian-vector product."""
    point = _axpy(a, delta, s)
    return dot(delta, hessian_vector_product(terms, point, delta))


def curvature_fd(terms: Terms, a: Params, delta: Params, s: float, *, h: float = 1e-2) -> float:
    """f''(s) by the three-point difference (f(s+h) − 2f(s) + f(s−h)) / h².

    Its truncation error is h²·f''''(ξ)/12; its rounding error about 4·ε·|f|/h² for losses
    summed in float64 from float32 terms (ε ≈ 6e-8), so h ≈ 1e-2 balances the two for a
    loss of order 1. Points s ± h may lie outside [0, 1]: the line extends beyond both ends.
    """
    if not h > 0:
        raise ConfigError(f"the finite-difference step h must be > 0; got {h!r}")
    f = [loss_value(terms, _axpy(a, delta, s + k * h)) for k in (-1, 0, 1)]
    return (f[0] - 2.0 * f[1] + f[2]) / (h * h)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's tr H estimate: ``mean`` of zᵀHz over ``samples`` Rademacher draws, and
    its Student-t interval (``low``, ``high``) at ``confidence`` (NaN with one draw)."""

    mean: float
    low: float
    high: float
    samples: int
    confidence: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def hutchinson_trace(
    terms: Terms, point: Params, *, samples: int = 16, seed: int = 0, confidence: float = 0.95
) -> TraceEstimate:
    """tr ∇²L(point) ≈ (1/m) Σ zᵢᵀHzᵢ with zᵢ Rademacher (±1 entries), Hutchinson (1990).

    Each draw is unbiased (E zzᵀ = I); the interval is mean ± t_{m−1}·sd/√m over the m
    draws. The vectors come from a ``torch.Generator`` seeded with `seed` (on the CPU, then
    moved), so the estimate is the same on every device.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"hutchinson samples must be an integer ≥ 1; got {samples!r}")
    gen = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(samples):
        z = [
            (torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.device, p.dtype)
            for p in point
        ]
        draws.append(dot(z, hessian_vector_product(terms, point, z)))
    x = np.asarray(draws)
    mean = float(x.mean())
    if samples == 1:
        low = high = math.nan
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2, samples - 1) * x.std(ddof=1))
        half /= math.sqrt(samples)
        low, high = mean - half, mean + half
    return TraceEstimate(mean, low, high, samples, confidence, seed)


def top_eigenvalues(
    terms: Terms, point: Params, *, k: int = 1, seed: int = 0, tol: float = 1e-4
) -> np.ndarray:
    """The k largest (algebraic) eigenvalues of ∇²L(point), largest first.

    ``scipy.sparse.linalg.eigsh(which="LA")`` on a ``LinearOperator`` of dimension
    n = #parameters whose matvec flattens, runs :func:`hessian_vector_product` and flattens
    back; ARPACK's start vector is drawn from ``numpy.random.default_rng(seed)``. Needs
    k < n; ``tol`` is ARPACK's relative accuracy.
    """
    shapes = [p.shape for p in point]
    sizes = [p.numel() for p in point]
    n = sum(sizes)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ConfigError(f"top eigenvalues need 1 ≤ k < {n} (the parameter count); got {k!r}")
    ref = point[0]

    def matvec(x: np.ndarray) -> np.ndarray:
        flat = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).ravel())
        parts = [
            t.reshape(shape).to(ref.device, p.dtype)
            for t, shape, p in zip(flat.split(sizes), shapes, point, strict=True)
        ]
        hv = hessian_vector_product(terms, point, parts)
        return torch.cat([h.reshape(-1).double().cpu() for h in hv]).numpy()

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    values = eigsh(op, k=k, which="LA", v0=v0, tol=tol, return_eigenvectors=False)
    return np.sort(values)[::-1]


# --------------------------------------------------------------------------- the engine


@contextlib.contextmanager
def _sdpa_math() -> Iterator[None]:
    """PyTorch's MATH attention kernel (the fused ones have no double backward)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


class PathCurvature:
    """Derivatives of f(s) = L(θA + sΔ) on one split, for the model an evaluator holds.

    `a` and `b` are members as the engine holds them (:meth:`Evaluator.as_point`). Use it
    as a context manager: inside, the evaluator's resident point moves to each θ(s) asked
    for; on exit the point, flags and gradients are as they were. Every method is at a
    path coordinate s (0 is A, 1 is B; values outside [0, 1] extend the line).

    With `indices` (positions in the engine's keys, e.g. one block of
    :func:`modeconn.engine.layerwise.blocks`) the path is layer-wise: Δ is θB − θA on those
    entries and zero elsewhere, so θ(s) is A with the chosen entries moved toward B (the
    "rest at A" path of :mod:`modeconn.engine.layerwise`; swap `a` and `b` for "rest at
    B"), and θ(1) is that hybrid, not B. Float buffers among the chosen entries (BatchNorm
    statistics) are blended too before the engine's policy refreshes them.

    L is the engine's loss: mean cross-entropy over the split's prepared sample after its
    logit map, as :meth:`Evaluator.evaluate` computes it — with `batchnorm` "frozen" (the
    default) the BatchNorm statistics of θ(s), refreshed by the engine's policy and held
    fixed; with "batch" each fixed batch normalised by its own statistics, so that f is
    one function of the parameters along the whole path (module docstring).
    """

    def __init__(
        self,
        evaluator: Evaluator,
        a: Sequence[torch.Tensor],
        b: Sequence[torch.Tensor],
        split: Split,
        *,
        indices: Sequence[int] | None = None,
        batchnorm: str = "frozen",
    ) -> None:
        ev = evaluator
        if batchnorm not in BATCHNORM_MODES:
            raise ConfigError(
                f"PathCurvature batchnorm must be one of {BATCHNORM_MODES}; got {batchnorm!r}"
            )
        self.batchnorm = batchnorm
        bn = nn.modules.batchnorm._BatchNorm
        self._norms = [m for m in ev.model.modules() if isinstance(m, bn)]
        if len(a) != len(ev.keys) or len(b) != len(ev.keys):
            raise PopulationError(
                f"a path needs two points of {len(ev.keys)} tensors (the engine's keys); got "
                f"{len(a)} and {len(b)}; build them with Evaluator.as_point"
            )
        self.evaluator, self.a, self.b = ev, list(a), list(b)
        self.split = ev.prepared(split)
        index = {k: i for i, k in enumerate(ev.keys)}
        # the model's unique parameters (tied weights once), in the evaluator's key order
        self.names = [n for n, _ in ev.model.named_parameters() if n in index]
        self._slots = [index[n] for n in self.names]
        self.indices = None if indices is None else sorted({int(i) for i in indices})
        chosen = set(self._slots if self.indices is None else self.indices)
        self.theta_a = [self.a[i] for i in self._slots]
        # Δ restricted to the chosen entries: zero on every other parameter
        self.delta = [
            self.b[i] - self.a[i] if i in chosen else torch.zeros_like(self.a[i])
            for i in self._slots
        ]
        self._stack: contextlib.ExitStack | None = None
        self._at: float | None = None

    def __enter__(self) -> PathCurvature:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(restoring(self.evaluator))
        self._stack.enter_context(_sdpa_math())
        if self.batchnorm == "batch":  # train-mode BatchNorm only; dropout stays off
            flags = [m.training for m in self._norms]

            def restore() -> None:
                for m, flag in zip(self._norms, flags, strict=True):
                    m.train(flag)

            self._stack.callback(restore)
            for m in self._norms:
                m.train(True)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stack is not None
        self._at = None
        self._stack.close()

    # the loss of the resident skeleton as a function of its parameters
    def terms(self, params: Params) -> Iterator[torch.Tensor]:
        """L's terms at `params` (one per batch: the batch's summed loss / n)."""
        ev, split = self.evaluator, self.split
        named: dict[str, torch.Tensor] = dict(zip(self.names, params, strict=True))
        n = split.n
        for batch, labels in zip(split.batches, split.batch_labels(), strict=True):
            if self.batchnorm == "batch":
                # train-mode BatchNorm writes its running buffers: give it copies to write
                named.update((name, buf.detach().clone()) for name, buf in ev.model.named_buffers())
            out = torch.func.functional_call(ev.model, named, args=(), kwargs=dict(batch))
            logits = out.logits if hasattr(out, "logits") else out
            mapped = split.map_logits(logits.float())
            yield F.cross_entropy(mapped, labels, reduction="sum") / n

    def point(self, s: float) -> list[torch.Tensor]:
        """θ(s)'s parameters, with the resident point (and its BatchNorm statistics) moved
        there first; the returned tensors are the differentiation point."""
        if self._stack is None:
            raise RuntimeError("use PathCurvature as a context manager (`with ... as pc:`)")
        if self._at != s:
            if self.indices is None:
                # θA + sΔ = s·θB + (1 − s)·θA: set_lerp writes α·first + (1 − α)·second
                self.evaluator.set_lerp(self.b, self.a, float(s))
            else:  # a layer-wise path: the chosen entries move, the rest stay at A
                self.evaluator.set_blend(self.a, self.b, float(s), self.indices)
            if self.batchnorm == "frozen":  # batch mode never reads the running buffers
                self.evaluator.refresh_batchnorm()
            self._at = float(s)
        return _axpy(self.theta_a, self.delta, float(s))

    def loss(self, s: float) -> float:
        """f(s), the loss at θ(s) (statistics frozen or per batch, as `batchnorm` says)."""
        return loss_value(self.terms, self.point(s))

    def first(self, s: float) -> float:
        """f'(s) = ∇L(θ(s))ᵀΔ."""
        return directional_derivative(self.terms, self.point(s), self.delta)

    def second(self, s: float) -> float:
        """f''(s) = Δᵀ∇²L(θ(s))Δ by one HVP."""
        return dot(self.delta, hessian_vector_product(self.terms, self.point(s), self.delta))

    def second_fd(self, s: float, *, h: float = 1e-2) -> float:
        """f''(s) by the three-point difference (with "frozen", statistics held at θ(s)'s)."""
        x = self.point(s)
        f = [loss_value(self.terms, _axpy(x, self.delta, k * h)) for k in (-1, 0, 1)]
        return (f[0] - 2.0 * f[1] + f[2]) / (h * h)

    def trace(self, s: float, *, samples: int = 16, seed: int = 0) -> TraceEstimate:
        """Hutchinson's tr ∇²L(θ(s)) with its interval."""
        return hutchinson_trace(self.terms, self.point(s), samples=samples, seed=seed)

    def eigenvalues(self, s: float, *, k: int = 1, seed: int = 0) -> np.ndarray:
        """The k largest eigenvalues of ∇²L(θ(s))."""
        return top_eigenvalues(self.terms, self.point(s), k=k, seed=seed)
