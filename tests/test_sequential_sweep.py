"""paths.sequential end to end: paths evaluated block by block of the sample, stopped by
the bootstrap rule, stored as ordinary rows that a rerun, a kill and a later full study
reuse (the rule itself: tests/test_sequential.py)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_study_dict
from test_vision_study import tiny_digits_study
from tolerances import FLOAT32_LOSS_ATOL

from modeconn.cli import main
from modeconn.config.study import load_study
from modeconn.data.base import KeyedSplit
from modeconn.engine.blockwise import pilot_delta, round_ends
from modeconn.engine.planning import plan_study
from modeconn.engine.sweep import unit_key
from modeconn.measures.barriers import convexity_gap
from modeconn.pipeline import StudyRunner
from modeconn.results import analyze
from modeconn.stats.sequential import sequential_gap
from modeconn.store import Store

SAMPLE, BLOCK, POINTS = 48, 12, 5
DELTA = 0.05  # basins.delta of the fixed-δ affinity run


def _study(root: Path, name: str, basins: dict[str, Any] | None = None, **paths: Any) -> Path:
    data = tiny_digits_study(root / name, points=POINTS)
    data["train"]["out_dir"] = str(root / "members")  # every study sweeps the same members
    data["paths"].update(paths)
    data["basins"].update(basins or {})
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _rows(path: Path) -> pd.DataFrame:
    with Store(load_study(path).store_path(), create=False) as store:
        assert store.integrity_check() == "ok"
        return store.path_points(rows="all", with_examples=True)


def _members(path: Path) -> dict[tuple[str, str], Any]:
    with Store(load_study(path).store_path(), create=False) as store:
        m = store.member_points(with_examples=True)
    return {(r.member_hash, r.split): r for r in m.itertuples()}


def _by_point(rows: pd.DataFrame) -> dict[tuple[str, str, str, float], Any]:
    return {(r.member_a, r.member_b, r.split, r.alpha): r for r in rows.itertuples()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 4 members swept on the whole sample, and with a rule that always stops
    (tolerance 10) after min_blocks = 2 and = 3 blocks of 12 of the 48 examples."""
    root = tmp_path_factory.mktemp("sequential")
    out = {
        "full": _study(root, "full"),
        "two": _study(root, "two", sequential={"tolerance": 10.0, "block": BLOCK}),
        "three": _study(
            root, "three", sequential={"tolerance": 10.0, "block": BLOCK, "min_blocks": 3}
        ),
        # replayed on these members' full sweep, 0.02 stops paths after 24, 36 and 48
        "mixed": _study(root, "mixed", sequential={"tolerance": 0.02, "block": BLOCK}),
        # a tolerance that never holds: only the basin affinity stops, with δ from a
        # pilot (median) or the study's δ (fixed)
        "median": _study(
            root, "median", sequential={"tolerance": 1e-6, "block": BLOCK, "affinity": 0.2}
        ),
        "fixed": _study(
            root,
            "fixed",
            basins={"delta": DELTA},
            sequential={"tolerance": 1e-6, "block": BLOCK, "affinity": 0.2},
        ),
    }
    assert main(["run", str(out["two"]), "--quiet"]) == 0  # trains, sweeps, reports
    for name in ("full", "three", "mixed", "median", "fixed"):  # the same members: sweeps only
        StudyRunner(load_study(out[name]), progress=False).sweep()
    return out


