"""Loss planes: the basis against numpy, the grid through the engine, the figure."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from tolerances import ATOL, RTOL

from modeconn import figures
from modeconn.data.text import SplitSpec, prepare_split
from modeconn.engine.evaluate import Evaluator
from modeconn.engine.planes import (
    PlaneResult,
    PlaneSpec,
    evaluate_plane,
    plane_coordinates,
    plane_grid,
)
from modeconn.errors import ConfigError, DataError, ModeconnError, PopulationError
from modeconn.models.hf import classifier_skeleton, load_tokenizer

LABELS = ["entailment", "neutral", "contradiction"]
# float32 weights: θ0 + 1·u rounds once per tensor entry (relative 2^-24 ≈ 6e-8 of a
# weight), which moves a mean cross-entropy near ln 3 by far less than this.
FLOAT32_LOSS_ATOL = 1e-5
# float32 tensors against a float64 numpy reference: a few roundings of 2^-24 each.
FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine a second thread mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _numpy_plane(p0, p1, p2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference: every entry flattened into one float64 vector, one Gram–Schmidt step."""
    a, b, c = (np.concatenate([t.double().numpy().ravel() for t in p]) for p in (p0, p1, p2))
    u = b - a
    d = c - a
    x2 = d @ u / (u @ u)
    perp = d - x2 * u
    v = perp * np.linalg.norm(u) / np.linalg.norm(perp)
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [x2, np.linalg.norm(perp) / np.linalg.norm(u)]])
    return u, v, xy


def _flat(tensors) -> np.ndarray:
    return np.concatenate([t.double().numpy().ravel() for t in tensors])


# --- plane_coordinates ---------------------------------------------------------------------


def test_hand_built_plane_in_2d() -> None:
    p0 = [torch.tensor([0.0, 0.0], dtype=torch.float64)]
    p1 = [torch.tensor([2.0, 0.0], dtype=torch.float64)]
    p2 = [torch.tensor([1.0, 3.0], dtype=torch.float64)]
    basis = plane_coordinates(p0, p1, p2)
    # u = (2, 0), ‖u‖ = 2; d = θ2 − θ0 = (1, 3); ⟨d, u⟩ = 2 → x2 = 2 / 4 = 0.5
    # v⊥ = (1, 3) − 0.5·(2, 0) = (0, 3), ‖v⊥‖ = 3 → y2 = 3 / 2 = 1.5; v = (0, 3)·2/3 = (0, 2)
    assert basis.u[0].tolist() == [2.0, 0.0]
    assert basis.v[0].tolist() == [0.0, 2.0]
    assert basis.model_xy.tolist() == [[0.0, 0.0], [1.0, 0.0], [0.5, 1.5]]
    assert basis.scale == 2.0


def test_hand_built_plane_in_3d_across_two_tensors() -> None:
    # the vector (1, 1, 1) held as a 2-entry and a 1-entry tensor: Gram–Schmidt spans both
    p0 = [torch.tensor([1.0, 1.0]), torch.tensor([1.0])]
    p1 = [torch.tensor([4.0, 5.0]), torch.tensor([1.0])]  # u = (3, 4, 0), ‖u‖ = 5
    p2 = [torch.tensor([-5.0, -7.0]), torch.tensor([6.0])]  # d = (−6, −8, 5) = −2·u + (0, 0, 5)
    basis = plane_coordinates(p0, p1, p2)
    # ⟨d, u⟩ = −18 − 32 + 0 = −50 → x2 = −50 / 25 = −2; v⊥ = (0, 0, 5), ‖v⊥‖ = 5 → y2 = 1
    # v = v⊥ · ‖u‖ / ‖v⊥‖ = (0, 0, 5) (already as long as u)
    assert basis.model_xy.tolist() == [[0.0, 0.0], [1.0, 0.0], [-2.0, 1.0]]
    assert [t.tolist() for t in basis.u] == [[3.0, 4.0], [0.0]]
    assert [t.tolist() for t in basis.v] == [[0.0, 0.0], [5.0]]
    assert basis.scale == 5.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_plane_matches_numpy(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (3, 2, 4), (1,)]
    p0, p1, p2 = ([torch.randn(s, generator=gen, dtype=dtype) for s in shapes] for _ in range(3))
    basis = plane_coordinates(p0, p1, p2)
    u, v, xy = _numpy_plane(p0, p1, p2)
    assert [t.dtype for t in basis.u + basis.v] == [dtype] * 8  # the points' dtype
    rtol, atol = (RTOL, ATOL) if dtype == torch.float64 else (FLOAT32_RTOL, FLOAT32_ATOL)
    np.testing.assert_allclose(_flat(basis.u), u, rtol=rtol, atol=atol)
    np.testing.assert_allclose(_flat(basis.v), v, rtol=rtol, atol=atol)
    # coordinates are float64 sums whatever the dtype: only the inputs' rounding differs
    np.testing.assert_allclose(basis.model_xy, xy, rtol=RTOL, atol=ATOL)
    assert basis.scale == pytest.approx(np.linalg.norm(u), rel=RTOL)
    # the basis is orthogonal with equal lengths, and θ0 + x2·u + y2·v is θ2 again
    fu, fv = _flat(basis.u), _flat(basis.v)
    assert fu @ fv == pytest.approx(0.0, abs=1e-9 if dtype == torch.float64 else 1e-4)
    assert np.linalg.norm(fv) == pytest.approx(np.linalg.norm(fu), rel=rtol)
    x2, y2 = basis.model_xy[2]
    np.testing.assert_allclose(_flat(p0) + x2 * fu + y2 * fv, _flat(p2), rtol=rtol, atol=atol)


