"""The fine-tuning recipe's settings (:mod:`modeconn.population.train` runs it); torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from modeconn.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """The fine-tuning recipe. Defaults are the paper's BERT recipe (lr 2e-5, bs 32).

    ``checkpoints`` lists fractions of the steps, each in (0, 1), at which the weights are
    also saved (see :func:`checkpoint_steps`); it does not change the trained member.
    """

    examples: int = 3200  # training examples seen per member (sets the schedule length)
    batch_size: int = 32
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps with linear warm-up
    max_length: int = 128
    bucket: int = 8  # batches per length-sorted chunk
    head_prefix: str = "classifier"  # parameters re-initialised from head_seed
    init_std: float = 0.02
    checkpoints: tuple[float, ...] = ()  # fractions of `steps` to save weights at

    def __post_init__(self) -> None:
        if self.examples < self.batch_size:
            raise ConfigError(
                f"train.examples must be at least train.batch_size ({self.batch_size}); "
                f"got {self.examples}"
            )
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"train.warmup must be in [0, 1); got {self.warmup}")
        bad = [f for f in self.checkpoints if not 0.0 < f < 1.0]
        if bad:
            raise ConfigError(
                f"train.checkpoints holds fractions of the training steps, each strictly "
                f"between 0 and 1 (the final weights are the member itself); got {bad[0]!r}: "
                "write e.g. `checkpoints: [0.25, 0.5]`"
            )

    @property
    def steps(self) -> int:
        return self.examples // self.batch_size
