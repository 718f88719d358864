"""`checkpoint` group: where weights come from and where checkpoints go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from miles_hydra.errors import ConfigError


@dataclass
class CheckpointConfig:
    load: Optional[str] = None  # resume from here; None = <run_dir>/checkpoints
    save: Optional[str] = None  # save here; None = <run_dir>/checkpoints
    ref_load: Optional[str] = None  # reference weights (Megatron torch_dist dir for miles)
    save_interval: Optional[int] = 10  # save every n rollouts (the last one is always saved)
    keep_last: int = 2  # checkpoints kept on disk (older ones are deleted)
    resume: bool = True  # resume from the latest checkpoint in `load` if there is one

    def validate(self) -> None:
        if self.save_interval is not None and self.save_interval < 1:
            raise ConfigError(
                "checkpoint.save_interval",
                self.save_interval,
                "must be >= 1 or null",
            )
        if self.keep_last < 1:
            raise ConfigError("checkpoint.keep_last", self.keep_last, "must be >= 1")

    def __post_init__(self) -> None:
        self.validate()
