"""The engine's sections of a study: ``model``, ``eval`` and ``sweep``; torch-free.

``model`` names the model kind and where its weights' architecture comes from
(:mod:`modeconn.models`); ``eval`` how a point is evaluated (device, dtype, batching, the
BatchNorm policy, :mod:`modeconn.engine.spec`); ``sweep`` where the evaluations run
(:mod:`modeconn.engine.backends`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# model kind → "module:function" building ``(skeleton, label_order)`` from a
# :class:`~modeconn.engine.spec.ModelSource` (:func:`modeconn.models.build_model`); a new
# kind is one line here.
MODEL_BUILDERS: dict[str, str] = {
    "hf": "modeconn.models.hf:build_skeleton",
    "cnn": "modeconn.models.cnn:build_skeleton",
}


# `kind: cnn` options with a fixed set of values, first the default: the default is what
# every store trained before the option existed holds, so it never enters a fingerprint
# (:meth:`ModelConfig.kind_options`).
CNN_CHOICES: dict[str, tuple[str, ...]] = {
    "activation": ("relu", "gelu", "softplus"),
    "pool": ("max", "avg"),
}
CNN_OPTIONS = ("widths", "init_seed", *CNN_CHOICES)


class ModelConfig(_Strict):
    kind: str = Field(default="hf", description="model kind (MODEL_BUILDERS): hf, cnn")
    pretrained: str | None = Field(
        default=None,
        description="kind hf: Hugging Face model dir, or 'builtin:all-MiniLM-L6-v2'",
    )
    label_order: list[str] = Field(min_length=2, description="class name of each model output")
    max_length: int = Field(default=128, ge=8, le=4096)
    num_layers: int | None = Field(default=None, ge=1, description="keep only the first layers")
    options: dict[str, Any] = Field(
        default_factory=dict, description="settings of the model kind (e.g. a CNN's width)"
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in MODEL_BUILDERS:
            raise ValueError(
                f"unknown model kind {v!r}; known kinds: {', '.join(sorted(MODEL_BUILDERS))}"
            )
        return v

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ModelConfig:
        if self.kind == "hf" and self.pretrained is None:
            raise ValueError(
                "model.pretrained is required for `kind: hf` (a Hugging Face model dir or "
                "'builtin:all-MiniLM-L6-v2'); add it, or set model.kind"
            )
        if self.kind == "cnn":
            widths = self.options.get("widths")
            ok = (
                isinstance(widths, list)
                and widths
                and all(isinstance(w, int) and w >= 1 for w in widths)
            )
            if not ok:
                raise ValueError(
                    "`kind: cnn` needs model.options.widths, one positive channel count per "
                    f"conv block (e.g. [16, 32, 32]); got {widths!r}"
                )
            unknown = set(self.options) - set(CNN_OPTIONS)
            if unknown:
                raise ValueError(
                    f"model.options {sorted(unknown)} are not options of `kind: cnn` "
                    f"({', '.join(CNN_OPTIONS)})"
                )
            for name, allowed in CNN_CHOICES.items():
                value = self.options.get(name, allowed[0])
                if value not in allowed:
                    raise ValueError(
                        f"model.options.{name} must be one of {', '.join(allowed)} (default "
                        f"{allowed[0]}); got {value!r}"
                    )
        return self

    def kind_options(self) -> dict[str, Any]:
        """``options`` without the choices left at their default (``activation: relu``,
        ``pool: max``): the settings that name the architecture, so that spelling a
        default out keeps the members' fingerprints (and their stores) of a study that
        does not."""
        if self.kind != "cnn":
            return dict(self.options)
        return {
            k: v
            for k, v in self.options.items()
            if not (k in CNN_CHOICES and v == CNN_CHOICES[k][0])
        }


class EvalConfig(_Strict):
    """How the engine evaluates a point (:class:`~modeconn.engine.evaluate.Evaluator`)::

        eval: {device: cuda, dtype: bfloat16, compile: false, max_tokens: 4096}
        eval: {batchnorm: reestimate, batchnorm_split: digits_train, batchnorm_batches: 20}

    ``batchnorm`` applies to models with BatchNorm layers only (see
    :mod:`modeconn.engine.spec`): ``reestimate`` resets and re-estimates the running
    statistics at every point over ``batchnorm_split``; ``interpolate`` keeps the
    interpolated ones. The policy is part of a row's key.

    ``dtype`` is not part of a row's key: a results store holds rows of one dtype, and a
    sweep that would add rows of another to it is refused (use a new ``output_dir``).
    """

    max_tokens: int = Field(default=1024, ge=16, description="token budget per batch")
    max_batch: int = Field(default=128, ge=1, description="examples per batch at most")
    threads: int | None = Field(default=None, ge=1, description="torch threads (local sweep)")
    device: str = Field(
        default="cpu", description="cpu, cuda, cuda:N or mps; model and batches move there"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32",
        description="weights and forward pass; losses are accumulated in fp32/fp64. "
        "bfloat16/float16 pay off on a GPU only (several times slower on most CPUs)",
    )
    compile: bool = Field(
        default=False, description="torch.compile the skeleton (slow start; GPU runs)"
    )
    batchnorm: Literal["reestimate", "interpolate"] = Field(
        default="reestimate",
        description="models with BatchNorm: re-estimate the running statistics at every "
        "point over batchnorm_split, or interpolate them (ignored without BatchNorm)",
    )
    batchnorm_split: str | None = Field(
        default=None,
        description="split whose batches re-estimate BatchNorm statistics (default: the "
        "first training arm's data)",
    )
    batchnorm_batches: int | None = Field(
        default=None, ge=1, description="batches of batchnorm_split to use (default: all)"
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        # whether the device exists is checked where the engine starts, not here: a study
        # may be validated on a machine other than the one that runs it
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"expected 'cpu', 'cuda', 'cuda:N' or 'mps'; got {v!r}")
        return v


class SweepConfig(_Strict):
    """Where the sweep's evaluations run; see :mod:`modeconn.engine.backends`."""

    backend: Literal["local", "process", "ray"] = Field(
        default="local", description="local: in this process; process: a local pool; ray"
    )
    workers: int = Field(default=2, ge=1, description="worker processes or Ray actors")
    threads_per_worker: int = Field(default=1, ge=1, description="torch threads per worker")
    address: str | None = Field(
        default=None, description="a running Ray cluster (host:port, ray://host:port, auto)"
    )
    max_retries: int = Field(default=3, ge=0, description="retries of a failed or lost task")

    @model_validator(mode="after")
    def _address_needs_ray(self) -> SweepConfig:
        if self.address is not None and self.backend != "ray":
            raise ValueError(
                f"sweep.address is only used by backend 'ray' (backend is '{self.backend}'); "
                "remove the address or set `backend: ray`"
            )
        return self