def test_identical_members_span_no_plane() -> None:
    p = [torch.ones(3), torch.zeros(2)]
    other = [torch.tensor([1.0, 2.0, 3.0]), torch.zeros(2)]
    with pytest.raises(ConfigError, match=r"'a' and 'b' have the same weights.*choose two"):
        plane_coordinates(p, [t.clone() for t in p], other, members=("a", "b", "c"))


def test_collinear_third_member_is_named() -> None:
    p0 = [torch.zeros(3, dtype=torch.float64)]
    p1 = [torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)]
    p2 = [torch.tensor([2.0, 4.0, 4.0], dtype=torch.float64)]  # 2·u: on the line θ0θ1
    with pytest.raises(ConfigError, match=r"'c' lies on the line through 'a' and 'b'.*x = 2"):
        plane_coordinates(p0, p1, p2, members=("a", "b", "c"))


def test_points_of_different_shapes_are_named() -> None:
    p = [torch.zeros(4), torch.zeros(2)]
    with pytest.raises(PopulationError, match=r"'c' tensor 1 has shape \(3,\).*'a' has \(2,\)"):
        plane_coordinates(p, p, [torch.zeros(4), torch.zeros(3)], members=("a", "b", "c"))
    with pytest.raises(PopulationError, match=r"'b' has 1 tensors.*'a' has 2.*as_point"):
        plane_coordinates(p, p[:1], p, members=("a", "b", "c"))


def test_non_finite_weights_are_refused() -> None:
    p0, p1 = [torch.zeros(2)], [torch.ones(2)]
    with pytest.raises(ConfigError, match="not all finite"):
        plane_coordinates(p0, p1, [torch.tensor([0.0, float("nan")])])


# --- the grid ------------------------------------------------------------------------------


def test_grid_covers_the_members_with_an_equal_border() -> None:
    xs, ys = plane_grid([[0, 0], [1, 0], [-0.5, 2.0]], resolution=5, margin=0.25)
    # box [−0.5, 1] × [0, 2]; larger side 2; border 0.25·2 = 0.5 on every side:
    # x from −1 to 1.5 in steps of 2.5/4 = 0.625, y from −0.5 to 2.5 in steps of 0.75
    assert xs == (-1.0, -0.375, 0.25, 0.875, 1.5)
    assert ys == (-0.5, 0.25, 1.0, 1.75, 2.5)


@pytest.mark.parametrize("resolution", [1, 0, 2.5, True])
def test_resolution_below_two_is_refused(resolution) -> None:
    with pytest.raises(ConfigError, match="resolution must be"):
        plane_grid([[0, 0], [1, 0], [0.5, 1]], resolution=resolution)


