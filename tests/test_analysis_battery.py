"""One battery over every registered analysis (scikit-learn's estimator checks are the model).

For each analysis of :mod:`modeconn.analyses.registry`, on one tiny study that enables
them all:

* its records are keyed: what ``measure`` wrote is in the store under a key built from
  weight hashes (never member ids), and reading needs nothing else;
* a rerun computes nothing: no weights loaded onto the engine, no evaluation, no write;
* the report rebuilds from the store alone (``modeconn report STORE --out OTHER``, the
  store file copied to a folder of its own) with the analysis's sections in it;
* a changed input never reuses a stale record: with one member's weights changed, the
  analysis measures again (new keys) instead of finding the old member's records; and
  with its settings changed (sharpness, planes), likewise.

And adding an analysis is one module plus one registry line: a toy analysis defined
here (the worked example of docs/architecture.md), registered at run time, is validated
with the study, listed by ``modeconn analyses``, measured, read and reported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import tiny_study_dict
from pydantic import Field
from safetensors.numpy import load_file, save_file

from modeconn.analyses import registry
from modeconn.analyses.base import (
    MeasureContext,
    is_enabled,
    settings_fingerprint,
    summary_json,
    value_key,
)
from modeconn.cli import main
from modeconn.config.sections import SectionModel
from modeconn.config.study import load_study
from modeconn.errors import ConfigError
from modeconn.pipeline import StudyRunner, _check_against
from modeconn.report.html import Section
from modeconn.report.json import dumps, study_json
from modeconn.results import StudyResult
from modeconn.store import Store

ALL = registry.all_analyses()
IDS = [a.key for a in ALL]

# every registered analysis switched on, at the smallest sizes that still exercise it
ANALYSES: dict[str, Any] = {
    "distances": ["convexity_gap", "barrier_height", "euclidean"],
    "sharpness": {"split": "mnli", "steps": 2, "examples": 8, "batch_size": 8, "accumulate": 1},
    "uncertainty": {"samples": 4, "sizes": [12], "repeats": 2},
    "planes": [{"members": ["aug-00", "seed-00", "seed-01"], "split": "mnli", "resolution": 2}],
    "trajectory": {},
    "curvature": {"split": "mnli", "points": 3, "bootstrap": 50},
    "layerwise": {
        "split": "mnli",
        "depth": 2,
        "points": 3,
        "random_orders": 2,
        "predict": True,
        "training": True,
        "bootstrap": 50,
    },
    "mechanisms": {
        "sets": {
            "clean": "mnli",
            "cue": "mnli_cue",
            "random_cue": "mnli_random_cue",
            "random_image": "mnli_random_text",
        },
        "points": 3,
        "reference": "aug",
    },
    "curves": {
        "pairs": [["seed-00", "seed-01"]],
        "split": "mnli",
        "eval_splits": ["mnli", "hans_lo"],
        "steps": 2,
        "batch_size": 4,
        "points": 3,
    },
    "spawn": {"steps": [0, 2], "children": 2, "split": "mnli", "points": 3, "curvature": 3},
}
WRITES = ("put_value", "write_unit", "write_member_points")
ENGINE = ("as_point", "evaluate", "evaluate_member", "evaluate_lerp")


def _write_study(folder: Path, data: dict) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _context(runner: StudyRunner, store: Store, calls: Counter) -> MeasureContext:
    """The runner's measure context, its store writes and engine calls counted in `calls`."""
    ev = runner.evaluator()
    for obj, names in ((store, WRITES), (ev, ENGINE)):
        for name in names:
            setattr(obj, name, _counted(getattr(type(obj), name), obj, calls, name))
    return MeasureContext(
        study=runner.study,
        store=store,
        evaluator=ev,
        splits=runner.splits(),
        population=runner.population(),
        members=tuple(runner.members()),
        check_weights=lambda state, m: _check_against(ev.model.state_dict(), state, m),
        progress=False,
        say=lambda _: None,
    )


def _counted(real: Any, obj: Any, calls: Counter, name: str) -> Any:
    """`obj.name` that counts its calls (and, for put_value, each key it writes)."""

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        if name == "put_value":
            calls[f"key {args[0]}|{args[1]}"] += 1
        return real(obj, *args, **kwargs)

    return counted


def _unpatch(runner: StudyRunner, store: Store) -> None:
    for obj, names in ((store, WRITES), (runner.evaluator(), ENGINE)):
        for name in names:
            obj.__dict__.pop(name, None)


def _measure_each(runner: StudyRunner) -> dict[str, Counter]:
    """Measure every enabled analysis in turn; what each wrote and called, by key."""
    out: dict[str, Counter] = {}
    with runner.open_store() as store:
        for a in registry.enabled(runner.study):
            calls: Counter = Counter()
            ctx = _context(runner, store, calls)
            try:
                a.measure(ctx)
            finally:
                _unpatch(runner, store)
            out[a.key] = calls
    return out


