"""Rows belong to weights (hashes); ids are labels of the current population.

Each test runs a tiny study, changes its population the way a user does — retrains the
members under the same ids, replaces a member's file, renames a member, swaps two members'
names — runs it again, and checks that the analysis reads the rows of today's weights under
today's ids: the new rows where weights changed, the old rows (nothing recomputed) where
only names changed. Before, the first two ended in "alphas must be strictly increasing"
and the last two in "no path m0–m1x …" on every later run, until the store was deleted.

The store-level tests at the end check the population view of ``Store.path_points`` /
``member_points`` on hand-written rows, without a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import LABELS, tiny_study_dict
from safetensors.torch import load_file, save_file

from modeconn.cli import main
from modeconn.config.study import load_study
from modeconn.errors import PopulationError
from modeconn.measures.barriers import curve_distance
from modeconn.pipeline import StudyRunner
from modeconn.results import StudyResult, curves
from modeconn.status import store_status
from modeconn.store import MemberPoint, PathPoint, Store, UnitKey

N = 3  # members: the fewest a correlation takes


@pytest.fixture(scope="module")
def member_files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three different copies of the tiny model, as m0..m2.safetensors."""
    from modeconn.models.hf import load_classifier

    model = load_classifier(tiny_model_dir, LABELS)
    out = tmp_path_factory.mktemp("members")
    gen = torch.Generator().manual_seed(0)
    for i in range(N):
        state = {
            k: (v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
            for k, v in model.state_dict().items()
        }
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"m{i}.safetensors"))
    return out


def _population_study(tmp_path: Path, member_files: Path, model: Path, data: Path) -> Path:
    members = tmp_path / "members"
    shutil.copytree(member_files, members)
    study = tiny_study_dict(model, data, tmp_path / "out", sample=24, points=5)
    del study["train"]
    study["population"] = {"dir": str(members)}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _run(path: Path, *, report: bool = False) -> tuple[StudyResult, int]:
    """Sweep, analyse (and report); the number of evaluations the sweep made."""
    runner = StudyRunner(load_study(path), progress=False)
    stats = runner.sweep()
    result = runner.analyze()
    if report:
        result = result.with_report(runner.report(result))
    return result, stats.member_evaluations + stats.path_evaluations


