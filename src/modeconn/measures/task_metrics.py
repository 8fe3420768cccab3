"""Task metrics on predicted and true labels: accuracy, binary F1, Matthews correlation.

Pure numpy, one label per example: ``pred`` and ``target`` are 1-D arrays of class labels
(integers or strings), not logits. These give the per-model scores that the basin analysis
correlates with (e.g. OOD accuracy on HANS non-entailed examples, Juneja et al. 2023;
MCC for CoLA and F1 for QQP as in GLUE). Each function matches scikit-learn's
``accuracy_score``, ``f1_score`` and ``matthews_corrcoef`` (the test suite checks this),
including returning 0.0 where a score is undefined.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modeconn.errors import ConfigError, DataError

__all__ = ["METRIC_FUNCS", "accuracy", "compute_metric", "f1_binary", "matthews_corrcoef"]


def _labels(pred: ArrayLike, target: ArrayLike) -> tuple[NDArray[np.generic], NDArray[np.generic]]:
    """Validate two label arrays: 1-D, same non-zero length."""
    p, t = np.asarray(pred), np.asarray(target)
    for name, a in (("pred", p), ("target", t)):
        if a.ndim != 1:
            raise DataError(
                f"{name} must be a 1-D array of class labels; got shape {a.shape}. "
                "Take the argmax over the class axis of logits first."
            )
    if p.size != t.size:
        raise DataError(f"pred and target must have the same length; got {p.size} and {t.size}")
    if p.size == 0:
        raise DataError("pred and target are empty; a metric needs at least one example")
    return p, t


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Fraction of examples whose predicted label equals the true label.

    >>> accuracy(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    0.75
    """
    p, t = _labels(pred, target)
    return float(np.mean(p == t))


def f1_binary(pred: ArrayLike, target: ArrayLike, positive: object = 1) -> float:
    """F1 of the class ``positive``: 2·TP / (2·TP + FP + FN); 0.0 when TP + FP + FN = 0.

    As scikit-learn's ``f1_score(average="binary")``, the labels must be binary: more than
    two distinct labels across ``pred`` and ``target``, or two that do not include
    ``positive``, raise :class:`DataError`.

    >>> f1_binary(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))  # TP 1, FP 1, FN 1
    0.5
    """
    p, t = _labels(pred, target)
    present = np.union1d(p, t)
    if present.size > 2:
        raise DataError(
            f"f1_binary needs binary labels; got {present.size} distinct labels "
            f"{present.tolist()[:10]}. Map the classes to two labels first, or use 'mcc'."
        )
    if present.size == 2 and positive not in present.tolist():
        raise DataError(
            f"positive={positive!r} is not one of the labels {present.tolist()}; "
            "pass the label of the positive class"
        )
    pp, tp_mask = p == positive, t == positive
    tp = int(np.sum(pp & tp_mask))
    fp = int(np.sum(pp & ~tp_mask))
    fn = int(np.sum(~pp & tp_mask))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else float(2 * tp / denom)


def matthews_corrcoef(pred: ArrayLike, target: ArrayLike) -> float:
    """Matthews correlation coefficient, the general multi-class formula (Gorodkin 2004).

    With confusion matrix C (rows true, columns predicted), t = row sums, p = column sums,
    c = trace(C), s = total:  MCC = (c·s − t·p) / √((s² − p·p)(s² − t·t)).
    Returns 0.0 when the denominator is zero (one class only), as scikit-learn does.

    >>> matthews_corrcoef(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    0.0
    >>> matthews_corrcoef(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 2]))
    1.0
    """
    p, t = _labels(pred, target)
    classes, idx = np.unique(np.concatenate([t, p]), return_inverse=True)
    k, n = classes.size, t.size
    conf = np.zeros((k, k), dtype=np.float64)  # (true class, predicted class)
    np.add.at(conf, (idx[:n], idx[n:]), 1.0)
    t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
    correct, s = float(np.trace(conf)), float(n)
    cov_tp = correct * s - float(t_sum @ p_sum)
    cov_pp = s * s - float(p_sum @ p_sum)
    cov_tt = s * s - float(t_sum @ t_sum)
    denom = cov_pp * cov_tt
    if denom == 0.0:
        return 0.0
    return float(cov_tp / np.sqrt(denom))


METRIC_FUNCS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "mcc": matthews_corrcoef,
}


def compute_metric(name: str, pred: ArrayLike, target: ArrayLike) -> float:
    """Compute the task metric registered as ``name`` (see :data:`METRIC_FUNCS`).

    >>> compute_metric("accuracy", [0, 1], [0, 0])
    0.5
    """
    try:
        fn = METRIC_FUNCS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown task metric {name!r}; expected one of {sorted(METRIC_FUNCS)}"
        ) from None
    return fn(pred, target)
