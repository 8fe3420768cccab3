"""The command line: bad input gives one line naming the thing and the fix, exit ≠ 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from modeconn.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("modeconn: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _edit(study: Path, change) -> Path:
    data = yaml.safe_load(study.read_text())
    change(data)
    study.write_text(yaml.safe_dump(data))
    return study


def test_bad_study_field_is_named(tiny_study: Path, capsys) -> None:
    _edit(tiny_study, lambda d: d["paths"].update(points="eleven"))
    code, _, err = _run(capsys, "run", str(tiny_study), "--quiet")
    assert code == 2
    line = _error_line(err)
    assert "paths.points" in line and "integer" in line and "'eleven'" in line


def test_unknown_field_is_named(tiny_study: Path, capsys) -> None:
    _edit(tiny_study, lambda d: d["basins"].update(n_basin=3))
    code, _, err = _run(capsys, "run", str(tiny_study), "--quiet")
    assert code == 2 and "basins.n_basin: unknown field" in _error_line(err)


def test_unknown_split_is_named(tiny_study: Path, capsys) -> None:
    _edit(tiny_study, lambda d: d["paths"].update(splits=["mnli", "hans_xx"]))
    code, _, err = _run(capsys, "run", str(tiny_study), "--quiet")
    line = _error_line(err)
    assert code == 2 and "split 'hans_xx'" in line and "declare it or fix the name" in line


def _population_study(tiny_study: Path, members: Path) -> Path:
    def change(d):
        d.pop("train")
        d["population"] = {"dir": str(members)}

    return _edit(tiny_study, change)


@pytest.fixture
def members(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """Three copies of the tiny model as safetensors members."""
    from modeconn.models.hf import load_classifier

    model = load_classifier(tiny_model_dir, ["entailment", "neutral", "contradiction"])
    out = tmp_path / "members"
    out.mkdir()
    for i in range(3):
        state = {
            k: v + 0.01 * i if v.is_floating_point() else v for k, v in model.state_dict().items()
        }
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"m{i}.safetensors"))
    return out


def test_mismatched_architecture_is_named(tiny_study, members, capsys) -> None:
    state = load_file(str(members / "m2.safetensors"))
    state["classifier.weight"] = torch.zeros(2, 16)
    state["classifier.bias"] = torch.zeros(2)
    save_file(state, str(members / "m2.safetensors"))
    code, _, err = _run(capsys, "run", str(_population_study(tiny_study, members)), "--quiet")
    line = _error_line(err)
    assert code == 2 and "'m2'" in line and "classifier.bias" in line and "(2,)" in line


def test_missing_key_is_named(tiny_study, members, capsys) -> None:
    state = load_file(str(members / "m1.safetensors"))
    del state["bert.pooler.dense.weight"]
    save_file(state, str(members / "m1.safetensors"))
    code, _, err = _run(capsys, "run", str(_population_study(tiny_study, members)), "--quiet")
    line = _error_line(err)
    assert code == 2 and "'m1'" in line and "bert.pooler.dense.weight" in line


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_member_is_refused_without_running(tiny_study, members, capsys) -> None:
    marker = members.parent / "pwned"
    torch.save({"weight": _Evil(marker)}, members / "evil.pt")
    code, _, err = _run(capsys, "run", str(_population_study(tiny_study, members)), "--quiet")
    line = _error_line(err)
    assert code == 2 and "evil" in line and "safetensors" in line
    assert not marker.exists()


def test_status_and_report_of_a_missing_store(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "status", str(tmp_path / "none.sqlite"))
    assert code == 2 and "no results store" in _error_line(err)


def test_foreign_store_is_refused_and_untouched(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "results.sqlite"
    foreign.write_text("not a database\n")
    code, _, err = _run(capsys, "report", str(foreign))
    assert code == 2 and "results.sqlite" in _error_line(err)
    assert foreign.read_text() == "not a database\n"


def test_end_to_end_in_a_real_process(tiny_study: Path) -> None:
    """`modeconn run`, then `status`, `report` and `export` on its store."""
    cmd = [sys.executable, "-m", "modeconn.cli"]
    run = subprocess.run([*cmd, "run", str(tiny_study), "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "basins:" in run.stdout and "report:" in run.stdout
    out = tiny_study.parent / "out"
    status = subprocess.run([*cmd, "status", str(out)], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "path units 6/6" in status.stdout and "integrity: ok" in status.stdout
    report = subprocess.run([*cmd, "report", str(out)], capture_output=True, text=True)
    assert report.returncode == 0 and (out / "report" / "report.html").is_file()
    export = subprocess.run(
        [*cmd, "export", str(out), "--out", str(out / "csv")], capture_output=True, text=True
    )
    assert export.returncode == 0, export.stderr
    assert sorted(p.name for p in (out / "csv").iterdir()) == [
        "analysis_values.csv",
        "member_points.csv",
        "path_points.csv",
    ]


def test_a_bad_split_fails_before_any_training(tiny_study: Path, capsys) -> None:
    _edit(tiny_study, lambda d: d["splits"]["hans_sub"].update(text_a="no_such_column"))
    code, _, err = _run(capsys, "run", str(tiny_study), "--quiet")
    assert code == 2 and "no_such_column" in _error_line(err)
    assert not (tiny_study.parent / "out" / "members").exists()
