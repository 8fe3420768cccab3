"""`basins.preset: paper` reproduces paper 1's clustering code on a fixed matrix.

The reference below is a direct scikit-learn computation of the recipe of Juneja et al.
2023 (aNOnWhyMooS/connectivity, src/constellations/theoretical/clustering.py): S =
exp(−D²/2) (δ = 1), labels from SpectralClustering(n_clusters=2, affinity="precomputed",
random_state=42), centroids from k_means on spectral_embedding(S, n_components=2,
drop_first=False, random_state=42), score = distance to one centre minus the other.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import SpectralClustering, k_means
from sklearn.manifold import spectral_embedding
from sklearn.metrics import adjusted_rand_score

from modeconn.config.basins import PAPER_BASINS, BasinsConfig
from modeconn.stats.basins import find_basins


def _matrix(seed: int = 3) -> np.ndarray:
    # 12 members in two noisy blocks (gaps ~0.4 inside, ~1.6 across), fixed by the seed
    rng = np.random.default_rng(seed)
    group = np.array([0] * 7 + [1] * 5)
    d = np.where(group[:, None] == group[None, :], 0.4, 1.6) + rng.uniform(0, 0.3, (12, 12))
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    return d


def test_preset_sets_every_paper_choice() -> None:
    b = BasinsConfig.model_validate({"split": "mnli", "preset": "paper"})
    assert (b.n_basins, b.delta, b.seed, b.centroids) == (2, 1.0, 42, "kmeans")
    assert b.fit_options() == PAPER_BASINS
    # restating a paper value is fine; contradicting it is an error that names the key
    assert BasinsConfig.model_validate({"split": "m", "preset": "paper", "seed": 42}).seed == 42
    with pytest.raises(ValueError, match=r"sets delta to 1\.0; got 'median'"):
        BasinsConfig.model_validate({"split": "m", "preset": "paper", "delta": "median"})


def test_preset_reproduces_a_direct_scikit_learn_computation() -> None:
    d = _matrix()
    fit = find_basins(
        d, **BasinsConfig.model_validate({"split": "m", "preset": "paper"}).fit_options()
    )

    s = np.exp(-(d**2) / 2.0)
    labels = SpectralClustering(n_clusters=2, affinity="precomputed", random_state=42).fit_predict(
        s
    )
    se = spectral_embedding(s, n_components=2, drop_first=False, random_state=42)
    centres, km, _ = k_means(se, 2, random_state=42, n_init=10)
    dists = np.linalg.norm(se[None, :, :] - centres[:, None, :], axis=2)  # (2, N)

    assert adjusted_rand_score(labels, fit.labels) == 1.0
    np.testing.assert_allclose(fit.embedding, se, rtol=0, atol=1e-12)
    # the paper's code orders centres as k-means returns them; modeconn puts the larger
    # basin's first, so the score is the paper's up to its sign
    big = np.bincount(fit.labels).argmax()
    first = int(np.bincount(km[fit.labels == big], minlength=2).argmax())
    paper_score = dists[first] - dists[1 - first]
    np.testing.assert_allclose(fit.scores, paper_score, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.sort(fit.centroids, axis=0), np.sort(centres, axis=0), atol=1e-12)
    assert (fit.delta, fit.seed, fit.centroids_from) == (1.0, 42, "kmeans")


def test_default_differs_only_by_the_documented_switches() -> None:
    d = _matrix()
    paper = find_basins(d, n_basins=2, delta=1.0, seed=42, centroids="kmeans")
    mean = find_basins(d, n_basins=2, delta=1.0, seed=42, centroids="mean")
    # same clusters; the mean and k-means centres agree here, so the scores do too
    assert adjusted_rand_score(paper.labels, mean.labels) == 1.0
    np.testing.assert_allclose(paper.scores, mean.scores, atol=1e-9)


@pytest.mark.parametrize("name", ["paper-mnli-100.yaml", "qqp-paws.yaml"])
def test_paper_studies_use_the_preset(name: str) -> None:
    from pathlib import Path

    from modeconn.config.study import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "examples" / name)
    b = study.basins
    assert b.preset == "paper" and b.fit_options() == PAPER_BASINS
    # the OOD axis is scored on the whole diagnostic set, as the paper scores it
    for split in b.ood:
        assert study.splits[split].sample_size is None, split