@pytest.mark.parametrize(("run", "blocks"), [("two", 2), ("three", 3), ("mixed", None)])
def test_a_stopped_path_holds_its_first_blocks_as_a_full_evaluation_gives_them(
    runs: dict[str, Path], run: str, blocks: int | None
) -> None:
    full, seq = _by_point(_rows(runs["full"])), _rows(runs[run])
    members = _members(runs["full"])
    seen = seq.groupby(["member_a", "member_b", "split"])["n_examples"]
    assert (seen.nunique() == 1).all(), "every point of a unit on the same examples"
    if blocks is None:  # the rule stopped some paths early and let others run on
        assert seen.first().nunique() > 1, seen.first()
        assert set(seq["n_examples"]) <= {2 * BLOCK, 3 * BLOCK, SAMPLE}
    else:
        assert set(seq["n_examples"]) == {blocks * BLOCK}, "at min_blocks, never before"
    assert set(seq["sample_size"]) == {SAMPLE}  # the same sample, so the same unit keys
    assert len(seq) == len(full)
    for r in seq.itertuples():
        m = r.n_examples
        ref = full[(r.member_a, r.member_b, r.split, r.alpha)]
        np.testing.assert_allclose(
            r.example_losses, ref.example_losses[:m], rtol=0, atol=FLOAT32_LOSS_ATOL
        )
        assert r.loss == pytest.approx(float(np.mean(ref.example_losses[:m])), abs=1e-5)
        if r.alpha in (0.0, 1.0):  # the member point restricted to the same examples
            end = members[(r.hash_b if r.alpha == 0.0 else r.hash_a, r.split)]
            np.testing.assert_array_equal(r.example_losses, end.example_losses[:m])
            assert r.loss == pytest.approx(float(np.mean(end.example_losses[:m], dtype=float)))


def _clean_curves(rows: pd.DataFrame) -> tuple[dict[tuple[str, str], Any], np.ndarray]:
    clean = rows[rows["split"].str.startswith("clean#")]
    curves = {
        k: np.stack(list(g.sort_values("alpha")["example_losses"])).astype(np.float64)
        for k, g in clean.groupby(["member_a", "member_b"])
    }
    return curves, np.sort(clean["alpha"].unique())


@pytest.mark.parametrize("run", ["median", "fixed"])
def test_the_affinity_stop_is_the_rule_replayed_with_its_delta(
    runs: dict[str, Path], run: str
) -> None:
    """δ is basins.delta, or under `median` the median gap of the basins' split on the
    first min_blocks blocks (the pilot); each path of that split stops where
    sequential_gap with that δ stops on the full sweep's losses, and a path of another
    split (no affinity there) runs to the sample's end; a rerun evaluates nothing."""
    curves, alphas = _clean_curves(_rows(runs["full"]))
    pilot = [convexity_gap(c[:, : 2 * BLOCK].mean(axis=1), alphas) for c in curves.values()]
    delta = DELTA if run == "fixed" else float(np.median(pilot))
    if run == "median":  # the sweep's own δ, from its own store
        study = load_study(runs[run])
        runner = StudyRunner(study, progress=False)
        with Store(study.store_path(), create=False) as store:
            plan = runner.plan(store)
            keys = [
                unit_key(plan, i, j, runner.splits()["clean"])
                for i in range(len(plan.members))
                for j in range(i + 1, len(plan.members))
            ]
            assert pilot_delta(store, keys, 2 * BLOCK) == pytest.approx(delta, rel=1e-9)
    want = {
        k: sequential_gap(
            lambda b, c=c: c[:, b * BLOCK : (b + 1) * BLOCK],
            alphas,
            SAMPLE,
            block=BLOCK,
            min_blocks=2,
            tolerance=1e-6,
            affinity=0.2,
            delta=delta,
        ).examples
        for k, c in curves.items()
    }
    seen = _rows(runs[run]).groupby(["member_a", "member_b", "split"])["n_examples"].first()
    assert {(a, b): n for (a, b, s), n in seen.items() if s.startswith("clean#")} == want
    if run == "fixed":  # δ near the gaps: some paths settle early, some do not
        assert len(set(want.values())) > 1, want
    others = [n for (a, b, s), n in seen.items() if not s.startswith("clean#")]
    assert others and set(others) == {SAMPLE}
    again = StudyRunner(load_study(runs[run]), progress=False).sweep()
    assert again.path_evaluations == 0 and again.member_evaluations == 0