@pytest.fixture(scope="module")
def battery(tiny_model_dir: Path, data_root: Path, tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("battery")
    data = tiny_study_dict(tiny_model_dir, data_root, folder / "out", members=2, sample=16)
    data["analyses"] = ANALYSES
    mnli = {**data["splits"]["mnli"], "role": "ood"}  # the token-cue sets of mechanisms
    data["splits"].update(
        mnli_cue={**mnli, "cue": "label"},
        mnli_random_cue={**mnli, "cue": "random"},
        mnli_random_text={**mnli, "cue": "random_text"},
    )
    data["train"]["checkpoints"] = [0.5]
    data["basins"]["bootstrap"] = 50
    study = load_study(_write_study(folder, data))
    runner = StudyRunner(study, progress=False)
    runner.sweep()
    first = _measure_each(runner)
    second = _measure_each(runner)  # the rerun
    result = runner.analyze()
    return {
        "folder": folder,
        "data": data,
        "study": study,
        "runner": runner,
        "first": first,
        "second": second,
        "result": result,
    }


def test_the_battery_study_enables_every_registered_analysis(battery) -> None:
    assert all(is_enabled(a, battery["study"]) for a in ALL)
    assert {"distances", "sharpness", "table_one", "uncertainty", "planes", "trajectory"} <= set(
        IDS
    )


@pytest.mark.parametrize("analysis", ALL, ids=IDS)
def test_declares_what_modeconn_analyses_lists(analysis) -> None:
    assert analysis.key and analysis.cites and analysis.summary
    assert isinstance(analysis.needs_weights, bool)
    assert registry.get(analysis.key) is analysis


@pytest.mark.parametrize("analysis", ALL, ids=IDS)
def test_records_are_keyed_by_weights(battery, analysis) -> None:
    calls = battery["first"][analysis.key]
    if not analysis.needs_weights:
        assert not any(calls[w] for w in WRITES), "an analysis without weights stores nothing"
        return
    assert sum(calls[w] for w in WRITES) > 0, "measure wrote nothing on a fresh store"
    members = battery["result"].members
    ids, hashes = set(members.index), set(members["hash"])
    # runs an analysis trains itself (spawn's parent and children) are keyed by their own
    # weight hashes, which its value lists
    hashes |= set(getattr(battery["result"].analyses[analysis.key], "hashes", ()) or ())
    keys = [k.removeprefix("key ") for k in calls if k.startswith("key ")]
    with Store(battery["study"].store_path(), create=False) as store:
        for full in keys:
            kind, key = full.split("|", 1)
            assert store.get_value(kind, key) is not None  # present after measure
            parts = set(key.split("|"))
            assert parts & hashes, f"{full} is not keyed by a weight hash"
            assert not parts & ids, f"{full} is keyed by a member id"


@pytest.mark.parametrize("analysis", ALL, ids=IDS)
def test_a_rerun_computes_nothing(battery, analysis) -> None:
    calls = battery["second"][analysis.key]
    done = {n: calls[n] for n in (*WRITES, *ENGINE) if calls[n]}
    assert not done, f"the rerun of {analysis.key} did {done}"


@pytest.mark.parametrize("analysis", ALL, ids=IDS)
def test_reads_back_and_reports(battery, analysis) -> None:
    result: StudyResult = battery["result"]
    assert analysis.key in result.analyses
    value = result.analyses[analysis.key]
    sections = analysis.sections(result, value)
    assert sections and all(isinstance(s, Section) for s in sections)
    assert all(isinstance(line, str) for line in analysis.summary_lines(value))


@pytest.mark.parametrize("analysis", ALL, ids=IDS)
def test_summary_json_is_strict_json(battery, analysis) -> None:
    """Its own summary_json, or the generic default: plain JSON, no NaN (report --json)."""
    out = summary_json(analysis, battery["result"].analyses[analysis.key])
    assert isinstance(out, dict)
    json.dumps(out, allow_nan=False)


def test_report_json_holds_every_analysis(battery) -> None:
    doc = json.loads(dumps(study_json(battery["result"])))
    assert list(doc["analyses"]) == IDS


def test_curves_alpha_one_is_the_pairs_first_member(battery) -> None:
    """One α everywhere: the curves analysis's points at α = 1 are member A's own loss and
    at α = 0 member B's — the members table's numbers, from the sweep's member points — on
    the curve and the line alike; its records say so (``alpha_at_a``) and are keyed by the
    convention, so a record of the old one (α = 0 at A, key version 1) is never read."""
    from modeconn.analyses.curves import bend_key, curve_key

    result: StudyResult = battery["result"]
    value = result.analyses["curves"]
    members = result.members
    for (pair, split), g in value.points.groupby(["pair", "split"]):
        a, b = pair.split("–")
        loss_a, loss_b = members.loc[a, f"{split}.loss"], members.loc[b, f"{split}.loss"]
        assert abs(loss_a - loss_b) > 1e-6, "the ends must differ for the check to mean much"
        for path, p in g.groupby("path"):
            by_alpha = p.set_index("alpha")["loss"]
            assert by_alpha[1.0] == pytest.approx(loss_a, abs=1e-6), (pair, split, path)
            assert by_alpha[0.0] == pytest.approx(loss_b, abs=1e-6), (pair, split, path)
    s = battery["study"].section("curves")
    a, b = s.pairs[0]
    ha, hb = members.loc[a, "hash"], members.loc[b, "hash"]
    split_key = result.splits["mnli"]["key"]
    bend = bend_key(s, result.splits[s.split]["key"], battery["study"].eval.dtype)
    key = curve_key(ha, hb, split_key, bend, s.points)
    old = value_key(ha, hb, split_key, settings_fingerprint({"v": 1, "bend": bend, "points": 3}))
    with Store(battery["study"].store_path(), create=False) as store:
        rec = store.get_value("curves", key)
        assert rec is not None and rec["alpha_at_a"] == 1.0
        assert rec["member_a"] == a and rec["alphas"][-1] == 1.0
        assert store.get_value("curves", old) is None and old != key


@pytest.fixture(scope="module")
def rebuilt(battery, tmp_path_factory) -> str:
    """`modeconn report` on a copy of the store file alone, into another folder."""
    alone = tmp_path_factory.mktemp("store-alone")
    shutil.copy(battery["study"].store_path(), alone / "results.sqlite")
    assert main(["report", str(alone / "results.sqlite"), "--out", str(alone / "r")]) == 0
    return (alone / "r" / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("analysis", ALL, ids=IDS)
def test_report_rebuilds_from_the_store_alone(battery, rebuilt, analysis) -> None:
    result = battery["result"]
    for s in analysis.sections(result, result.analyses[analysis.key]):
        assert f">{s.title}<" in rebuilt.replace("&amp;", "&"), s.title


@pytest.fixture(scope="module")
def changed(battery, tmp_path_factory) -> dict[str, Counter]:
    """The same study on a copy of its store, with member seed-01's weights changed."""
    folder = tmp_path_factory.mktemp("changed")
    members = battery["study"].members_dir()
    copy = folder / "members"
    shutil.copytree(members, copy, ignore=shutil.ignore_patterns("checkpoints"))
    target = copy / "seed-01.safetensors"
    state = load_file(str(target))
    name = next(k for k, v in state.items() if v.dtype.kind == "f" and "classifier" in k)
    state[name] = state[name] + 0.01
    save_file(state, str(target))
    (folder / "out").mkdir()
    shutil.copy(battery["study"].store_path(), folder / "out" / "results.sqlite")
    data = json.loads(json.dumps(battery["data"]))
    data.pop("train")
    data["population"] = {"dir": str(copy)}
    data["output_dir"] = str(folder / "out")
    data["analyses"]["trajectory"] = {"checkpoints_dir": str(members / "checkpoints")}
    data["analyses"].pop("spawn")  # trains from the `train` recipe this study has not got
    data["analyses"]["layerwise"]["checkpoints_dir"] = str(members / "checkpoints")
    runner = StudyRunner(load_study(_write_study(folder, data)), progress=False)
    runner.sweep()
    return _measure_each(runner)


@pytest.mark.parametrize("analysis", ALL, ids=IDS)
def test_a_changed_input_never_reuses_a_stale_record(changed, analysis) -> None:
    if analysis.key == "spawn":
        pytest.skip(
            "spawn reads no member: its inputs are the recipe, data and seeds, whose "
            "change CHANGED_SETTINGS checks"
        )
    calls = changed[analysis.key]
    if analysis.needs_weights:
        assert sum(calls[w] for w in WRITES) > 0, "changed weights found old records"
    else:
        assert not any(calls[w] for w in WRITES)


# settings that change what an analysis computes (analyses without such settings are absent)
CHANGED_SETTINGS: dict[str, Any] = {
    "sharpness": dict(ANALYSES["sharpness"], epsilon=2e-5),
    "planes": [dict(ANALYSES["planes"][0], resolution=3)],
    "curvature": dict(ANALYSES["curvature"], points=5),
    "layerwise": dict(ANALYSES["layerwise"], depth=1),
    "mechanisms": dict(ANALYSES["mechanisms"], points=4),
    "curves": dict(ANALYSES["curves"], steps=3),
    "spawn": dict(ANALYSES["spawn"], seed=1),
}


@pytest.fixture(scope="module")
def resettled(battery, tmp_path_factory) -> dict[str, Counter]:
    """The same study and store with the settings of CHANGED_SETTINGS changed."""
    data = json.loads(json.dumps(battery["data"]))
    data["analyses"].update(CHANGED_SETTINGS)
    folder = tmp_path_factory.mktemp("resettled")
    return _measure_each(StudyRunner(load_study(_write_study(folder, data)), progress=False))


@pytest.mark.parametrize("key", sorted(CHANGED_SETTINGS))
def test_changed_settings_never_reuse_a_stale_record(resettled, key) -> None:
    assert registry.get(key).needs_weights
    assert resettled[key]["put_value"] > 0, f"{key}: new settings found old records"


# ------------------------------------------------------------- adding an analysis: a toy one


class ToySection(SectionModel):
    scale: float = Field(default=1.0, gt=0)


class Toy:
    """The worked example: ‖θ‖₂ of each member's head, times a scale."""

    key = "toy"
    section = ToySection
    cites = "a worked example (no paper)"
    summary = "the scaled norm of each member's classifier weights"
    needs_weights = True

    def _key(self, member_hash: str, section: ToySection) -> str:
        return value_key(member_hash, settings_fingerprint(section.model_dump()))

    def measure(self, ctx: MeasureContext) -> None:
        import torch

        section = ctx.study.section(self.key)
        for m in ctx.members:
            key = self._key(m.hash, section)
            if ctx.store.get_value("toy", key) is None:
                state = ctx.population.load(m.id)
                head = [v for k, v in state.items() if k.startswith("classifier")]
                norm = float(torch.sqrt(sum((v.double() ** 2).sum() for v in head)))
                ctx.store.put_value("toy", key, {"value": section.scale * norm})

    def read(self, store: Store, result: StudyResult, earlier: Mapping[str, Any]) -> pd.Series:
        section = result.study.section(self.key)
        found = store.values("toy")
        return pd.Series(
            {m: found[self._key(h, section)]["value"] for m, h in result.members["hash"].items()},
            name="toy",
        )

    def sections(self, result: StudyResult, value: pd.Series) -> list[Section]:
        return [Section("Toy analysis", tables=(("Scaled head norms.", value.to_frame()),))]

    def summary_lines(self, value: pd.Series) -> list[str]:
        return [f"toy: {value.mean():.3f} on average"]


@pytest.fixture
def toy() -> Iterator[Toy]:
    analysis = Toy()
    registry.register(analysis)
    try:
        yield analysis
    finally:
        registry.unregister(analysis.key)


def test_adding_an_analysis_is_one_module_and_one_line(battery, toy, capsys) -> None:
    assert main(["analyses"]) == 0
    assert "analyses.toy" in capsys.readouterr().out
    data = json.loads(json.dumps(battery["data"]))
    data["analyses"] = {"toy": {"scale": 2.0}}
    folder = battery["folder"] / "toy"
    folder.mkdir()
    bad = dict(data, analyses={"toy": {"scale": -1}})
    with pytest.raises(ConfigError, match=r"analyses\.toy\.scale"):
        load_study(_write_study(folder, bad))
    result = StudyRunner(load_study(_write_study(folder, data)), progress=False).run()
    assert result.analyses["toy"].gt(0).all()
    assert "toy:" in result.summary()
    assert result.report is not None and "Toy analysis" in result.report.read_text("utf-8")


def test_unknown_analysis_lists_the_registered_ones(battery) -> None:
    data = dict(battery["data"], analyses={"toy": {}})
    with pytest.raises(ConfigError, match=r"analyses\.toy: unknown analysis.*distances"):
        load_study(_write_study(battery["folder"], data))


def test_each_study_reads_its_own_analyses_from_a_shared_store(battery) -> None:
    # a second study on the same output folder (its store) that asks for no analyses
    data = json.loads(json.dumps(battery["data"]))
    data["analyses"] = {}
    folder = battery["folder"] / "plain"
    folder.mkdir()
    plain = StudyRunner(load_study(_write_study(folder, data)), progress=False).analyze()
    assert list(plain.analyses.values) == ["table_one"]
    assert "distances" in battery["result"].analyses and "sharpness" in battery["result"].analyses


def test_listing_the_analyses_loads_no_torch() -> None:
    code = (
        "import argparse, sys\n"
        "from modeconn.cli import cmd_analyses\n"
        "cmd_analyses(argparse.Namespace(json=False))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for key in ("analyses.distances", "analyses.sharpness", "analyses.planes", "table_one"):
        assert key in run.stdout
