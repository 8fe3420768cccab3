"""Loss planes through three members (Juneja et al. 2023, Fig. 2; Garipov et al. 2018).

The plane through θ₀, θ₁, θ₂: origin θ₀, x along θ₁ − θ₀, y along the part of θ₂ − θ₀
orthogonal to it, both scaled to ‖θ₀θ₁‖; every grid point evaluated by the engine on
the split's fixed sample (:mod:`modeconn.engine.planes` does the geometry). One record
per plane, keyed by the three weight hashes, the split's key and a fingerprint of the
grid (member ids and split names are left out, like every record's key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, RootModel

from modeconn.analyses.base import MeasureContext, settings_fingerprint, value_key
from modeconn.config.sections import SectionModel
from modeconn.errors import ConfigError
from modeconn.results import StudyResult
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.config.study import Study
    from modeconn.report.html import Section


class PlaneSection(SectionModel):
    """A loss plane through three members (the paper's Fig. 2)."""

    members: list[str] = Field(min_length=3, max_length=3)
    split: str
    resolution: int = Field(default=9, ge=2, le=101)
    margin: float = Field(default=0.3, ge=0)


class PlanesSection(RootModel[list[PlaneSection]]):
    """``analyses.planes``: a list of planes."""

    model_config = ConfigDict(frozen=True)

    def check(self, study: Study) -> None:
        for i, plane in enumerate(self.root):
            if plane.split not in study.paths.splits + study.member_splits:
                raise ValueError(
                    f"analyses.planes[{i}].split '{plane.split}' must be one of paths.splits or "
                    "member_splits (a plane is evaluated on a prepared split)"
                )


def plane_key(hashes: list[str], split_key: str, settings: dict[str, Any]) -> str:
    """Keyed by weights and data, like every record: member ids and split names left out."""
    grid = {k: v for k, v in settings.items() if k not in ("members", "split")}
    return value_key(*hashes, split_key, settings_fingerprint(grid))


def plane_records(store: Store, result: StudyResult) -> list[dict[str, Any]]:
    """The loss planes the study asks for, in its order (those computed so far)."""
    hashes = result.members["hash"].to_dict()
    out = []
    for section in result.study.section("planes").root:
        if not all(m in hashes for m in section.members):
            continue
        key = plane_key(
            [hashes[m] for m in section.members],
            result.splits[section.split]["key"],
            section.model_dump(),
        )
        rec = store.get_value("plane", key)
        if rec is not None:
            out.append(rec)
    return out


class Planes:
    key = "planes"
    section = PlanesSection
    cites = "Juneja et al. 2023, Fig. 2 (after Garipov et al. 2018)"
    summary = "the loss over the plane through three members, on a grid"
    needs_weights = True

    def measure(self, ctx: MeasureContext) -> None:
        from modeconn.engine.planes import evaluate_plane

        hashes = {r.id: r.hash for r in ctx.members}
        ev = ctx.evaluator
        for i, section in enumerate(ctx.study.section(self.key).root):
            missing = [m for m in section.members if m not in hashes]
            if missing:
                raise ConfigError(
                    f"analyses.planes[{i}].members names {missing}, not members of this study "
                    f"(members: {', '.join(sorted(hashes))})"
                )
            split = ctx.splits[section.split]
            key = plane_key([hashes[m] for m in section.members], split.key, section.model_dump())
            if ctx.store.get_value("plane", key) is not None:
                continue
            ctx.say(
                f"loss plane through {', '.join(section.members)} on '{section.split}': "
                f"{section.resolution}×{section.resolution} points"
            )
            result = evaluate_plane(
                ev,
                [ev.as_point(ctx.population.load(m), name=m) for m in section.members],
                split,
                members=section.members,
                resolution=section.resolution,
                margin=section.margin,
                progress=ctx.progress,
            )
            ctx.store.put_value("plane", key, {**result.to_dict(), "split_name": section.split})

    def read(
        self, store: Store, result: StudyResult, earlier: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return plane_records(store, result)

    def sections(self, result: StudyResult, value: list[dict[str, Any]]) -> list[Section]:
        import modeconn.figures as figures
        from modeconn.report.common import provenance
        from modeconn.report.html import Section

        if not value:
            return []
        figs = []
        for rec in value:
            members = ", ".join(rec["spec"]["members"])
            figs.append(
                (
                    f"Loss on '{rec.get('split_name', rec['split'])}' over the plane through "
                    f"{members} ({len(rec['loss'][0])}×{len(rec['loss'])} grid; one unit = "
                    f"‖θ₀θ₁‖ = {rec['scale']:.3g}).",
                    figures.loss_plane(rec),
                )
            )
        split = result.study.basins.split
        return [
            Section(
                title="Loss planes",
                text=(
                    "The plane through three members θ₀, θ₁, θ₂: origin θ₀, x along θ₁ − θ₀, "
                    "y along the part of θ₂ − θ₀ orthogonal to it, both scaled to ‖θ₀θ₁‖ "
                    "(the paper's Fig. 2); every grid point evaluated by the engine on the "
                    "split's fixed sample. Dashed lines: the linear paths."
                ),
                figures=tuple(figs),
                provenance=provenance(result, *{r.get("split_name", split) for r in value}),
            )
        ]

    def summary_lines(self, value: list[dict[str, Any]]) -> list[str]:
        return [f"loss planes: {len(value)} in the store"] if value else []

    def summary_json(self, value: list[dict[str, Any]]) -> dict[str, Any]:
        """Per plane: its three members, split, grid, unit length and loss range (the
        whole grid is in the store: ``modeconn export``)."""
        import numpy as np

        return {
            "planes": [
                {
                    "members": list(rec["spec"]["members"]),
                    "split": rec.get("split_name", rec["split"]),
                    "grid": [len(rec["loss"][0]), len(rec["loss"])],
                    "scale": rec["scale"],
                    "loss_min": float(np.nanmin(rec["loss"])),
                    "loss_max": float(np.nanmax(rec["loss"])),
                }
                for rec in value
            ]
        }
