"""Tests for modeconn.measures.task_metrics: hand-computed cases and parity with scikit-learn."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
from tolerances import ATOL, RTOL

import modeconn.measures.task_metrics
from modeconn.errors import ConfigError, DataError
from modeconn.measures.task_metrics import (
    METRIC_FUNCS,
    accuracy,
    compute_metric,
    f1_binary,
    matthews_corrcoef,
)


def _sk(fn, *args, **kwargs) -> float:
    # sklearn warns on undefined scores (and returns 0.0); we only compare the value.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(*args, **kwargs))


def test_doctests():
    result = doctest.testmod(modeconn.measures.task_metrics)
    assert result.attempted > 0
    assert result.failed == 0


def test_hand_computed():
    # 3 of 4 labels agree.
    assert accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == 0.75
    # pred [1,1,1,0], target [1,0,1,1]: TP 2, FP 1, FN 1 → 2·2 / (4 + 1 + 1) = 2/3.
    assert f1_binary([1, 1, 1, 0], [1, 0, 1, 1]) == pytest.approx(2 / 3, abs=ATOL)
    # Same with positive = 0: TP 0, FP 1, FN 1 → 0.
    assert f1_binary([1, 1, 1, 0], [1, 0, 1, 1], positive=0) == 0.0
    # Binary MCC = (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)):
    # pred [1,1,0,0,1], target [1,0,0,0,1]: TP 2, TN 2, FP 1, FN 0 →
    # (4 − 0) / √(3·2·3·2) = 4 / 6 = 2/3.
    assert matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 0, 1]) == pytest.approx(2 / 3, abs=ATOL)
    # Perfectly inverted binary predictions → −1.
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0, abs=ATOL)


def test_undefined_scores_are_zero():
    # One class everywhere: MCC's denominator is zero → 0.0 (as sklearn).
    assert matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0
    assert matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0
    # No positive anywhere: TP + FP + FN = 0 → 0.0 (as sklearn's default).
    assert f1_binary([0, 0], [0, 0]) == 0.0


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_parity_with_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    for trial in range(100):
        n = int(rng.integers(1, 60))
        target = rng.integers(0, n_classes, size=n)
        # Mix random and mostly-correct predictions so all score ranges are covered.
        noise = rng.random() * (trial % 2)
        pred = np.where(rng.random(n) < noise, rng.integers(0, n_classes, size=n), target)
        if trial % 3 == 0:
            pred = rng.integers(0, n_classes, size=n)
        assert accuracy(pred, target) == pytest.approx(
            _sk(skm.accuracy_score, target, pred), rel=RTOL, abs=ATOL
        )
        assert matthews_corrcoef(pred, target) == pytest.approx(
            _sk(skm.matthews_corrcoef, target, pred), rel=RTOL, abs=ATOL
        )
        if n_classes == 2:
            for positive in (0, 1):
                expected = _sk(skm.f1_score, target, pred, pos_label=positive)
                assert f1_binary(pred, target, positive=positive) == pytest.approx(
                    expected, rel=RTOL, abs=ATOL
                )


def test_string_labels():
    pred = np.array(["ent", "non", "non", "ent"])
    target = np.array(["ent", "non", "ent", "ent"])
    assert accuracy(pred, target) == 0.75
    assert f1_binary(pred, target, positive="ent") == pytest.approx(
        _sk(skm.f1_score, target, pred, pos_label="ent"), rel=RTOL
    )
    assert matthews_corrcoef(pred, target) == pytest.approx(
        _sk(skm.matthews_corrcoef, target, pred), rel=RTOL
    )


def test_registry_and_errors():
    assert set(METRIC_FUNCS) == {"accuracy", "f1", "mcc"}
    assert compute_metric("mcc", [0, 1, 1], [0, 1, 1]) == pytest.approx(1.0, abs=ATOL)
    with pytest.raises(ConfigError, match=r"unknown task metric 'auc'.*'accuracy', 'f1', 'mcc'"):
        compute_metric("auc", [0], [0])
    with pytest.raises(DataError, match="same length; got 2 and 3"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(DataError, match=r"1-D.*argmax"):
        accuracy(np.zeros((2, 3)), [0, 1])
    with pytest.raises(DataError, match="empty"):
        matthews_corrcoef([], [])
    with pytest.raises(DataError, match="binary labels; got 3"):
        f1_binary([0, 1, 2], [0, 1, 1])
    with pytest.raises(DataError, match="positive=2 is not one of the labels"):
        f1_binary([0, 1], [0, 1], positive=2)
