"""What a results store holds and what of its study remains to be done.

Counted by weights, as every reader counts (:mod:`modeconn.store.frames`): a member point
or path unit is done when the store holds it for the current members' hashes, whatever
ids it was written under; a pair counts once, whichever way round it was swept.
"""

from __future__ import annotations

import json
from typing import Any

from modeconn.results import study_from_store
from modeconn.store import Store


def store_status(store: Store) -> dict[str, Any]:
    """Counts of member points and path units done vs. planned, from the store alone."""
    out: dict[str, Any] = {"store": str(store.path), "integrity": store.integrity_check()}
    if store.readonly:
        out["opened"] = "read-only (the store or its folder cannot be written here)"
    raw = {k: store.get_meta(k) for k in ("study", "members", "splits", "grid")}
    out.update({f"rows.{k}": v for k, v in store.counts().items()})
    if any(v is None for v in raw.values()):
        out["plan"] = "unknown: no sweep has started on this store"
        return out
    study = study_from_store(store)
    members = store.population(distinct=False) or []
    splits = json.loads(raw["splits"] or "{}")
    grid = json.loads(raw["grid"] or "{}")["grid"]
    hashes = {m["hash"] for m in members}
    n = len(members)
    path_splits = study.paths.splits
    done = store.done_units()
    out["study"] = study.name
    out["members"] = n
    for name, info in splits.items():
        have = store.member_points(split=info["key"])
        have = have[
            have["member_hash"].isin(hashes)
            & (have["sample_seed"] == info["sample_seed"])
            & (have["sample_size"] == info["sample_size"])
        ]
        line = f"member points {len(have)}/{n}"
        if name in path_splits:
            pairs = {
                frozenset((u.hash_a, u.hash_b))
                for u in done
                if u.split == info["key"]
                and u.grid == grid
                and u.hash_a in hashes
                and u.hash_b in hashes
                and u.hash_a != u.hash_b
                and u.sample_seed == info["sample_seed"]
                and u.sample_size == info["sample_size"]
            }
            line += f", path units {len(pairs)}/{n * (n - 1) // 2}"
        out[f"split {name}"] = line
    return out