def _check_read_by_hash(store_path: Path, result: StudyResult) -> None:
    """Every pair's curve on 'mnli' is the raw rows of exactly the members' current hashes,
    and the distance matrix is computed from those curves."""
    ids = result.members["hash"].to_dict()
    with Store(store_path, create=False) as store:
        raw = store.path_points(rows="all", grid="linear:5")
        raw = raw[raw["split"] == json.loads(store.get_meta("splits") or "{}")["mnli"]["key"]]
        found = curves(store, "mnli")
    names = sorted(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            want = raw[(raw["hash_a"] == ids[a]) & (raw["hash_b"] == ids[b])]
            if want.empty:  # swept the other way round
                want = raw[(raw["hash_a"] == ids[b]) & (raw["hash_b"] == ids[a])]
                want = want.assign(alpha=1.0 - want["alpha"])
            want = want.sort_values("alpha")
            got = found[(a, b)]
            assert len(want) == len(got) == 5, (a, b)
            np.testing.assert_allclose(got["alpha"], want["alpha"], atol=1e-12)
            np.testing.assert_array_equal(got["loss"], want["loss"])
            assert result.distance.loc[a, b] == curve_distance(
                want["loss"].to_numpy(), want["alpha"].to_numpy(), "convexity_gap"
            )


# --------------------------------------------------------------------------- the four cases


def test_retrained_members_under_the_same_ids_use_the_new_rows(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    study = tiny_study_dict(tiny_model_dir, data_root, tmp_path / "out", sample=24, points=5)
    study["train"].update(examples=32, arms=[dict(study["train"]["arms"][0], members=N)])
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    first, _ = _run(path)

    study["train"]["lr"] = 3e-3  # the members are retrained under the same ids
    path.write_text(yaml.safe_dump(study))
    second, evaluations = _run(path, report=True)

    assert evaluations > 0
    assert list(second.members.index) == list(first.members.index)
    assert set(second.members["hash"]).isdisjoint(first.members["hash"])
    store_path = load_study(path).store_path()
    with Store(store_path, create=False) as store:
        assert store.counts()["units"] == 2 * 2 * N * (N - 1) // 2  # old and new rows kept
        status = store_status(store)
    assert "path units 3/3" in status["split mnli"] and status["integrity"] == "ok"
    _check_read_by_hash(store_path, second)
    assert second.report is not None and second.report.is_file()


def test_a_member_file_replaced_by_new_weights_uses_its_new_rows(
    member_files: Path, tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    path = _population_study(tmp_path, member_files, tiny_model_dir, data_root)
    first, _ = _run(path)
    target = tmp_path / "members" / "m1.safetensors"
    save_file(
        {k: v * 1.01 if v.is_floating_point() else v for k, v in load_file(target).items()}, target
    )

    second, evaluations = _run(path)

    assert evaluations == 3 + 2 * 2 * 3  # m1 on its 3 splits; its 2 pairs × 2 splits × 3 α
    assert second.members.loc["m1", "hash"] != first.members.loc["m1", "hash"]
    assert (second.members.drop("m1")["hash"] == first.members.drop("m1")["hash"]).all()
    _check_read_by_hash(load_study(path).store_path(), second)
    assert second.members.loc["m1", "mnli.loss"] != first.members.loc["m1", "mnli.loss"]
    assert second.members.loc["m0", "mnli.loss"] == first.members.loc["m0", "mnli.loss"]


def test_a_renamed_member_reuses_its_rows_and_nothing_is_recomputed(
    member_files: Path, tiny_model_dir: Path, data_root: Path, tmp_path: Path, capsys
) -> None:
    path = _population_study(tmp_path, member_files, tiny_model_dir, data_root)
    first, _ = _run(path)
    (tmp_path / "members" / "m1.json").write_text('{"id": "m1x"}')  # a sidecar renames it

    second, evaluations = _run(path)

    assert evaluations == 0
    assert list(second.members.index) == ["m0", "m1x", "m2"]
    assert second.members.loc["m1x", "hash"] == first.members.loc["m1", "hash"]
    renamed = first.distance.rename(index={"m1": "m1x"}, columns={"m1": "m1x"})
    pd.testing.assert_frame_equal(second.distance, renamed)
    # every reader labels the old rows with the new name
    out = load_study(path).out_path()
    assert main(["export", str(out), "--out", str(tmp_path / "csv")]) == 0
    exported = pd.read_csv(tmp_path / "csv" / "path_points.csv")
    assert set(exported["member_a"]) | set(exported["member_b"]) == {"m0", "m1x", "m2"}
    assert main(["status", str(out)]) == 0
    assert "path units 3/3" in capsys.readouterr().out


def test_two_members_with_swapped_names_are_read_under_their_new_names(
    member_files: Path, tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    path = _population_study(tmp_path, member_files, tiny_model_dir, data_root)
    first, _ = _run(path)
    folder = tmp_path / "members"
    (folder / "m0.safetensors").rename(folder / "tmp.safetensors")
    (folder / "m1.safetensors").rename(folder / "m0.safetensors")
    (folder / "tmp.safetensors").rename(folder / "m1.safetensors")

    second, evaluations = _run(path)

    old, new = first.members, second.members
    assert new.loc["m0", "hash"] == old.loc["m1", "hash"]
    assert new.loc["m1", "hash"] == old.loc["m0", "hash"]
    # member points are reused under their new names; the m0–m1 pair, which the sweep
    # would now orient the other way (pairs go by id), was swept as m1→m0: nothing to do
    assert evaluations == 0
    for col in ("mnli.loss", "hans_lo.accuracy", "hans_sub.accuracy"):
        assert new.loc["m0", col] == old.loc["m1", col]
        assert new.loc["m1", col] == old.loc["m0", col]
    d_old, d_new = first.distance, second.distance
    assert d_new.loc["m0", "m2"] == d_old.loc["m1", "m2"]
    assert d_new.loc["m1", "m2"] == d_old.loc["m0", "m2"]
    # the same path read the other way
    assert d_new.loc["m0", "m1"] == pytest.approx(d_old.loc["m0", "m1"], rel=1e-4, abs=1e-7)
    with Store(load_study(path).store_path(), create=False) as store:
        found = curves(store, "mnli")
        assert store.counts()["units"] == 3 * 2  # no unit added
    assert sorted(found) == [("m0", "m2"), ("m1", "m0"), ("m1", "m2")]  # one way each
    forward, backward = found[("m0", "m1")], found[("m1", "m0")]
    np.testing.assert_allclose(forward["loss"], backward["loss"].to_numpy()[::-1])


def test_duplicate_members_are_refused_naming_both(
    member_files: Path, tiny_model_dir: Path, data_root: Path, tmp_path: Path, capsys
) -> None:
    path = _population_study(tmp_path, member_files, tiny_model_dir, data_root)
    shutil.copy(tmp_path / "members" / "m2.safetensors", tmp_path / "members" / "m3.safetensors")
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'m2'" in err and "'m3'" in err and "same weights" in err
    assert not (tmp_path / "out").exists()  # refused before the store was created
    from modeconn.population.members import Population

    with pytest.raises(PopulationError, match=r"members 'm2' .* and 'm3' .* have the same weights"):
        Population.from_dir(tmp_path / "members").hashes()


# --------------------------------------------------------------------------- the store alone


def _point(mid: str, h: str, loss: float) -> MemberPoint:
    return MemberPoint(
        member_id=mid, member_hash=h, split="s", sample_seed=0, sample_size=4,
        loss=loss, metrics={"accuracy": loss}, n_examples=4,
    )  # fmt: skip


def _unit(a: str, ha: str, b: str, hb: str) -> tuple[UnitKey, list[PathPoint]]:
    ends = dict(member_a=a, member_b=b, hash_a=ha, hash_b=hb, path="linear", grid="linear:3")
    key = UnitKey(**ends, split="s", sample_seed=0, sample_size=4)
    return key, [
        PathPoint(**key.to_dict(), alpha=x, loss=1.0 + x, metrics={}, n_examples=4)
        for x in (0.0, 0.5, 1.0)
    ]


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """Rows of members a (hash A), b (B), c (C), and of an old b (hash B0)."""
    path = tmp_path / "r.sqlite"
    with Store(path, study="t") as s:
        s.write_member_points([_point("a", "A", 1), _point("b", "B", 2), _point("c", "C", 3)])
        s.write_member_points([_point("b", "B0", 9)])
        for unit in (
            _unit("a", "A", "b", "B"),
            _unit("a", "A", "c", "C"),
            _unit("b", "B", "c", "C"),
        ):
            s.write_unit(*unit)
        s.write_unit(*_unit("a", "A", "b", "B0"))
    return path


def _members(store: Store, *pairs: tuple[str, str]) -> None:
    store.set_meta("members", json.dumps([{"id": i, "hash": h} for i, h in pairs]))


def test_without_a_members_record_every_row_reads_as_written(written: Path) -> None:
    with Store(written) as s:
        assert len(s.member_points()) == 4 and len(s.path_points()) == 12


def test_population_view_keeps_current_weights_under_current_ids(written: Path) -> None:
    with Store(written) as s:
        _members(s, ("a", "A"), ("bee", "B"), ("c", "C"))  # b renamed; B0 is gone
        m = s.member_points()
        assert m.set_index("member_hash")["member_id"].to_dict() == {"A": "a", "B": "bee", "C": "c"}
        p = s.path_points()
        assert sorted(set(zip(p["member_a"], p["member_b"], strict=True))) == [
            ("a", "bee"),
            ("a", "c"),
            ("bee", "c"),
        ]
        assert "B0" not in set(p["hash_b"])
        assert set(s.path_points(member_a="bee")["member_b"]) == {"c"}  # filters use new ids
        assert len(s.path_points(rows="all")) == 12  # nothing was deleted
        assert s.path_points(rows="all", member_b="b")["hash_b"].nunique() == 2


def test_population_view_shows_a_pair_swept_both_ways_once(written: Path) -> None:
    with Store(written) as s:
        s.write_unit(*_unit("b", "B", "a", "A"))  # after a swap the sweep ran b→a
        _members(s, ("b", "A"), ("a", "B"), ("c", "C"))  # a and b swapped names
        p = s.path_points()
        columns = (p["member_a"], p["member_b"], p["hash_a"], p["hash_b"])
        pairs = sorted(set(zip(*columns, strict=True)))
        # a < b by id: the unit oriented a→b (hashes B→A) is kept, its mirror left out
        assert pairs == [("a", "b", "B", "A"), ("a", "c", "B", "C"), ("b", "c", "A", "C")]


def test_a_members_record_with_duplicate_weights_is_refused(written: Path) -> None:
    with Store(written) as s:
        with pytest.raises(PopulationError, match=r"members 'a' and 'a2' have the same weights"):
            _members(s, ("a", "A"), ("a2", "A"))
        assert s.get_meta("members") is None


def test_reversed_curve_is_the_same_path(written: Path) -> None:
    with Store(written) as s:
        _members(s, ("a", "A"), ("b", "B"), ("c", "C"))
        s.set_meta("splits", json.dumps({"s": {"key": "s", "sample_seed": 0, "sample_size": 4}}))
        s.set_meta("grid", json.dumps({"grid": "linear:3", "alphas": [0, 0.5, 1]}))
        found = curves(s, "s")
    forward, backward = found[("a", "b")], found[("b", "a")]
    assert ("b", "a") in found and ("b", "a") not in list(found)
    np.testing.assert_allclose(backward["alpha"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(backward["loss"], forward["loss"].to_numpy()[::-1])
    assert (backward["member_a"] == "b").all() and (backward["hash_a"] == "B").all()
