"""Pieces every report section shares: provenance lines, heatmap order, member paths."""

from __future__ import annotations

import pandas as pd

from modeconn.results import StudyResult
from modeconn.store import Store


def provenance(result: StudyResult, *splits: str) -> dict[str, str]:
    """What produced a section: members, splits with their store keys, samples, grid."""
    infos = {s: result.splits[s] for s in splits}
    return {
        "members": f"{len(result.members)} ({', '.join(result.members.index[:6])}"
        + (", …)" if len(result.members) > 6 else ")"),
        "split": "; ".join(f"{s} (store key {i['key']})" for s, i in infos.items()),
        "sample": "; ".join(
            f"{s}: {i['sample_size']} examples, seed {i['sample_seed']}" for s, i in infos.items()
        ),
        "grid": f"{result.grid['grid']}: α = {', '.join(f'{a:g}' for a in result.grid['alphas'])}",
    }


def heatmap_order(result: StudyResult) -> tuple[pd.Series | None, str]:
    """The member metric heatmaps are sorted by: basins.sort_by, else the first OOD split."""
    b = result.study.basins
    split = b.sort_by or (b.ood[0] if b.ood else None)
    if split is None:
        return None, ""
    col = result.metric_column(split)
    return result.members[col], f"{split} {col.rsplit('.', 1)[1]}"


def member_paths(store: Store, result: StudyResult, key: str) -> pd.DataFrame:
    """Path points between the study's members (not checkpoints) on one split key."""
    pts = store.path_points(split=key, grid=result.grid["grid"])
    ids = set(result.members.index)
    return pts[pts["member_a"].isin(ids) & pts["member_b"].isin(ids)].copy()
