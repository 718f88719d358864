"""`logging` group: experiment tracking."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from miles_hydra.errors import ConfigError


class Tracker(enum.Enum):
    none = "none"  # metrics JSONL + plots in the run directory only
    wandb = "wandb"  # also Weights & Biases


class WandbMode(enum.Enum):
    online = "online"  # sync to the W&B server (needs WANDB_API_KEY)
    offline = "offline"  # write runs locally; `wandb sync` them later
    disabled = "disabled"  # no W&B at all (wandb calls become no-ops)


@dataclass
class LoggingConfig:
    tracker: Tracker = Tracker.none  # experiment tracker
    wandb_project: Optional[str] = None  # W&B project
    wandb_entity: Optional[str] = None  # W&B team
    wandb_group: Optional[str] = None  # W&B group; None = the sweep id or experiment name
    wandb_mode: WandbMode = WandbMode.offline  # W&B mode (online needs WANDB_API_KEY)
    progress_bar: bool = True  # console progress bar with the key numbers

    def validate(self) -> None:
        if self.tracker is Tracker.wandb and not self.wandb_project:
            raise ConfigError(
                "logging.wandb_project",
                None,
                "is required with logging=wandb",
                "set logging.wandb_project=<project>",
            )

    def __post_init__(self) -> None:
        self.validate()