def test_the_gap_of_a_stopped_path_is_on_the_examples_it_saw(runs: dict[str, Path]) -> None:
    with Store(load_study(runs["two"]).store_path(), create=False) as store:
        result = analyze(store, load_study(runs["two"]))
    assert "paths on 'clean' saw 24–24 of 48 examples (median 24; 100% stopped early)" in (
        result.summary()
    )
    rows = _rows(runs["two"])
    clean = rows[rows["split"].str.startswith("clean#")]
    for (a, b), g in clean.groupby(["member_a", "member_b"]):
        g = g.sort_values("alpha")
        curve = np.stack(list(g["example_losses"])).astype(np.float64).mean(axis=1)
        want = convexity_gap(curve, g["alpha"].to_numpy())
        assert result.distance.loc[a, b] == pytest.approx(want, abs=1e-6)


def test_rerun_does_nothing_and_a_full_study_evaluates_only_the_missing_examples(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    study = load_study(runs["two"])
    again = StudyRunner(study, progress=False).sweep()
    assert again.path_evaluations == 0 and again.member_evaluations == 0
    before = _by_point(_rows(runs["two"]))
    data = yaml.safe_load(runs["two"].read_text())
    del data["paths"]["sequential"]
    data["output_dir"] = str(tmp_path / "completed")  # a copy of the sequential store
    (tmp_path / "completed").mkdir()
    for f in study.store_path().parent.glob(study.store_path().name + "*"):
        shutil.copy2(f, tmp_path / "completed" / f.name)
    completed = tmp_path / "completed.yaml"
    completed.write_text(yaml.safe_dump(data))
    stats = StudyRunner(load_study(completed), progress=False).sweep()
    interior = sum(1 for k in before if 0.0 < k[3] < 1.0)
    assert stats.path_evaluations == interior  # one pass per point, over its 24 missing
    assert stats.path_examples == interior * (SAMPLE - 2 * BLOCK)
    full = _by_point(_rows(runs["full"]))
    after = _rows(completed)
    assert set(after["n_examples"]) == {SAMPLE}
    for r in after.itertuples():
        key = (r.member_a, r.member_b, r.split, r.alpha)
        m = before[key].n_examples
        np.testing.assert_array_equal(r.example_losses[:m], before[key].example_losses)
        np.testing.assert_allclose(
            r.example_losses, full[key].example_losses, rtol=0, atol=FLOAT32_LOSS_ATOL
        )
        assert r.loss == pytest.approx(full[key].loss, abs=FLOAT32_LOSS_ATOL)
        assert r.accuracy == pytest.approx(full[key].accuracy, abs=1e-9)


def test_a_rule_that_never_holds_evaluates_the_whole_sample(tmp_path: Path) -> None:
    """Tolerance 1e-9: every path runs to the sample's end and equals the full sweep."""
    root = tmp_path
    full = _study(root, "full")
    tight = _study(root, "tight", sequential={"tolerance": 1e-9, "block": BLOCK})
    assert main(["run", str(tight), "--quiet"]) == 0  # trains the members
    StudyRunner(load_study(full), progress=False).sweep()
    store = load_study(tight).store_path()
    for p in store.parent.glob(store.name + "*"):
        p.unlink()  # swept again into a fresh store, for the counts
    stats = StudyRunner(load_study(tight), progress=False).sweep()
    rounds = len(round_ends(SAMPLE, BLOCK, 0))
    assert stats.path_examples == stats.units_written * (POINTS - 2) * SAMPLE
    assert stats.path_evaluations == stats.units_written * (POINTS - 2) * rounds
    want = _by_point(_rows(full))
    for r in _rows(tight).itertuples():
        ref = want[(r.member_a, r.member_b, r.split, r.alpha)]
        assert r.n_examples == SAMPLE
        assert r.loss == pytest.approx(ref.loss, abs=FLOAT32_LOSS_ATOL)
        assert r.accuracy == pytest.approx(ref.accuracy, abs=1e-9)


def test_sequential_with_adaptive_grids_and_landmarks(tmp_path: Path) -> None:
    """All three savings at once: landmark pairs only, α on the lattice, every point of
    a unit on the same examples, the rule's minimum kept, basins and report built."""
    path = _study(
        tmp_path,
        "all",
        tolerance=0.002,
        sequential={"tolerance": 0.5, "block": BLOCK},
    )
    data = yaml.safe_load(path.read_text())
    data["train"]["arms"][0]["members"] = data["train"]["arms"][1]["members"] = 3
    data["basins"]["landmarks"] = 3
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--quiet"]) == 0
    rows = _rows(path)
    lattice = set(np.round(np.linspace(0, 1, POINTS), 6))
    assert set(rows["alpha"]) <= lattice
    for _, g in rows.groupby(["member_a", "member_b", "split"]):
        assert g["n_examples"].nunique() == 1  # endpoints included
        assert g["n_examples"].iloc[0] >= 2 * BLOCK
    pairs = {tuple(sorted(k)) for k in rows.groupby(["member_a", "member_b"]).groups}
    assert len(pairs) == 3 * 3 + 3  # the pairs touching 3 landmarks of 6 members
    assert (load_study(path).out_path() / "report" / "report.html").exists()


def test_uncertainty_bootstraps_paths_of_different_lengths(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """The bootstrap over the sample reads each path on the examples it saw."""
    from modeconn.analyses.uncertainty import example_losses

    data = yaml.safe_load(runs["mixed"].read_text())
    with Store(load_study(runs["mixed"]).store_path(), create=False) as store:
        result = analyze(store, load_study(runs["mixed"]))
        ex, _ = example_losses(store, result, "clean")
    seen = np.isfinite(ex[:, 0, :]).sum(axis=1)  # examples per path
    assert ex.shape[2] == seen.max() > seen.min() >= 2 * BLOCK  # paths of different lengths
    data["analyses"] = {"uncertainty": {"samples": 20, "sizes": [24], "repeats": 5}}
    path = tmp_path / "uncertainty.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--quiet"]) == 0


