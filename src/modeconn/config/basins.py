"""The study's ``basins:`` section: how the population is clustered into basins.

Its options map one to one onto :func:`modeconn.stats.basins.find_basins`
(:meth:`BasinsConfig.fit_options`); ``preset: paper`` sets every clustering choice of
Juneja et al. 2023's code at once (docs/method.md lists each departure of the defaults).
Imports no torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["PAPER_BASINS", "BasinsConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Paper 1's clustering (Juneja et al. 2023, §4 and aNOnWhyMooS/connectivity's
# theoretical/clustering.py): what `basins.preset: paper` sets.
PAPER_BASINS: dict[str, Any] = {"n_basins": 2, "delta": 1.0, "seed": 42, "centroids": "kmeans"}


class BasinsConfig(_Strict):
    split: str = Field(description="the split whose loss curves define the distance")
    preset: Literal["paper"] | None = Field(
        default=None,
        description="'paper': every clustering choice of Juneja et al. 2023 at once "
        "(n_basins 2, delta 1.0, seed 42, centroids kmeans); a conflicting explicit value "
        "is an error",
    )
    distance: Literal["convexity_gap", "barrier_height", "auc"] = Field(
        default="convexity_gap",
        description="distance of the basins; 'auc' integrates over α (the paper's AUC over "
        "parameter distance is `analyses.distances: [auc_distance]`)",
    )
    n_basins: int | None = Field(default=2, ge=2)
    delta: float | Literal["median"] = Field(
        default="median",
        description="similarity scale δ; 'median' = median off-diagonal distance (paper: 1.0)",
    )
    centroids: Literal["mean", "kmeans"] = Field(
        default="mean",
        description="centroids of the basin score: each basin's mean embedding, or k-means "
        "centres on the embedding (the paper's code)",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        if data["preset"] != "paper":
            return data  # the Literal check names the allowed values
        for key, value in PAPER_BASINS.items():
            if key in data and data[key] != value:
                raise ValueError(
                    f"preset: paper sets {key} to {value!r}; got {data[key]!r}. Remove "
                    f"basins.{key} or basins.preset"
                )
        return {**data, **PAPER_BASINS}

    @field_validator("delta")
    @classmethod
    def _positive_delta(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and v <= 0:
            raise ValueError(f"basins.delta must be > 0 or 'median'; got {v}")
        return v

    seed: int = Field(default=0, description="clustering seed (paper's code: 42)")
    ood: list[str] = Field(default_factory=list, description="splits to correlate with")
    metric: Literal["accuracy", "f1", "mcc"] | None = Field(
        default=None, description="OOD metric; default: each split's own `metric`"
    )
    bootstrap: int = Field(default=2000, ge=0)
    sort_by: str | None = Field(
        default=None, description="split whose metric orders the heatmaps (default: ood[0])"
    )

    landmarks: int | None = Field(
        default=None,
        ge=3,
        description="landmark basins: measure only the paths to m landmark members (plus "
        "those among them) and complete the affinity by Nyström (stats.landmarks); "
        "default: all pairs",
    )
    landmark_seed: int = Field(
        default=0, description="seed of the landmarks' random choice (stats.landmarks)"
    )
    landmark_choice: Literal["random", "kmeans++", "farthest"] = Field(
        default="random",
        description="'random': m members drawn with landmark_seed; 'kmeans++': each next "
        "landmark drawn ∝ its squared distance to the nearest landmark so far, measured "
        "landmark by landmark (stats.landmarks.kmeanspp_landmarks); 'farthest': each next "
        "landmark the member farthest from every landmark so far, the first drawn with "
        "landmark_seed (stats.landmarks.farthest_landmarks)",
    )
    landmark_completion: Literal["nystrom", "triangle"] = Field(
        default="nystrom",
        description="how the unmeasured pairs are completed: 'nystrom' completes the "
        "affinity (stats.landmarks.complete_affinity); 'triangle' the distance, by the "
        "midpoint of its triangle bounds through the landmarks "
        "(stats.landmarks.complete_distance)",
    )

    def fit_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`modeconn.stats.basins.find_basins` for these settings."""
        return {
            "n_basins": self.n_basins,
            "delta": self.delta,
            "seed": self.seed,
            "centroids": self.centroids,
        }
