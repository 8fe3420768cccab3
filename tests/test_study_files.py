"""Built-in study files, `extends`, and the `analyses` section's checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modeconn.config.study import builtin_studies, builtin_study_path, load_study
from modeconn.errors import ConfigError


def test_every_builtin_study_parses_and_the_variants_share_the_demo_store() -> None:
    names = builtin_studies()
    assert "demo-mnli" in names
    base = load_study(builtin_study_path("demo-mnli"))
    variants = [n for n in names if n.startswith("demo-mnli-")]
    assert {"demo-mnli-sharpness", "demo-mnli-plane", "demo-mnli-training"} <= set(variants)
    reports = {base.report_dir}
    for name in variants:
        s = load_study(builtin_study_path(name))
        # same name and folder: the variants reuse demo-mnli's members and rows
        assert (s.name, s.output_dir) == (base.name, base.output_dir)
        assert s.report_dir not in reports  # but each keeps its own report
        reports.add(s.report_dir)


def _write(folder: Path, name: str, data: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_extends_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "child.yaml",
        {
            "extends": "demo-mnli",
            "basins": {"n_basins": 3},  # merged into the base's basins mapping
            "paths": {"splits": ["mnli"]},  # a list: replaces the base's
        },
    )
    s = load_study(path)
    base = load_study(builtin_study_path("demo-mnli"))
    assert s.basins.n_basins == 3
    assert s.basins.split == base.basins.split and s.basins.ood == base.basins.ood
    assert s.paths.splits == ["mnli"]
    assert s.paths.points == base.paths.points


def test_extends_a_local_file_and_refuses_cycles(tmp_path: Path) -> None:
    base = yaml.safe_load(builtin_study_path("demo-mnli").read_text())
    _write(tmp_path, "base.yaml", base)
    child = _write(tmp_path, "child.yaml", {"extends": "base.yaml", "name": "child"})
    assert load_study(child).name == "child"
    _write(tmp_path, "a.yaml", {"extends": "b.yaml"})
    _write(tmp_path, "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_study(tmp_path / "a.yaml")
    bad = _write(tmp_path, "bad.yaml", {"extends": "no-such-study"})
    with pytest.raises(ConfigError, match=r"no built-in study named 'no-such-study'.*demo-mnli"):
        load_study(bad)


@pytest.mark.parametrize(
    ("analyses", "message"),
    [
        ({"sharpness": {"split": "nope"}}, r"analyses\.sharpness\.split names split 'nope'"),
        (
            {"planes": [{"members": ["a", "b", "c"], "split": "hans_train"}]},
            r"analyses.planes\[0\].split 'hans_train' must be one of paths.splits",
        ),
        ({"trajectory": {}}, "analyses.trajectory needs checkpoints"),
        ({"distance_splits": ["hans_lo"]}, "distance_splits names 'hans_lo'"),
        ({"distances": ["cosine"]}, "analyses.distances.0"),
        ({"uncertainty": {"samples": 1}}, "analyses.uncertainty.samples"),
    ],
)
def test_bad_analyses_are_named(tmp_path: Path, analyses: dict, message: str) -> None:
    path = _write(tmp_path, "s.yaml", {"extends": "demo-mnli", "analyses": analyses})
    with pytest.raises(ConfigError, match=message):
        load_study(path)
