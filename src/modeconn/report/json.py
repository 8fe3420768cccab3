"""The study's summary as one JSON document: ``modeconn report STORE --json``.

What the terminal summary and the HTML report say, as numbers a script or a notebook
reads without parsing text::

    import json, subprocess
    doc = json.loads(subprocess.run(["modeconn", "report", "runs/demo", "--json"],
                                    capture_output=True, text=True, check=True).stdout)
    doc["correlations"][0]["pearson_r"], doc["basins"][0]["members"]
    pd.DataFrame(doc["analyses"]["mechanisms"]["table"])   # method × set records

The document is built from a :class:`~modeconn.results.StudyResult` alone (the store,
never weights), so it comes from a read-only copy of a store as well as from the study's
own. Its top-level keys, always present and in this order: ``format``, ``version``,
``study``, ``clustering``, ``basins``, ``arms``, ``correlations``, ``members``,
``analyses``, ``notes``, ``summary``, ``report``. Every key, its type and meaning is
documented in ``docs/json.md``; a change that removes or renames a key raises
:data:`VERSION`.

The JSON is strict: NaN and ±inf (an undefined correlation, an interval of a single
member) are ``null``, never the ``NaN`` literal Python's ``json`` would write; keys keep
the order of the schema (tables: their columns' order), so the same store gives the
same bytes; non-ASCII characters are escaped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeconn.analyses import registry
from modeconn.analyses.base import jsonable, records, summary_json
from modeconn.results import StudyResult

FORMAT = "modeconn-report"
VERSION = 1

# the correlation columns in reading order: each estimate beside its interval
_CORRELATION_ORDER = (
    "split",
    "metric",
    "n",
    "pearson_r",
    "pearson_lo",
    "pearson_hi",
    "pearson_p",
    "spearman_rho",
    "spearman_lo",
    "spearman_hi",
    "spearman_p",
    "confidence",
    "n_boot",
    "n_boot_used",
    "seed",
)


def study_json(result: StudyResult, *, report: Path | None = None) -> dict[str, Any]:
    """The JSON document of one study's result (plain types, NaN as None; docs/json.md).

    ``result`` comes from :func:`modeconn.analyses.run.analyze_study` (with its
    analyses); ``report`` is the HTML report's path if one was written.
    """
    study, fit = result.study, result.fit
    b = study.basins
    lo, hi = result.distance_range
    labels = result.members["basin"]
    basins = []
    for basin, row in result.basins.iterrows():
        basins.append(
            {
                "basin": int(basin),  # type: ignore[call-overload]
                "size": int(row["size"]),
                "members": [str(m) for m in labels.index[labels == basin]],
                **{c: row[c] for c in result.basins.columns if c != "size"},
            }
        )
    arms = None
    if result.arms is not None:
        arms = {
            "adjusted_rand": result.recovery,
            "per_arm": [
                {"arm": str(arm), "per_basin": [int(row.get(k, 0)) for k in range(fit.n_basins)]}
                for arm, row in result.arms.iterrows()
            ],
        }
    corr = result.correlations
    ordered = [c for c in _CORRELATION_ORDER if c in corr.columns]
    corr = corr[ordered + [c for c in corr.columns if c not in ordered]]
    analyses = {}
    if result.analyses is not None:
        for a in registry.enabled(study):
            if a.key in result.analyses:
                analyses[a.key] = summary_json(a, result.analyses[a.key])
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "study": {
            "name": study.name,
            "members": len(result.members),
            "splits": result.splits,
            "grid": result.grid,
        },
        "clustering": {
            "split": b.split,
            "distance": b.distance,
            "distance_range": [lo, hi],
            "n_basins": fit.n_basins,
            "n_basins_from": fit.n_basins_from,
            "delta": fit.delta,
            "delta_setting": b.delta,
            "seed": fit.seed,
            "centroids_from": fit.centroids_from,
            "preset": b.preset,
            "ties": fit.ties,
        },
        "basins": basins,
        "arms": arms,
        "correlations": records(corr),
        "members": records(result.members, index="id"),
        "analyses": analyses,
        "notes": list(result.notes),
        "summary": result.summary().splitlines(),
        "report": None if report is None else str(report),
    }
    out = jsonable(doc)
    assert isinstance(out, dict)
    return out


def dumps(doc: dict[str, Any]) -> str:
    """``doc`` as strict JSON text (``allow_nan=False``: a NaN left over is a bug, not
    output), indented by two spaces.

    >>> dumps({"r": None, "ρ": 0.5})
    '{\\n  "r": null,\\n  "\\\\u03c1": 0.5\\n}'
    """
    return json.dumps(doc, indent=2, allow_nan=False)
