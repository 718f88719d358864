"""`logging` group: experiment tracking."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from miles_hydra.errors import ConfigError


class Tracker(enum.Enum):
    none = "none"  # metrics JSONL + plots in the run directory only
    wandb = "wandb"  # also Weights & Biases


@dataclass
class LoggingConfig:
    name: str = "none"  # preset name
    tracker: Tracker = Tracker.none  # experiment tracker
    wandb_project: Optional[str] = None  # W&B project
    wandb_entity: Optional[str] = None  # W&B team
    wandb_group: Optional[str] = None  # W&B group; None = the sweep id or experiment name
    wandb_mode: str = "offline"  # online | offline | disabled (online needs WANDB_API_KEY)
    progress_bar: bool = True  # console progress bar with the key numbers

    def validate(self) -> None:
        if self.wandb_mode not in ("online", "offline", "disabled"):
            raise ConfigError(
                "logging.wandb_mode",
                self.wandb_mode,
                "is not a W&B mode",
                "use online, offline or disabled",
            )
        if self.tracker is Tracker.wandb and not self.wandb_project:
            raise ConfigError(
                "logging.wandb_project",
                None,
                "is required with logging=wandb",
                "set logging.wandb_project=<project>",
            )

    def __post_init__(self) -> None:
        self.validate()