def test_mcc_is_scored_on_the_examples_seen_and_a_completion_reevaluates_it(
    tmp_path: Path,
) -> None:
    """MCC is not a mean over examples: a stopped point scores its blocks' predictions
    together (as one evaluation of those examples does), and a later full study evaluates
    such a point on the whole sample instead of only the missing examples."""
    seq = _study(tmp_path, "seq", sequential={"tolerance": 10.0, "block": BLOCK})
    data = yaml.safe_load(seq.read_text())
    data["splits"]["clean"]["metric"] = "mcc"
    seq.write_text(yaml.safe_dump(data))
    runner = StudyRunner(load_study(seq), progress=False)
    runner.train()
    runner.sweep()
    rows = _rows(seq)
    clean = rows[rows["split"].str.startswith("clean#")]
    assert clean["mcc"].notna().all()
    r = clean[(clean["alpha"] > 0) & (clean["alpha"] < 1)].iloc[0]
    ev, pop = runner.evaluator(), runner.population()
    ends = [ev.as_point(pop.load(m), name=m) for m in (r["member_a"], r["member_b"])]
    prefix = runner.splits()["clean"].rows(0, 2 * BLOCK)  # type: ignore[attr-defined]
    want = ev.evaluate_lerp(*ends, float(r["alpha"]), prefix)
    assert r["mcc"] == pytest.approx(want.metrics["mcc"], abs=1e-9)
    assert r["accuracy"] == pytest.approx(want.metrics["accuracy"], abs=1e-9)

    del data["paths"]["sequential"]
    seq.write_text(yaml.safe_dump(data))
    stats = StudyRunner(load_study(seq), progress=False).sweep()
    per_split = rows[(rows["alpha"] > 0) & (rows["alpha"] < 1)].groupby(
        rows["split"].str.split("#").str[0]
    )
    n = per_split.size()
    assert stats.path_examples == n["clean"] * SAMPLE + n["random_cue"] * (SAMPLE - 2 * BLOCK)
    assert set(_rows(seq)["n_examples"]) == {SAMPLE}


def test_plan_says_counts_are_upper_bounds(runs: dict[str, Path]) -> None:
    text = plan_study(load_study(runs["two"])).summary()
    assert "paths.sequential" in text and "upper bounds" in text
    assert "never before 24 examples" in text


