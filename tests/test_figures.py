"""Figures draw what the results say: right lines, order, fit, labels; bad input is named."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure

from modeconn import figures
from modeconn.errors import ConfigError, DataError

MEMBERS = [f"m{i}" for i in range(6)]
BASINS = pd.Series([0, 0, 0, 1, 1, 1], index=MEMBERS, name="basin")
ALPHAS = np.linspace(0.0, 1.0, 11)


@pytest.fixture
def points() -> pd.DataFrame:
    """All 15 pairs of 6 members on two splits; between-basin pairs carry a barrier."""
    rng = np.random.default_rng(0)
    rows = []
    for a, b in itertools.combinations(MEMBERS, 2):
        height = 0.05 if BASINS[a] == BASINS[b] else 0.8
        for split in ("val", "hans"):
            for alpha in ALPHAS:
                loss = 0.3 + 4 * height * alpha * (1 - alpha) + 0.01 * rng.standard_normal()
                rows.append(
                    {
                        "member_a": a,
                        "member_b": b,
                        "split": split,
                        "alpha": alpha,
                        "loss": loss,
                        "accuracy": 1.0 - loss / 2,
                        "sample_seed": 0,
                        "sample_size": 64,
                        "grid": "uniform-11",
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def matrix() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.0, 1.0, (5, 5))
    cg = (raw + raw.T) / 2
    np.fill_diagonal(cg, 0.0)
    ids = [f"m{i}" for i in range(5)]
    return pd.DataFrame(cg, index=ids, columns=ids)


# --- interpolation_curves ------------------------------------------------------------------


def test_curves_one_line_per_pair(points: pd.DataFrame) -> None:
    fig = figures.interpolation_curves(points, split="hans")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.lines) == 15
    assert ax.get_ylabel() == "loss"
    assert "α" in ax.get_xlabel()
    assert "hans" in ax.get_title()
    # α = 1 is member_a: the x data is the α column, sorted.
    np.testing.assert_allclose(ax.lines[0].get_xdata(), ALPHAS)


def test_curves_by_basin_add_group_means_and_bands(points: pd.DataFrame) -> None:
    fig = figures.interpolation_curves(points, split="val", basins=BASINS)
    ax = fig.axes[0]
    # 15 pairs + 3 group means (within 0, within 1, between).
    assert len(ax.lines) == 15 + 3
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # every group has >= 2 pairs (3, 3, 9)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["within basin 0 (n=3)", "within basin 1 (n=3)", "between basins (n=9)"]
    # The between-basin mean at α = 0.5 sits on the barrier: 0.3 + 0.8 (± noise).
    between = next(line for line in ax.lines if line.get_gid() == "mean:between basins")
    mid = np.asarray(between.get_ydata())[5]
    assert mid == pytest.approx(1.1, abs=0.02)
    pair = next(line for line in ax.lines if line.get_gid() == "m0|m3")
    assert pair.get_color() == figures.BETWEEN_COLOR


def test_curves_metric_with_nan(points: pd.DataFrame) -> None:
    points.loc[points.index[::3], "accuracy"] = np.nan  # scattered gaps
    only_nan = (points["member_a"] == "m0") & (points["member_b"] == "m1")
    points.loc[only_nan, "accuracy"] = np.nan  # one pair with nothing to draw
    fig = figures.interpolation_curves(points, split="hans", metric="accuracy", basins=BASINS)
    ax = fig.axes[0]
    pair_lines = [line for line in ax.lines if not str(line.get_gid()).startswith("mean:")]
    assert len(pair_lines) == 14
    assert all(np.isfinite(np.asarray(line.get_ydata())).all() for line in ax.lines)
    assert ax.get_ylabel() == "accuracy"


def test_curves_average_repeated_alphas(points: pd.DataFrame) -> None:
    again = points.assign(sample_seed=1, loss=points["loss"] + 0.2)
    fig = figures.interpolation_curves(pd.concat([points, again]), split="val")
    ax = fig.axes[0]
    assert len(ax.lines) == 15
    first = points[(points["split"] == "val") & (points["member_a"] == "m0")]
    first = first[first["member_b"] == "m1"]["loss"].to_numpy()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), first + 0.1)


def test_curves_draw_on_given_axes(points: pd.DataFrame) -> None:
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert figures.interpolation_curves(points, split="val", ax=right) is fig
    assert len(right.lines) == 15
    assert len(left.lines) == 0


def test_curves_missing_column(points: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="'alpha'"):
        figures.interpolation_curves(points.drop(columns="alpha"), split="val")
    with pytest.raises(DataError, match="'f1'"):
        figures.interpolation_curves(points, split="val", metric="f1")


def test_curves_unknown_split_and_member(points: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"'test'.*\['hans', 'val'\]"):
        figures.interpolation_curves(points, split="test")
    with pytest.raises(DataError, match="'m5'"):
        figures.interpolation_curves(points, split="val", basins=BASINS.drop("m5"))


# --- distance_heatmap ----------------------------------------------------------------------


def test_heatmap_draws_matrix_as_given(matrix: pd.DataFrame) -> None:
    fig = figures.distance_heatmap(matrix)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), matrix.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == list(matrix.columns)
    assert len(fig.axes) == 2  # heatmap + colourbar
    assert fig.axes[1].get_ylabel() == "convexity gap"


def test_heatmap_order_by_permutes(matrix: pd.DataFrame) -> None:
    hans = pd.Series({"m0": 0.7, "m1": 0.1, "m2": 0.5, "m3": 0.2, "m4": 0.9}, name="HANS-LO")
    order = ["m1", "m3", "m2", "m0", "m4"]  # ascending HANS-LO
    fig = figures.distance_heatmap(matrix, order_by=hans, label="CG")
    ax = fig.axes[0]
    drawn = np.asarray(ax.images[0].get_array())
    np.testing.assert_array_equal(drawn, matrix.loc[order, order].to_numpy())
    assert not np.array_equal(drawn, matrix.to_numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == order
    # The sorted metric is drawn as bars above the matrix, in the same order.
    (strip,) = ax.child_axes
    np.testing.assert_allclose([p.get_height() for p in strip.patches], sorted(hans))
    assert strip.get_title(loc="left") == "HANS-LO (0.1 to 0.9), ascending"


def test_heatmap_order_by_nan_last_and_masked_cells(matrix: pd.DataFrame) -> None:
    matrix.loc["m0", "m2"] = np.nan
    order_by = pd.Series({"m0": 0.7, "m1": np.nan, "m2": 0.5, "m3": 0.2, "m4": 0.9})
    fig = figures.distance_heatmap(matrix, order_by=order_by)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["m3", "m2", "m0", "m4", "m1"]
    image = ax.images[0].get_array()
    assert np.ma.is_masked(image) and image.mask.sum() == 1


def test_heatmap_hides_ticks_for_many_members() -> None:
    ids = [f"member-{i}" for i in range(figures.MAX_TICK_LABELS + 1)]
    big = pd.DataFrame(np.zeros((len(ids), len(ids))), index=ids, columns=ids)
    ax = figures.distance_heatmap(big).axes[0]
    assert ax.get_xticklabels() == [] and ax.get_yticklabels() == []


def test_heatmap_validates(matrix: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="square"):
        figures.distance_heatmap(matrix.iloc[:, :4])
    renamed = matrix.rename(columns={"m4": "x9"})
    with pytest.raises(DataError, match="'x9'"):
        figures.distance_heatmap(renamed)
    with pytest.raises(DataError, match="'m4'"):
        figures.distance_heatmap(matrix, order_by=pd.Series({f"m{i}": i for i in range(4)}))


# --- score_scatter -------------------------------------------------------------------------


def _scores() -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 12)
    y = 0.2 + 0.5 * x + 0.05 * rng.standard_normal(12)
    ids = [f"m{i}" for i in range(12)]
    return pd.Series(x, index=ids), pd.Series(y, index=ids)


def test_scatter_fit_matches_lstsq() -> None:
    scores, values = _scores()
    fig = figures.score_scatter(scores, values)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "basin score" and ax.get_ylabel() == "HANS-LO accuracy"
    (line,) = [line for line in ax.lines if line.get_gid() == "fit"]
    xs, ys = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    (x0, x1), (y0, y1) = xs[[0, -1]], ys[[0, -1]]
    assert x0 == scores.min() and x1 == scores.max()
    design = np.column_stack([scores.to_numpy(), np.ones(12)])
    (slope, intercept), *_ = np.linalg.lstsq(design, values.to_numpy(), rcond=None)
    assert (y1 - y0) / (x1 - x0) == pytest.approx(slope, rel=1e-9)
    assert y0 == pytest.approx(slope * x0 + intercept, rel=1e-9)
    r = np.corrcoef(scores, values)[0, 1]
    assert f"r = {r:.2f}, n = 12" in ax.get_legend().get_texts()[-1].get_text()


def test_scatter_colours_by_basin_and_skips_nan() -> None:
    scores, values = _scores()
    values.iloc[0] = np.nan
    basins = pd.Series([0, 1, 2] * 4, index=scores.index)
    ax = figures.score_scatter(scores, values, basins=basins, xlabel="s", ylabel="v").axes[0]
    groups = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(groups) == 3
    assert sum(len(c.get_offsets()) for c in groups) == 11
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["basin 0 (n=3)", "basin 1 (n=4)", "basin 2 (n=4)"]
    assert "n = 11" in legend[3]


def test_scatter_without_enough_points_has_no_line() -> None:
    ax = figures.score_scatter(pd.Series({"a": 1.0}), pd.Series({"a": 2.0})).axes[0]
    assert len(ax.lines) == 0


def test_scatter_validates_ids() -> None:
    scores, values = _scores()
    with pytest.raises(DataError, match="'m3'"):
        figures.score_scatter(scores, values.drop("m3"))
    with pytest.raises(DataError, match="'m0'"):
        figures.score_scatter(scores, values, basins=pd.Series({"m1": 0}))


# --- basin_histograms ----------------------------------------------------------------------


def test_histograms_one_per_basin() -> None:
    values = pd.Series([0.1, 0.15, 0.2, 0.6, 0.65, np.nan], index=MEMBERS)
    fig = figures.basin_histograms(values, BASINS, xlabel="HANS-LO accuracy", bins=5)
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # one filled step outline per basin
    assert ax.get_xlabel() == "HANS-LO accuracy" and ax.get_ylabel() == "members"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["basin 0 (n=3)", "basin 1 (n=2)"]


def test_histograms_validate() -> None:
    values = pd.Series(0.5, index=MEMBERS)
    with pytest.raises(DataError, match="'m5'"):
        figures.basin_histograms(values, BASINS.iloc[:5], xlabel="x")
    with pytest.raises(DataError, match="NaN"):
        figures.basin_histograms(values * np.nan, BASINS, xlabel="x")
    figures.basin_histograms(values, BASINS, xlabel="x")  # one value: still drawable


# --- save / style --------------------------------------------------------------------------


def test_save_writes_png(tmp_path, matrix: pd.DataFrame) -> None:
    path = figures.save(figures.distance_heatmap(matrix), tmp_path / "deep" / "dir" / "cg.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["cg.png"]  # no temp left
    with pytest.raises(ConfigError, match=r"\.png"):
        figures.save(Figure(), tmp_path / "cg.pdf")


def test_basin_colours_are_stable() -> None:
    colors = figures.basin_colors(pd.Series({"a": 3, "b": 1, "c": 3}))
    assert colors == {1: figures.BASIN_PALETTE[0], 3: figures.BASIN_PALETTE[1]}


def test_house_style_is_restored() -> None:
    import matplotlib as mpl

    before = mpl.rcParams["font.size"]
    with figures.house_style():
        assert mpl.rcParams["font.size"] == figures.FONT_SIZES["base"]
    assert mpl.rcParams["font.size"] == before


# --------------------------------------------------------------------------- analyses' figures


def test_best_worst_curves_turn_mixed_pairs_toward_the_better_member() -> None:
    from modeconn.figures import best_worst_curves

    # a, b best; c, d worst. Every path rises linearly toward its A end (α = 1).
    rows = []
    for a, b in [("a", "b"), ("c", "d"), ("a", "c"), ("d", "b")]:
        for alpha in (0.0, 0.5, 1.0):
            rows.append({"member_a": a, "member_b": b, "split": "s", "alpha": alpha,
                         "loss": alpha})  # fmt: skip
    ood = pd.Series({"a": 0.9, "b": 0.8, "c": 0.2, "d": 0.1})
    fig = best_worst_curves(pd.DataFrame(rows), split="s", ood=ood, k=2)
    lines = {line.get_gid(): line for line in fig.axes[0].lines}
    # (a, c): A = a is the better member, kept as is: 0, 0.5, 1.
    # (d, b): A = d is the worse one, turned: loss at the better end (b, α = 0) is 0, so
    # after turning, α = 1 (b) reads 0 and α = 0 (d) reads 1 → 1, 0.5, 0. Mean: 0.5 flat.
    np.testing.assert_allclose(lines["best-worst"].get_ydata(), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(lines["best-best"].get_ydata(), [0.0, 0.5, 1.0])
    with pytest.raises(ConfigError, match="k must lie"):
        best_worst_curves(pd.DataFrame(rows), split="s", ood=ood, k=3)


@pytest.mark.parametrize(("n", "k"), [(4, 2), (6, 3), (10, 5), (12, 5), (30, 5)])
def test_best_worst_groups_are_the_papers_five(n: int, k: int) -> None:
    """Fig. 1 uses the 5 best and 5 worst members; smaller populations half of them."""
    from modeconn.figures import best_worst_curves

    ids = [f"m{i:02d}" for i in range(n)]
    rows = [
        {"member_a": a, "member_b": b, "split": "s", "alpha": alpha, "loss": 1.0,
         "accuracy": 0.5 + 0.1 * alpha}
        for i, a in enumerate(ids) for b in ids[i + 1 :] for alpha in (0.0, 0.5, 1.0)
    ]  # fmt: skip
    ood = pd.Series(np.linspace(0, 1, n), index=ids)
    fig = best_worst_curves(pd.DataFrame(rows), split="s", ood=ood)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert any(f"among the {k} best" in lab and f"n={k * (k - 1) // 2}" in lab for lab in labels)
    # Fig. 1(b): the same groups drawn on the accuracy along the paths
    acc = best_worst_curves(pd.DataFrame(rows), split="s", ood=ood, metric="accuracy")
    assert acc.axes[0].get_ylabel() == "accuracy"


def test_heatmap_can_scale_to_the_off_diagonal() -> None:
    ids = ["a", "b", "c"]
    m = pd.DataFrame([[0.0, 5.0, 6.0], [5.0, 0.0, 5.5], [6.0, 5.5, 0.0]], ids, ids)
    image = figures.distance_heatmap(m, mask_diagonal=True).axes[0].images[0]
    assert image.get_clim() == (5.0, 6.0)
    assert np.ma.getmaskarray(image.get_array()).diagonal().all()
    assert figures.distance_heatmap(m).axes[0].images[0].get_clim() == (0.0, 6.0)


def test_distance_scatter_fits_each_group() -> None:
    from modeconn.figures import distance_scatter

    rng = np.random.default_rng(0)
    ids = [f"m{i}" for i in range(6)]
    x = rng.random((6, 6))
    x = pd.DataFrame(x + x.T, ids, ids)
    y = 2 * x + 0.1 * rng.random((6, 6))
    y = (y + y.T) / 2
    basins = pd.Series([0, 0, 0, 1, 1, 1], index=ids)
    fig = distance_scatter(x, y, basins=basins)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    within = [(x.loc[a, b], y.loc[a, b]) for a, b in itertools.combinations(ids, 2)
              if basins[a] == basins[b]]  # fmt: skip
    r = np.corrcoef(np.array(within).T)[0, 1]
    assert any(t.startswith("same basin (n=6)") and f"r = {r:.2f}" in t for t in texts)


# --- user strings are literal text ---------------------------------------------------------

ODD = "$\\frac{a}{b}$_x"  # valid mathtext: would show a fraction and a subscript
BROKEN = "$\\frac{a}$"  # malformed mathtext: would raise when drawn
ODD_IDS = ["m0", ODD, BROKEN, "m3", "m4", "m5"]


def _shown(fig: Figure) -> list[str]:
    """Every text the drawn figure shows, as matplotlib renders it; none is mathtext."""
    import io

    from matplotlib.text import Text

    fig.savefig(io.BytesIO(), format="png")  # draws: tick labels exist, mathtext would parse
    shown = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text():
            text, math = t._preprocess_math(t.get_text())
            assert math is False, f"{t.get_text()!r} is read as mathtext"
            shown.append(text)
    return shown


def _odd_figures() -> dict[str, Figure]:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.0, 1.0, (6, 6))
    sym = (raw + raw.T) / 2
    np.fill_diagonal(sym, 0.0)
    cg = pd.DataFrame(sym, index=ODD_IDS, columns=ODD_IDS)
    basins = pd.Series([0, 0, 0, 1, 1, 1], index=ODD_IDS)
    ood = pd.Series(rng.uniform(0, 1, 6), index=ODD_IDS, name=f"{ODD} accuracy")
    rows = [
        {"member_a": a, "member_b": b, "split": ODD, "alpha": x, "loss": 1.0 + x * (1 - x)}
        for a, b in itertools.combinations(ODD_IDS, 2)
        for x in (0.0, 0.5, 1.0)
    ]
    frame = pd.DataFrame({ODD: rng.random(6), BROKEN: rng.random(6), "plain": rng.random(6)})
    return {
        "curves": figures.interpolation_curves(
            pd.DataFrame(rows), split=ODD, metric="loss", basins=basins
        ),
        "heatmap": figures.distance_heatmap(cg, order_by=ood, label=BROKEN),
        "correlation": figures.correlation_matrix(frame),
        "scatter": figures.score_scatter(ood, ood, basins=basins, xlabel=ODD, ylabel=BROKEN),
        "histograms": figures.basin_histograms(ood, basins, xlabel=BROKEN),
        "pairs": figures.distance_scatter(cg, cg, basins=basins, xlabel=ODD, ylabel=BROKEN),
        "keeping": figures.basin_keeping(ood, basins),
        "histogram": figures.metric_histogram(ood.to_numpy(), xlabel=ODD),
    }


def test_user_strings_are_shown_literally_and_never_raise() -> None:
    """Member ids, split and metric names holding `$…$` show as typed, in every figure."""
    found = {name: _shown(fig) for name, fig in _odd_figures().items()}
    assert ODD in found["heatmap"] and BROKEN in found["heatmap"]  # tick labels
    assert BROKEN in found["heatmap"]  # the colour bar's label
    assert any(ODD in t for t in found["heatmap"])  # the strip's title names the OOD series
    assert any(f"split {ODD}" in t for t in found["curves"])  # the title
    assert ODD in found["correlation"] and BROKEN in found["correlation"]
    assert ODD in found["scatter"] and BROKEN in found["scatter"]  # axis labels
    assert BROKEN in found["histograms"] and ODD in found["histogram"]
    assert any(ODD in t and BROKEN in t for t in found["pairs"])  # "y vs. x, per pair"
    assert ODD in found["keeping"] and BROKEN in found["keeping"]


def test_literal_escapes_only_dollars() -> None:
    from matplotlib.text import Text

    for text in (ODD, BROKEN, "a\\$b", "$", "$$", "plain", "50% of α_1"):
        shown, math = Text(text=figures.style.literal(text))._preprocess_math(
            figures.style.literal(text)
        )
        assert (shown, math) == (text, False), text
