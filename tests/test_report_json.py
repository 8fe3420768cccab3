"""`modeconn report STORE --json`: the study's summary as strict JSON for scripts.

On a real small study (the counterfactual-connectivity study of test_mechanisms.py, its
recipe arms named after their recipes as in demo-cues: a cue arm, FT-S and CBFT from it),
the store file copied alone into a read-only folder of its own:

* the output parses with ``json.loads`` (no NaN literal), keys in the documented order,
  the same bytes twice, nothing written beside the store;
* its basins and correlations are what ``modeconn report`` prints for the same store;
* the mechanisms table comes as records with method, set, accuracy, low and high;
* a missing store is one named error line and exit 2, with nothing on stdout.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_mechanisms import _data, _write

from modeconn.analyses.base import jsonable, records, summary_json
from modeconn.cli import main
from modeconn.config.study import load_study
from modeconn.pipeline import StudyRunner
from modeconn.report.json import FORMAT, VERSION, dumps

TOP = [
    "format",
    "version",
    "study",
    "clustering",
    "basins",
    "arms",
    "correlations",
    "members",
    "analyses",
    "notes",
    "summary",
    "report",
]
RECORD = ["method", "set", "accuracy", "low", "high"]


def _strict(text: str) -> Any:
    """json.loads that refuses NaN / Infinity literals (Python's json accepts them)."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in the output: not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("json-study")
    data = _data(tmp)
    for arm in data["train"]["arms"]:  # the arms named by their recipes, as in demo-cues
        arm["name"] = {"ft": "ft-s", "cb": "cbft"}.get(arm["name"], arm["name"])
    runner = StudyRunner(load_study(_write(tmp, data)), progress=False)
    runner.sweep()
    runner.measure()
    result = runner.analyze()  # (no HTML report: `modeconn report` below writes one)
    # the store file alone, in a folder nobody may write: what a colleague sends
    sent = tmp_path_factory.mktemp("sent")
    shutil.copy(result.study.store_path(), sent / "results.sqlite")
    os.chmod(sent / "results.sqlite", stat.S_IRUSR | stat.S_IRGRP)
    os.chmod(sent, stat.S_IRUSR | stat.S_IXUSR)
    yield {"result": result, "sent": sent, "store": sent / "results.sqlite"}
    os.chmod(sent, stat.S_IRWXU)


def _report(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def printed(study, tmp_path_factory) -> dict[str, Any]:
    """`modeconn report --json` twice (the second with --out, given the folder), and the
    plain `modeconn report` of the same store."""
    capture = pytest.MonkeyPatch()  # capsys is per test; this fixture is per module
    outs = []
    html = tmp_path_factory.mktemp("html")
    for argv in (
        [str(study["store"]), "--json"],
        [str(study["sent"]), "--json", "--out", str(html / "json")],
        [str(study["store"]), "--out", str(html / "text")],
    ):
        before = sorted(p.name for p in study["sent"].iterdir())
        buf, err = io.StringIO(), io.StringIO()
        capture.setattr(sys, "stdout", buf)
        capture.setattr(sys, "stderr", err)
        try:
            code = main(["report", *argv])
        finally:
            capture.undo()
        assert code == 0, err.getvalue()
        assert sorted(p.name for p in study["sent"].iterdir()) == before  # nothing written
        outs.append(buf.getvalue())
    return {"json": outs[0], "again": outs[1], "text": outs[2], "html": html / "json"}


def test_the_output_is_strict_json_in_the_documented_order(printed) -> None:
    doc = _strict(printed["json"])
    assert list(doc) == TOP
    assert doc["format"] == FORMAT and doc["version"] == VERSION
    assert doc["report"] is None  # --json alone writes no HTML
    assert printed["json"].isascii()
    # the same bytes from the same store; with --out, the report is written and named
    again = _strict(printed["again"])
    assert again["report"] == str(printed["html"] / "report.html")
    assert Path(again["report"]).is_file()
    assert dumps({**again, "report": None}) + "\n" == printed["json"]


def test_basins_and_correlations_are_what_report_prints(study, printed) -> None:
    doc = _strict(printed["json"])
    text = printed["text"]
    # the summary block `modeconn report` prints, line for line
    head = text.split("\n\nbasins:\n", 1)[0].splitlines()
    assert doc["summary"] == head
    # the basins table it prints, rebuilt from the JSON records with the same options
    table = pd.DataFrame(doc["basins"]).set_index("basin").drop(columns="members")
    table = table.astype({c: float for c in table.columns if c != "size"})
    with pd.option_context("display.width", 120, "display.precision", 3):
        rebuilt = table.to_string()
    shown = text.split("\n\nbasins:\n", 1)[1].split("\n\nreport:", 1)[0]
    assert [ln.split() for ln in shown.splitlines()[2:]] == [
        ln.split() for ln in rebuilt.splitlines()[2:]
    ]
    # each correlation line: the same r, ρ and intervals (printed to 3 decimals)
    lines = [ln for ln in text.splitlines() if ln.startswith("score ↔ ")]
    assert len(lines) == len(doc["correlations"]) >= 1
    for line, c in zip(lines, doc["correlations"], strict=True):
        assert line.startswith(f"score ↔ {c['split']} {c['metric']}: ")
        numbers = [float(x) for x in re.findall(r"[+-]\d+\.\d{3}", line)]
        want = [c[k] for k in ("pearson_r", "pearson_lo", "pearson_hi")]
        want += [c[k] for k in ("spearman_rho", "spearman_lo", "spearman_hi")]
        assert numbers == [round(w, 3) + 0.0 for w in want]
    # the arms it prints per basin are the JSON's members per basin
    arm_of = {m["id"]: m["arm"] for m in doc["members"]}
    for line in (ln.strip() for ln in text.splitlines() if ln.startswith("  arm ")):
        arm, where = line.removeprefix("arm ").split(": ", 1)
        for n, b in re.findall(r"(\d+) in basin (\d+)", where):
            members = doc["basins"][int(b)]["members"]
            assert sum(arm_of[m] == arm for m in members) == int(n)
    # and the numbers are the result's own, not rounded
    result = study["result"]
    for rec in doc["basins"]:
        ids = result.members.index[result.members["basin"] == rec["basin"]]
        assert rec["members"] == list(ids) and rec["size"] == len(ids)
    for c, (_, row) in zip(doc["correlations"], result.correlations.iterrows(), strict=True):
        assert c["pearson_r"] == pytest.approx(row["pearson_r"], abs=0, rel=1e-15)
    assert doc["clustering"]["ties"] == result.fit.ties
    assert doc["arms"]["adjusted_rand"] == pytest.approx(result.recovery, rel=1e-15)


def test_mechanisms_table_comes_as_records(study, printed) -> None:
    doc = _strict(printed["json"])
    mech = doc["analyses"]["mechanisms"]
    table = mech["table"]
    assert all(list(r)[:5] == RECORD for r in table)
    assert {r["method"] for r in table} == {"cue", "ft-s", "cbft"}
    assert {r["set"] for r in table} == {"clean", "cue", "random_cue", "random_image"}
    assert len(table) == 3 * 4
    want = study["result"].analyses["mechanisms"]["table"]
    for rec, (_, row) in zip(table, want.iterrows(), strict=True):
        assert (rec["method"], rec["set"]) == (row["method"], row["set"])
        for key in ("accuracy", "low", "high"):  # NaN (one member) comes as null
            assert (rec[key] is None) if math.isnan(row[key]) else rec[key] == row[key]
    # every tuned member's path back to its cue model, on every set
    assert {(p["member"], p["source"]) for p in mech["paths"]} == {
        ("ft-s-00", "cue-00"), ("ft-s-01", "cue-01"), ("cbft-00", "cue-00"), ("cbft-01", "cue-01")
    }  # fmt: skip
    assert {m["id"] for m in mech["members"]} == set(study["result"].members.index)
    # Table 1 (always on) by its own summary_json
    assert list(doc["analyses"]) == ["table_one", "mechanisms"]
    assert {"cluster_stats", "regressions", "predictors"} == set(doc["analyses"]["table_one"])


def test_a_missing_store_is_one_named_line_exit_2(tmp_path, capsys) -> None:
    code, out, err = _report(capsys, str(tmp_path / "nowhere"), "--json")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modeconn: error: no results store at ")
    assert str(tmp_path / "nowhere") in lines[0]


# ------------------------------------------------------------------ the pieces, on literals


def test_jsonable_writes_nan_and_inf_as_null_and_keeps_order() -> None:
    frame = pd.DataFrame({"b": [1.0, np.nan], "a": [np.inf, np.int64(3)]})
    assert records(frame) == [{"b": 1.0, "a": None}, {"b": None, "a": 3.0}]
    value = {"z": np.float32(0.5), "y": (np.bool_(True), None), 3: np.arange(2)}
    assert jsonable(value) == {"z": 0.5, "y": [True, None], "3": [0, 1]}
    assert dumps(jsonable({"r": float("nan")})) == '{\n  "r": null\n}'
    with pytest.raises(ValueError):
        dumps({"r": float("nan")})  # a NaN left over is refused, never written


def test_an_analysis_without_summary_json_gets_the_generic_default() -> None:
    @dataclasses.dataclass(frozen=True)
    class Value:
        table: pd.DataFrame
        per_member: pd.Series
        notes: tuple[str, ...] = ()

    class New:  # an analysis that defines no summary_json (curves, spawn, …)
        key = "new"

    value = Value(
        pd.DataFrame({"pair": ["a–b"], "barrier": [np.nan]}),
        pd.Series([0.25, 1.0], index=["a", "b"]),
    )
    out = summary_json(New(), value)
    assert out == {
        "table": [{"pair": "a–b", "barrier": None}],
        "per_member": {"a": 0.25, "b": 1.0},
        "notes": [],
    }
    assert summary_json(New(), None) == {}
    assert summary_json(New(), pd.Series([1.5], index=["m"])) == {"m": 1.5}
    assert summary_json(New(), [1, 2]) == {"value": [1, 2]}
    json.dumps(out, allow_nan=False)


# ------------------------------------------------------------------ a member's own init_seed


def test_a_members_init_seed_is_in_the_members_table_and_the_json(tmp_path, capsys) -> None:
    """Members of a `vary: init` arm carry the seed their whole model was drawn from (their
    sidecar's ``init_seed``) into the report's members table and ``report --json``; members
    that share the study's initialisation, and every member of a store written before the
    field was recorded, carry null."""
    from test_vision_study import _write as write_study
    from test_vision_study import tiny_digits_study

    from modeconn.results import member_table
    from modeconn.store import Store

    data = tiny_digits_study(tmp_path / "out")
    data["train"]["examples"] = 128
    data["train"]["arms"] = [
        {"name": "scratch", "members": 2, "data": "train_clean", "vary": "init", "seed_offset": 7},
        {"name": "seed", "members": 1, "data": "train_clean", "vary": "data"},
    ]
    runner = StudyRunner(load_study(write_study(data, tmp_path)), progress=False)
    result = runner.run()
    store = result.study.store_path()
    want = {"scratch-00": 7, "scratch-01": 8, "seed-00": None}  # seed_offset 7: seeds 7, 8

    code, out, err = _report(capsys, str(store), "--json", "--out", str(tmp_path / "html"))
    assert code == 0, err
    doc = _strict(out)
    assert {m["id"]: m["init_seed"] for m in doc["members"]} == want
    first = doc["members"][0]
    assert list(first).index("init_seed") == list(first).index("data_seed") + 1
    html = (tmp_path / "html" / "report.html").read_text(encoding="utf-8")
    members_table = html[html.index("Members.") :]
    assert "<th>init_seed</th>" in members_table

    # a store written before init_seed was recorded: the column is there, null throughout
    with Store(store) as s:
        old = [{k: v for k, v in m.items() if k != "init_seed"} for m in s.population()]
        s.set_meta("members", json.dumps(old))
        table = member_table(s)
    assert list(table["init_seed"]) == [None, None, None]
    code, out, err = _report(capsys, str(store), "--json")
    assert code == 0, err
    assert [m["init_seed"] for m in _strict(out)["members"]] == [None, None, None]