def test_spec_checks_members_and_axes() -> None:
    with pytest.raises(ConfigError, match="3 different members"):
        PlaneSpec(("a", "a", "b"))
    with pytest.raises(ConfigError, match="exactly 3 member ids"):
        PlaneSpec(("a", "b"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="strictly increasing"):
        PlaneSpec(("a", "b", "c"), x=(0.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="margin"):
        PlaneSpec(("a", "b", "c"), margin=-0.1)


# --- through the engine --------------------------------------------------------------------


def _perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (v + 0.05 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, data_root: Path):
    """An evaluator on the tiny BERT, three perturbed members, and 24 real MNLI rows."""
    spec = SplitSpec(
        "mnli",
        data_root / "mnli/dev_matched.tsv",
        "premise",
        "gold_label",
        "hypothesis",
        sample_size=24,
        sample_seed=5,
    )
    split = prepare_split(spec, load_tokenizer(tiny_model_dir), LABELS, max_length=64)
    model = classifier_skeleton(tiny_model_dir, LABELS)
    ev = Evaluator(copy.deepcopy(model))  # the evaluator owns (and overwrites) its model
    points = [ev.as_point(_perturbed(model, s), name=f"m{s}") for s in (1, 2, 3)]
    return ev, points, split


def test_set_combination_writes_the_numpy_combination(engine) -> None:
    ev, _, _ = engine
    gen = torch.Generator().manual_seed(7)
    origin, u, v = ([torch.randn(b.shape, generator=gen) for b in ev._buffers] for _ in range(3))
    for x, y in [(0.3, -1.7), (-0.5, 0.0), (2.0, 0.25)]:
        ev.set_combination(origin, u, v, x, y)
        for key, o, du, dv in zip(ev.keys, origin, u, v, strict=True):
            want = o.double().numpy() + x * du.double().numpy() + y * dv.double().numpy()
            np.testing.assert_allclose(
                ev.point[key].numpy(), want, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL, err_msg=key
            )
    ev.set_combination(origin, u, v, 0.0, 0.0)  # the origin itself is written exactly
    assert all(torch.equal(ev.point[k], o) for k, o in zip(ev.keys, origin, strict=True))
    with pytest.raises(PopulationError, match=r"needs .* tensors .*got"):
        ev.set_combination(origin[:-1], u, v, 1.0, 1.0)


def test_grid_points_at_the_members_reproduce_their_losses(engine) -> None:
    ev, points, split = engine
    xy = plane_coordinates(*points).model_xy
    # put the three members on grid points: x ∈ {0, x2, 1}, y ∈ {0, y2}
    xs, ys = sorted({0.0, 1.0, float(xy[2, 0])}), sorted({0.0, float(xy[2, 1])})
    before = ev.counts[("plane", split.name)]
    plane = evaluate_plane(ev, points, split, members=("m1", "m2", "m3"), xs=xs, ys=ys)
    assert ev.counts[("plane", split.name)] - before == len(xs) * len(ys)  # every point ran
    assert plane.loss.shape == (len(ys), len(xs)) == plane.metrics["accuracy"].shape
    for k in range(3):
        i, j = xs.index(float(xy[k, 0])), ys.index(float(xy[k, 1]))
        own = ev.evaluate_member(points[k], split)
        assert plane.loss[j, i] == pytest.approx(own.loss, abs=FLOAT32_LOSS_ATOL)
        assert plane.metrics["accuracy"][j, i] == own.metrics["accuracy"]
    # θ0 is written exactly (a copy), so its loss is bit-identical
    assert plane.loss[ys.index(0.0), xs.index(0.0)] == ev.evaluate_member(points[0], split).loss
    assert plane.split == split.key and plane.sample_size == 24 and plane.sample_seed == 5
    np.testing.assert_array_equal(plane.model_xy, xy)


def test_evaluate_plane_defaults_and_record_round_trip(engine) -> None:
    ev, points, split = engine
    plane = evaluate_plane(ev, points, split, members=("m1", "m2", "m3"), resolution=3)
    assert plane.spec.resolution == 3 and len(plane.xs) == len(plane.ys) == 3
    assert (
        plane.xs[0] < 0 < 1 < plane.xs[-1] and plane.ys[0] < 0 < plane.model_xy[2, 1] < plane.ys[-1]
    )
    record = json.loads(json.dumps(plane.to_dict()))  # JSON-able, as the store keeps it
    back = PlaneResult.from_dict(record)
    assert back.to_dict() == plane.to_dict()
    assert back.members == ("m1", "m2", "m3") and back.spec == plane.spec
    np.testing.assert_array_equal(back.loss, plane.loss)
    frame = plane.to_frame()
    assert list(frame.columns) == ["x", "y", "loss", "accuracy"] and len(frame) == 9
    row = frame[(frame["x"] == plane.xs[2]) & (frame["y"] == plane.ys[1])]
    assert float(row["loss"].iloc[0]) == plane.loss[1, 2]  # loss[j, i] is at (xs[i], ys[j])
    with pytest.raises(ValueError, match="read-only"):
        plane.loss[0, 0] = 0.0


def test_bad_inputs_to_evaluate_plane(engine) -> None:
    ev, points, split = engine
    with pytest.raises(ConfigError, match=r"same weights.*choose two different members"):
        evaluate_plane(ev, [points[0], points[0], points[1]], split)
    with pytest.raises(ConfigError, match="resolution must be ≥ 2"):
        evaluate_plane(ev, points, split, resolution=1)
    short = [t[..., :1] if t.ndim else t for t in points[2]]
    with pytest.raises(PopulationError, match=r"member 'c' key '.*' is \(.*engine holds"):
        evaluate_plane(ev, [points[0], points[1], short], split, members=("a", "b", "c"))
    with pytest.raises(DataError, match=r"missing keys.*PlaneResult.to_dict"):
        PlaneResult.from_dict({"split": "x"})
    record = evaluate_plane(ev, points, split, resolution=2).to_dict()
    record["loss"] = [[0.0]]
    with pytest.raises(DataError, match=r"loss grid has shape \(1, 1\); expected \(2, 2\)"):
        PlaneResult.from_dict(record)
    assert issubclass(ConfigError, ModeconnError) and issubclass(PopulationError, ModeconnError)


# --- the figure ----------------------------------------------------------------------------


def _synthetic_plane() -> PlaneResult:
    """A bowl around each member on a 21 × 21 grid, with a ridge between θ2 and the rest."""
    spec = PlaneSpec(("seed-1", "seed-2", "aug-7"), resolution=21, margin=0.3)
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [0.3, 1.1]])
    spec = spec.resolve(xy)
    gx, gy = np.meshgrid(spec.x, spec.y)  # (ny, nx)
    dist = np.stack([np.hypot(gx - x, gy - y) for x, y in xy])  # (3, ny, nx)
    loss = 0.4 + 2.0 * np.minimum(dist[:2].min(axis=0), 0.55 + dist[2]) ** 2
    loss = np.minimum(loss, 0.4 + 2.0 * dist[2] ** 2)
    return PlaneResult(spec, "mnli#abc", 0, 64, loss, {"accuracy": 1 - loss / 4}, xy, 3.2)


