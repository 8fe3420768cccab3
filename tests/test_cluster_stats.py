"""Table 1 statistics and R² of one predictor, against numpy / scipy and hand arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from tolerances import ATOL, RTOL

from modeconn.errors import ConfigError, DataError
from modeconn.stats.basins import (
    Regression,
    cluster_statistics,
    membership_regression,
    r_squared,
)

COLUMNS = [
    "n_c1",
    "mu_c1",
    "sigma_c1",
    "n_c2",
    "mu_c2",
    "sigma_c2",
    "max_c2",
    "mean_gap",
    "max_gap",
]


# --------------------------------------------------------------------------- Table 1


def test_cluster_statistics_hand_computed():
    labels = [1, 0, 0, 1, 0]
    ood = [0.2, 0.6, 0.7, 0.4, 0.8]
    t = cluster_statistics(labels, {"ood": ood})
    assert list(t.columns) == COLUMNS
    assert t.index.name == "metric"
    row = t.loc["ood"]
    # C1 = basin 0 = {.6, .7, .8}: μ = .7; σ (ddof 1) = √((.01 + 0 + .01) / 2) = .1.
    # C2 = basin 1 = {.2, .4}: μ = .3; σ = √((.01 + .01) / 1) = √.02; max = .4.
    assert (row["n_c1"], row["n_c2"]) == (3, 2)
    assert row["mu_c1"] == pytest.approx(0.7, abs=ATOL)
    assert row["sigma_c1"] == pytest.approx(0.1, abs=ATOL)
    assert row["mu_c2"] == pytest.approx(0.3, abs=ATOL)
    assert row["sigma_c2"] == pytest.approx(np.sqrt(0.02), abs=ATOL)
    assert row["max_c2"] == pytest.approx(0.4, abs=ATOL)
    # (μC1 − μC2)/σC1 = .4/.1 = 4; (μC1 − max C2)/σC1 = .3/.1 = 3.
    assert row["mean_gap"] == pytest.approx(4.0, rel=RTOL)
    assert row["max_gap"] == pytest.approx(3.0, rel=RTOL)


def test_cluster_statistics_paper_ddof():
    # The paper's script uses np.std (ddof 0): σC1 = √(.02/3) = .0816…, gap = .4/.0816… = 4.899.
    t = cluster_statistics([1, 0, 0, 1, 0], {"ood": [0.2, 0.6, 0.7, 0.4, 0.8]}, ddof=0)
    assert t.loc["ood", "sigma_c1"] == pytest.approx(np.sqrt(0.02 / 3), rel=RTOL)
    assert t.loc["ood", "mean_gap"] == pytest.approx(0.4 / np.sqrt(0.02 / 3), rel=RTOL)
    assert t.loc["ood", "mean_gap"] == pytest.approx(4.898979486, rel=1e-9)


@pytest.mark.parametrize("ddof", [0, 1])
def test_cluster_statistics_matches_numpy(ddof):
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat([0, 1, 2], [30, 12, 5]))  # basin 2 is left out
    values = {"id": rng.normal(0.84, 0.01, 47), "hans_lo": rng.uniform(0, 0.6, 47)}
    t = cluster_statistics(labels, values, ddof=ddof)
    assert list(t.index) == ["id", "hans_lo"]
    for name, f in values.items():
        c1, c2 = f[labels == 0], f[labels == 1]
        mu1, sd1 = np.mean(c1), np.std(c1, ddof=ddof)
        expected = {
            "n_c1": 30,
            "mu_c1": mu1,
            "sigma_c1": sd1,
            "n_c2": 12,
            "mu_c2": np.mean(c2),
            "sigma_c2": np.std(c2, ddof=ddof),
            "max_c2": np.max(c2),
            "mean_gap": (mu1 - np.mean(c2)) / sd1,
            "max_gap": (mu1 - np.max(c2)) / sd1,
        }
        for col, want in expected.items():
            assert t.loc[name, col] == pytest.approx(want, rel=RTOL), col
    assert t["n_c1"].dtype == np.int64


def test_cluster_statistics_other_clusters_and_degenerate_sigma():
    labels = ["a", "b", "b", "a", "c"]
    f = [0.5, 0.1, 0.3, 0.5, 0.9]
    # C1 = "a" = {.5, .5}: σ = 0, so the gaps are undefined (NaN), not ±inf.
    t = cluster_statistics(labels, {"f": f}, clusters=("a", "b"))
    assert t.loc["f", "sigma_c1"] == 0.0
    assert np.isnan(t.loc["f", "mean_gap"]) and np.isnan(t.loc["f", "max_gap"])
    # C1 = "c", one member: σ with ddof 1 is NaN.
    t = cluster_statistics(labels, {"f": f}, clusters=("c", "b"))
    assert np.isnan(t.loc["f", "sigma_c1"]) and np.isnan(t.loc["f", "mean_gap"])
    assert t.loc["f", "max_c2"] == pytest.approx(0.3)
    assert list(cluster_statistics([0, 1, 0], {}).columns) == COLUMNS


@pytest.mark.parametrize(
    ("labels", "values", "kwargs", "error", "match"),
    [
        ([0, 0, 0], {"f": [1, 2, 3]}, {}, DataError, r"basin 1 \(C2\) has no members.*\[0\]"),
        ([1, 1, 2], {"f": [1, 2, 3]}, {}, DataError, r"basin 0 \(C1\) has no members"),
        ([0, 1, 0], {"f": [1, 2]}, {}, DataError, r"values\['f'\] must hold one number per"),
        ([0, 1, 0], {"f": [1, np.nan, 2]}, {}, DataError, r"values\['f'\] must be finite"),
        ([0, 1, 0], {"f": [1, 2, 3]}, {"ddof": -1}, ConfigError, "ddof"),
        ([0, 1, 0], {"f": [1, 2, 3]}, {"ddof": 1.0}, ConfigError, "ddof"),
        ([0, 1, 0], {"f": [1, 2, 3]}, {"clusters": (0, 0)}, ConfigError, "two different"),
        ([[0, 1, 0]], {"f": [1, 2, 3]}, {}, DataError, "1-D"),
    ],
)
def test_cluster_statistics_errors(labels, values, kwargs, error, match):
    with pytest.raises(error, match=match):
        cluster_statistics(labels, values, **kwargs)


# --------------------------------------------------------------------------- R²


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_r_squared_matches_linregress(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=50)
    y = 0.4 * x + rng.normal(size=50)
    fit = r_squared(x, y, n_boot=200, seed=seed)
    ref = stats.linregress(x, y)
    assert fit.r_squared == pytest.approx(ref.rvalue**2, rel=RTOL)
    assert fit.slope == pytest.approx(ref.slope, rel=RTOL)
    assert fit.intercept == pytest.approx(ref.intercept, rel=RTOL, abs=ATOL)
    assert fit.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert (fit.n, fit.n_boot, fit.confidence, fit.seed) == (50, 200, 0.95, seed)


def test_r_squared_hand_computed():
    # x = [0, 0, 1, 1], y = [1, 3, 4, 6]: group means 2 and 5, ȳ = 3.5.
    # SS_tot = 2.5² + .5² + .5² + 2.5² = 13; SS_res = 1 + 1 + 1 + 1 = 4; R² = 1 − 4/13 = 9/13.
    fit = r_squared([0, 0, 1, 1], [1, 3, 4, 6], n_boot=50)
    assert fit.r_squared == pytest.approx(9 / 13, rel=RTOL)
    assert fit.slope == pytest.approx(3.0, rel=RTOL)
    assert fit.intercept == pytest.approx(2.0, rel=RTOL)
    # A perfect line: R² = 1 and p = 0.
    perfect = r_squared([1, 2, 3, 4], [3, 5, 7, 9], n_boot=50)
    assert perfect.r_squared == pytest.approx(1.0, rel=RTOL)
    assert perfect.p_value == 0.0


def test_r_squared_bootstrap_is_percentile_over_resampled_members():
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    fit = r_squared(x, y, n_boot=300, confidence=0.9, seed=11)
    # Independent reference: the same resamples, refitted one by one with scipy.
    idx = np.random.default_rng(11).integers(0, 25, size=(300, 25))
    boot = [stats.linregress(x[i], y[i]).rvalue ** 2 for i in idx]
    lo, hi = np.quantile(boot, [0.05, 0.95])
    assert fit.r_squared_ci == pytest.approx((lo, hi), rel=1e-9)
    assert fit.n_boot_used == 300
    assert r_squared(x, y, n_boot=300, seed=11) == r_squared(x, y, n_boot=300, seed=11)
    assert r_squared(x, y, n_boot=300, seed=12).r_squared_ci != fit.r_squared_ci


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        ([1, 2, 3], [1, 2], {}, DataError, "same length; got 3 and 2"),
        ([1, 2], [1, 2], {}, DataError, "at least 3 points; got 2"),
        ([1, 1, 1], [1, 2, 3], {}, DataError, r"x is constant"),
        ([1, 2, 3], [4, 4, 4], {}, DataError, r"y is constant"),
        ([1, np.inf, 3], [1, 2, 3], {}, DataError, r"x must be finite; got inf at index 1"),
        ([1, 2, 3], [1, 3, 2], {"n_boot": 0}, ConfigError, "n_boot"),
        ([1, 2, 3], [1, 3, 2], {"confidence": 0.0}, ConfigError, "confidence"),
        ([1, 2, 3], [1, 3, 2], {"seed": 1.5}, ConfigError, "seed"),
    ],
)
def test_r_squared_errors(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        r_squared(x, y, **kwargs)


def test_regression_round_trip():
    fit = r_squared([1.0, 2.0, 3.0, 5.0], [2.0, 1.0, 4.0, 6.0], predictor="sharpness", n_boot=50)
    d = json.loads(json.dumps(fit.to_dict()))
    assert Regression.from_dict(d) == fit
    assert d["predictor"] == "sharpness"
    with pytest.raises(DataError, match="missing key 'slope'"):
        Regression.from_dict({k: v for k, v in d.items() if k != "slope"})


# --------------------------------------------------------------------------- membership


def test_membership_regression_hand_computed():
    # C1 = basin 0 = {4, 6} (mean 5), C2 = basin 1 = {1, 3} (mean 2), grand mean 3.5.
    # Between-cluster SS = 4 · 1.5² = 9; total SS = 13; R² = 9/13; slope = 5 − 2 = 3.
    fit = membership_regression([1.0, 3.0, 4.0, 6.0], [1, 1, 0, 0], n_boot=50)
    assert fit.r_squared == pytest.approx(9 / 13, rel=RTOL)
    assert fit.slope == pytest.approx(3.0, rel=RTOL)
    assert fit.intercept == pytest.approx(2.0, rel=RTOL)
    assert "basin 0" in fit.predictor


def test_membership_regression_matches_linregress_and_table():
    rng = np.random.default_rng(4)
    labels = rng.permutation(np.repeat([0, 1, 2], [40, 20, 6]))
    f = np.where(labels == 0, 0.2, 0.4) + rng.normal(0, 0.1, labels.size)
    fit = membership_regression(f, labels, n_boot=400, seed=2)
    keep = labels != 2  # basin 2 is neither C1 nor C2
    ref = stats.linregress((labels[keep] == 0).astype(float), f[keep])
    assert fit.n == 60
    assert fit.r_squared == pytest.approx(ref.rvalue**2, rel=RTOL)
    assert fit.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    # Slope = μC1 − μC2 and R² = between-cluster share of the variance (η²).
    t = cluster_statistics(labels, {"f": f}).loc["f"]
    assert fit.slope == pytest.approx(t["mu_c1"] - t["mu_c2"], rel=RTOL)
    c1, c2, both = f[labels == 0], f[labels == 1], f[keep]
    between = c1.size * (c1.mean() - both.mean()) ** 2 + c2.size * (c2.mean() - both.mean()) ** 2
    assert fit.r_squared == pytest.approx(between / np.sum((both - both.mean()) ** 2), rel=RTOL)
    assert fit.r_squared_ci[0] < fit.r_squared < fit.r_squared_ci[1]


def test_membership_regression_skips_one_cluster_resamples():
    # 4 members, one in C2: a resample misses it with chance (3/4)⁴ ≈ 32 %.
    fit = membership_regression([0.5, 0.6, 0.7, 0.1], [0, 0, 0, 1], n_boot=500, seed=0)
    assert 0 < fit.n_boot_used < 500


def test_membership_regression_errors():
    with pytest.raises(DataError, match="one entry per member; got 2 and 3"):
        membership_regression([0.1, 0.2], [0, 1, 0])
    with pytest.raises(DataError, match=r"basin 1 \(C2\) has no members"):
        membership_regression([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(DataError, match=r"values are constant \(0.1\) over basins 0 and 1"):
        membership_regression([0.1, 0.1, 0.1, 0.9], [0, 1, 0, 2])
