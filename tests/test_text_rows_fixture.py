"""The MNLI text path writes the same store rows as the code it was refactored from.

``tests/fixtures/text_rows.json`` holds every row (path points, member points, unit
markers and the recorded split/grid metadata) of a tiny two-arm text study, generated
before the engine learned other kinds of split and model. The text path must keep
producing them: the same keys, and the same values to float rounding. Regenerate only
on purpose (a change of the row format), with ``MODECONN_REGEN_FIXTURE=1``.

Weight hashes are compared as the member they name, not as hex: the members are trained
here, and another CPU's kernels round the last bit of a weight differently, which changes
every hash (and the order of rows sorted by hash) while the losses agree to 1e-8.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from conftest import tiny_study_dict

from modeconn.config.study import load_study
from modeconn.pipeline import StudyRunner
from modeconn.store import Store

FIXTURE = Path(__file__).parent / "fixtures" / "text_rows.json"
FLOAT_RTOL = 1e-6  # same code path on the same data: values agree to float32 rounding


def _dump(store_path: Path) -> dict[str, Any]:
    with Store(store_path, create=False) as store:
        paths = store.path_points(with_examples=True).drop(columns=["created"])
        members = store.member_points(with_examples=True).drop(columns=["created"])
        units = sorted(
            (u.to_dict() for u in store.done_units()),
            key=lambda u: (u["member_a"], u["member_b"], u["split"]),
        )
        meta = {k: json.loads(store.get_meta(k) or "null") for k in ("splits", "grid")}
    owner = dict(zip(members["member_hash"], members["member_id"], strict=True))
    assert len(set(owner.values())) == len(owner), "one member id under two weight hashes"

    def named(row: dict[str, Any]) -> dict[str, Any]:
        """The row with each weight hash replaced by the member it belongs to."""
        out = dict(row)
        for key, id_key in (
            ("member_hash", "member_id"),
            ("hash_a", "member_a"),
            ("hash_b", "member_b"),
        ):
            if key in out:
                assert owner[out[key]] == out[id_key], f"{key} is not {id_key}'s weights"
                out[key] = f"weights of {out[id_key]}"
        return out

    def records(frame: Any, keys: list[str]) -> list[dict[str, Any]]:
        frame = frame.sort_values(keys).reset_index(drop=True)
        out = []
        for row in frame.to_dict(orient="records"):
            row = {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}
            losses = row.get("example_losses")
            row["example_losses"] = None if losses is None else [float(x) for x in losses]
            out.append(named({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}))
        return out

    return {
        "path_points": records(paths, ["member_a", "member_b", "split", "alpha"]),
        "member_points": records(members, ["member_id", "split"]),
        "units": [named(u) for u in units],
        "meta": meta,
    }


def _assert_same(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys differ"
        for k in want:
            _assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, float | int), f"{where}: {got!r} is not a number"
        np.testing.assert_allclose(got, want, rtol=FLOAT_RTOL, atol=0, err_msg=where)
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_text_study_rows_equal_the_committed_fixture(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    study = tiny_study_dict(tiny_model_dir, data_root, tmp_path / "out")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    runner = StudyRunner(load_study(path), progress=False)
    runner.sweep()
    got = json.loads(json.dumps(_dump(runner.study.store_path())))
    if os.environ.get("MODECONN_REGEN_FIXTURE") == "1":
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(FIXTURE.read_text())
    _assert_same(got, want, "rows")