def test_a_block_of_a_split_is_its_examples_in_sample_order(runs: dict[str, Path]) -> None:
    runner = StudyRunner(load_study(runs["full"]), progress=False)
    split = runner.splits()["clean"]
    block = split.rows(12, 30)  # type: ignore[attr-defined]
    assert isinstance(split, KeyedSplit) and block.key == split.key
    assert block.n == 18 and sorted(block.order.tolist()) == list(range(18))
    labels = split.labels.numpy()[np.argsort(split.order)]  # sample order
    assert block.labels.numpy()[np.argsort(block.order)].tolist() == labels[12:30].tolist()


# --------------------------------------------------------------------------- kill, resume


def _units(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM units").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_killed_sequential_sweep_resumes_to_the_uninterrupted_store(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    """Text splits (tiny BERT, length-bucketed batches re-cut per block), SIGKILLed twice
    mid-sweep, resumed: the same rows as one uninterrupted sequential sweep."""
    seq = {"tolerance": 0.05, "block": 16, "min_blocks": 2}
    ref = tiny_study_dict(tiny_model_dir, data_root, tmp_path / "ref", members=3, sample=96)
    ref["paths"]["sequential"] = seq
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(ref))
    runner = StudyRunner(load_study(tmp_path / "ref.yaml"), progress=False)
    runner.sweep()
    total = runner.plan(Store(runner.study.store_path())).n_units
    killed = dict(
        ref,
        output_dir=str(tmp_path / "killed"),
        population={"dir": str(runner.study.members_dir())},
    )
    killed.pop("train")
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(killed))
    store = tmp_path / "killed" / "results.sqlite"
    cmd = [sys.executable, "-m", "modeconn.cli", "run", str(tmp_path / "killed.yaml"), "--quiet"]
    seen = []
    for target in (total // 4, (2 * total) // 3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _units(store) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        seen.append(_units(store))
    assert 0 < seen[0] < total and seen[0] <= seen[1] < total, (seen, total)
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    def rows(path: Path) -> pd.DataFrame:
        with Store(path, create=False) as s:
            assert s.integrity_check() == "ok"
            out = s.path_points(with_examples=True).drop(columns=["created"])
        return out.sort_values(["hash_a", "hash_b", "split", "alpha"]).reset_index(drop=True)

    got, want = rows(store), rows(runner.study.store_path())
    pd.testing.assert_frame_equal(
        got.drop(columns=["example_losses"]),
        want.drop(columns=["example_losses"]),
        check_exact=False,
        rtol=1e-6,
    )
    for a, b in zip(got["example_losses"], want["example_losses"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("affinity", [None, 0.2])
def test_kill_harness_with_sequential_samples_and_landmarks(
    data_root: Path, tmp_path: Path, affinity: float | None
) -> None:
    """benchmarks/kill_harness.py with paths.sequential and basins.landmarks on: 3 SIGKILLs
    at random moments, each completed store equal to the uninterrupted run; with
    ``affinity`` the kills also land in the pilot or in the second stage."""
    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    from kill_harness import run_harness

    lines: list[str] = []
    result = run_harness(
        tmp_path,
        kills=3,
        backend="local",
        members=6,
        sample=48,
        data=data_root,
        say=lines.append,
        landmarks=3,
        sequential={
            "tolerance": 0.05 if affinity is None else 0.01,
            "block": 12,
            "min_blocks": 2,
            **({} if affinity is None else {"affinity": affinity}),
        },
    )
    report = "\n".join(lines)
    assert "reference: 24 units" in report, report
    assert result.survived == result.kills and result.rounds_equal == result.rounds >= 1, report
    assert result.ok, report


def test_doctests_of_the_block_modules() -> None:
    import doctest

    import modeconn.data.rows
    import modeconn.engine.blockwise

    for module in (modeconn.data.rows, modeconn.engine.blockwise):
        assert doctest.testmod(module).failed == 0
