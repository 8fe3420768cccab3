"""paths.tolerance end to end: adaptive units store lattice points a full grid reuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_vision_study import tiny_digits_study

from modeconn.cli import main
from modeconn.config.study import load_study
from modeconn.measures.barriers import convexity_gap
from modeconn.pipeline import StudyRunner
from modeconn.store import Store

POINTS = 17


def _run(path: Path) -> None:
    assert main(["run", str(path), "--quiet"]) == 0


def _points(out: Path) -> dict[tuple[str, str, str], dict[float, float]]:
    with Store(out / "results.sqlite", create=False) as store:
        rows = store.path_points(rows="all")
    return {
        k: dict(zip(g["alpha"], g["loss"], strict=True))
        for k, g in rows.groupby(["member_a", "member_b", "split"])
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adaptive")
    full = tiny_digits_study(root / "full", points=POINTS)
    (root / "full.yaml").write_text(yaml.safe_dump(full))
    _run(root / "full.yaml")
    adaptive = tiny_digits_study(root / "adaptive", points=POINTS)
    adaptive["paths"]["tolerance"] = 0.002
    (root / "adaptive.yaml").write_text(yaml.safe_dump(adaptive))
    _run(root / "adaptive.yaml")
    return root / "full.yaml", root / "adaptive.yaml"


def test_adaptive_gap_within_tolerance_of_full_grid(runs: tuple[Path, Path]) -> None:
    full, adaptive = (_points(load_study(p).out_path()) for p in runs)
    assert full.keys() == adaptive.keys()
    fewer = 0
    for key, curve in full.items():
        sub = adaptive[key]
        assert set(sub) <= set(curve), "adaptive points lie on the full lattice"
        for alpha, loss in sub.items():
            assert loss == pytest.approx(curve[alpha], rel=1e-5, abs=1e-6)
        a_full, a_sub = sorted(curve), sorted(sub)
        g_full = convexity_gap([curve[a] for a in a_full], a_full)
        g_sub = convexity_gap([sub[a] for a in a_sub], a_sub)
        assert abs(g_full - g_sub) <= 0.002 + 1e-6
        fewer += len(sub) < POINTS
    assert fewer > 0, "the adaptive grid saved no point on any path"


def test_rerun_evaluates_nothing_and_full_grid_fills_only_the_gaps(
    runs: tuple[Path, Path],
) -> None:
    _, adaptive = runs
    study = load_study(adaptive)
    assert StudyRunner(study, progress=False).sweep().path_evaluations == 0
    before = _points(study.out_path())
    missing = sum(POINTS - len(c) for c in before.values())
    data = yaml.safe_load(adaptive.read_text())
    del data["paths"]["tolerance"]
    adaptive.write_text(yaml.safe_dump(data))
    stats = StudyRunner(load_study(adaptive), progress=False).sweep()
    assert stats.path_evaluations == missing
    after = _points(study.out_path())
    for key, curve in after.items():
        assert len(curve) == POINTS
        for alpha, loss in before[key].items():
            assert curve[alpha] == loss  # the stored point kept, not re-evaluated
    full = _points(load_study(runs[0]).out_path())
    for key, curve in after.items():
        np.testing.assert_allclose(
            [curve[a] for a in sorted(curve)],
            [full[key][a] for a in sorted(full[key])],
            rtol=1e-5,
            atol=1e-6,
        )
