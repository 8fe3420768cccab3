"""Permuted linear connectivity and basins-vs-mechanisms in `analyses.mechanisms`, end to
end on a tiny image study: two clean and two cue members trained from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from test_vision_study import tiny_digits_study
from tolerances import FLOAT32_LOSS_ATOL

from modeconn.analyses.mechanisms_permuted import KIND
from modeconn.config.study import load_study
from modeconn.pipeline import StudyRunner
from modeconn.store import Store

SETS = {"clean": "clean", "cue": "cue", "random_cue": "random_cue", "random_image": "ri"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("permuted")
    data = tiny_digits_study(tmp / "out")
    digits = {"kind": "digits", "sample_size": 48, "role": "ood"}
    data["splits"]["cue"] = {**digits, "cue": "label"}
    data["splits"]["ri"] = {**digits, "cue": "random_image"}
    data["analyses"] = {
        "mechanisms": {"sets": SETS, "points": 3, "permute": True, "permute_sets": ["clean"],
                       "bootstrap": 20}
    }  # fmt: skip
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    runner = StudyRunner(load_study(path), progress=False)
    result = runner.run()
    with Store(runner.study.out_path() / "results.sqlite", create=False) as store:
        records = store.values(KIND)
    return {"result": result, "value": result.analyses["mechanisms"], "records": records}


def test_every_scratch_pair_has_a_plain_and_an_aligned_path(measured) -> None:
    perm = measured["value"]["permuted"]
    assert len(perm) == 6 * 2  # 4 members → 6 pairs, each plain and aligned, on 1 set
    assert set(perm["pair"]) == {"cue–cue", "cue–seed", "seed–seed"}
    assert perm["loss_barrier"].ge(0).all() and perm["fixed_channels"].between(0, 1).all()


def test_the_aligned_endpoint_is_the_same_function(measured) -> None:
    """At α = 0 both paths stand on B: B and B aligned to A give the same loss."""
    recs = list(measured["records"].values())
    ends = sorted((round(r["loss"][0], 4), round(r["loss"][-1], 4)) for r in recs)
    for plain, aligned in zip(ends[::2], ends[1::2], strict=True):
        assert np.allclose(plain, aligned, atol=10 * FLOAT32_LOSS_ATOL)


def test_the_basins_are_scored_against_the_arms(measured) -> None:
    rec = measured["value"]["recovery"]
    assert rec["groups"] == {"seed": 2, "cue": 2}
    assert -1 <= rec["low"] <= rec["high"] <= 1 and rec["draws"] == 20
    assert rec["ari"] == pytest.approx(measured["result"].recovery)
    lines = measured["result"].summary()
    assert "mechanisms permuted cue–seed on clean" in lines and "ARI" in lines