def test_loss_plane_draws_contours_members_and_unit(tmp_path: Path) -> None:
    plane = _synthetic_plane()
    fig = figures.loss_plane(plane)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    for member in plane.members:
        assert sum(member in t for t in texts) == 1  # each member labelled once
    assert {t.get_gid() for t in ax.texts} == {f"member:{m}" for m in plane.members}
    assert ax.get_aspect() == 1.0  # equal units: true distances
    assert "‖θ₀θ₁‖" in ax.get_xlabel() and "‖θ₀θ₁‖" in ax.get_ylabel()
    assert ax.get_xlim() == (plane.xs[0], plane.xs[-1])
    assert sorted(line.get_gid() for line in ax.lines) == [
        "path:seed-1|aug-7",
        "path:seed-1|seed-2",
        "path:seed-2|aug-7",
    ]
    # "auto" levels: 0 and then 1 %, …, 100 % of the range above the minimum, geometric
    lo, hi = plane.loss.min(), plane.loss.max()
    want = lo + (hi - lo) * np.concatenate([[0.0], np.geomspace(0.01, 1.0, 10)])
    filled = ax.collections[0]
    np.testing.assert_allclose(filled.levels, want, rtol=RTOL)  # type: ignore[attr-defined]
    out = figures.save(fig, tmp_path / "plane.png")
    assert out.stat().st_size > 10_000


def test_loss_plane_other_metric_labels_and_records() -> None:
    plane = _synthetic_plane()
    fig = figures.loss_plane(plane.to_dict(), metric="accuracy", labels=["A", "B", "C"], levels=4)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["A", "B", "C"]
    acc = plane.metrics["accuracy"]
    np.testing.assert_allclose(
        ax.collections[0].levels,  # type: ignore[attr-defined]
        np.linspace(acc.min(), acc.max(), 5),  # 4 equal bands
    )
    assert ax.collections[0].extend == "neither"  # type: ignore[attr-defined]
    # explicit levels may leave values outside: those are drawn in the end colours
    inside = figures.loss_plane(plane, levels=[0.5, 1.0, 1.5]).axes[0].collections[0]
    assert inside.extend == "both"  # type: ignore[attr-defined]
    with pytest.raises(DataError, match=r"no metric 'f1'.*'accuracy'"):
        figures.loss_plane(plane, metric="f1")
    with pytest.raises(ConfigError, match="levels"):
        figures.loss_plane(plane, levels=[1.0, 0.5])
    with pytest.raises(ConfigError, match="labels must be 3"):
        figures.loss_plane(plane, labels=["A"])
