"""The read side of :mod:`modeconn.analyses.layerwise`: stored records → tables.

Pure functions of the records (dicts as the store keeps them), no weights and no torch:

* :func:`block_rows` — per block and pair, the barrier of "rest at A" and "rest at B" in
  both conventions (own chord, and the layer-wise-lmc full-endpoints mean);
* :func:`cumulative_rows` — the cumulative barriers per k: shallow-first, deep-first and
  the seeded random orders (their mean, minimum and maximum over the draws);
* :func:`form_rows` and :func:`form_correlations` — the layer-wise barrier prediction:
  per block, variant and pair, the three forms of :mod:`modeconn.measures.barrier_forms`
  computed on the block's own path against the barrier measured at its midpoint, and the
  Pearson r / Spearman ρ of each form with it (pooled over blocks, and per block);
* :func:`training_rows` — per-block barriers between two runs' checkpoints at each stored
  training step (the heatmap of layers × training time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeconn.errors import DataError
from modeconn.measures import barrier_forms as bf
from modeconn.measures.barriers import barrier_height

VARIANTS = ("rest_a", "rest_b")


def path_barriers(curve: Sequence[float], loss_a: float, loss_b: float) -> dict[str, float]:
    """Both conventions for one layer-wise path: ``own``, Entezari's barrier height against
    the path's own chord, and ``lmc``, its maximum minus the full members' mean loss.

    >>> path_barriers([1.0, 3.0, 2.0], 1.0, 1.0)
    {'own': 1.5, 'lmc': 2.0}
    """
    return {"own": barrier_height(list(curve)), "lmc": max(curve) - 0.5 * (loss_a + loss_b)}


def half_index(s: Sequence[float]) -> int | None:
    """The position of s = ½ on a grid, or None.

    >>> half_index([0.0, 0.25, 0.5, 0.75, 1.0]), half_index([0.0, 1.0])
    (2, None)
    """
    hits = [i for i, x in enumerate(s) if abs(float(x) - 0.5) < 1e-9]
    return hits[0] if hits else None


def block_rows(pair: str, rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per block: ``rest_a``, ``rest_b`` (own chord) and their ``*_lmc``."""
    la, lb = rec["loss_a"], rec["loss_b"]
    rows = []
    for blk in rec["blocks"]:
        ra = path_barriers(rec["rest_a"][blk], la, lb)
        rb = path_barriers(rec["rest_b"][blk], la, lb)
        rows.append(
            {
                "pair": pair,
                "block": blk,
                "rest_a": ra["own"],
                "rest_b": rb["own"],
                "rest_a_lmc": ra["lmc"],
                "rest_b_lmc": rb["lmc"],
            }
        )
    return rows


def cumulative_rows(pair: str, rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per k (blocks interpolated): shallow-first, deep-first and, with random
    orders in the record, their mean (``random``), ``random_min`` and ``random_max`` over
    the draws; own-chord barriers, and ``*_lmc`` (``random_lmc``, ``random_lmc_min``, …)
    for the full-endpoints convention."""
    la, lb = rec["loss_a"], rec["loss_b"]
    draws = rec.get("random") or []
    k_max = max(len(rec["shallow"]), max((len(d) for d in draws), default=0))
    rows = []
    for k in range(1, k_max + 1):
        row: dict[str, Any] = {"pair": pair, "k": k}
        for name, curves in (("shallow", rec["shallow"]), ("deep", rec["deep"])):
            if k <= len(curves):
                b = path_barriers(curves[k - 1], la, lb)
                row[name], row[f"{name}_lmc"] = b["own"], b["lmc"]
        if draws:
            both = [path_barriers(d[k - 1], la, lb) for d in draws]
            for suffix, name in (("", "own"), ("_lmc", "lmc")):
                values = np.array([b[name] for b in both])
                row[f"random{suffix}"] = float(values.mean())
                row[f"random{suffix}_min"] = float(values.min())
                row[f"random{suffix}_max"] = float(values.max())
        rows.append(row)
    return rows


def forms_of(path: Mapping[str, Any], s: Sequence[float]) -> dict[str, float]:
    """The three forms of one stored block path (``f2`` on the grid `s`, ``f1_0``,
    ``f1_1``, the frozen-statistics ``loss``), its quadrature bound and frozen barrier."""
    grid, f2 = np.asarray(s, dtype=float), np.asarray(path["f2"], dtype=float)
    mid = half_index(s)
    if mid is None:
        raise DataError("a layer-wise forms record needs s = ½ on its grid (an odd `points`)")
    loss = path["loss"]
    return {
        "exact": bf.exact_form(grid, f2),
        "exact_error": bf.exact_form_error(grid, f2),
        "midpoint": bf.midpoint_form(float(f2[mid])),
        "endpoint": bf.endpoint_form(path["f1_0"], path["f1_1"], float(f2[0]), float(f2[-1])),
        "frozen": bf.measured_barrier(loss[0], loss[mid], loss[-1]),
    }


def form_rows(
    pair: str, forms: Mapping[str, Any], curves: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per block and variant: the barrier measured at the midpoint of the block's path
    (f(½) − ½(f(0) + f(1)) on the layer-wise curve, statistics by the study's policy), the
    path's barrier height, and the three forms on the same path."""
    mid = half_index(curves["s"])
    if mid is None:
        raise DataError("the layer-wise prediction needs s = ½ on the grid (an odd `points`)")
    rows = []
    for blk in forms["blocks"]:
        for variant in VARIANTS:
            f = curves[variant][blk]
            rows.append(
                {
                    "pair": pair,
                    "block": blk,
                    "variant": variant,
                    "measured": bf.measured_barrier(f[0], f[mid], f[-1]),
                    "barrier": barrier_height(list(f)),
                    **forms_of(forms[variant][blk], forms["s"]),
                }
            )
    return rows


def form_correlations(rows: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Pearson r and Spearman ρ of each form with the measured barrier, with bootstrap
    intervals: pooled over every block (``block = "all"``), then per block; groups of
    fewer than 3 rows are left out. The rows share members and blocks, so the intervals
    (resampling rows) are optimistic."""
    from modeconn.stats.inference import correlate

    out = []
    groups: list[tuple[str, pd.DataFrame]] = [("all", rows)]
    groups += [(str(b), g) for b, g in rows.groupby("block", sort=False)]
    for name, g in groups:
        if len(g) < 3:
            continue
        for form in bf.FORMS:
            c = correlate(g[form], g["measured"], n_boot=n_boot, seed=seed, constant="undefined")
            out.append({"block": name, "form": form, **c.to_dict()})
    return pd.DataFrame(out)


def training_rows(stages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per stored training step and block: the barriers between the two runs' checkpoints
    at that step. Each entry of `stages` holds ``stage``, ``step`` and ``record`` (a
    layer-wise curves record of the two checkpoints)."""
    rows = []
    for st in stages:
        for r in block_rows("", st["record"]):
            r.pop("pair")
            rows.append({"stage": st["stage"], "step": st["step"], **r})
    return rows
