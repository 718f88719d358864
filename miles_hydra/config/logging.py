"""`logging` group: experiment tracking.

Every run writes ``<run_dir>/metrics.jsonl`` whatever the trackers; ``trackers`` adds Weights &
Biases, TensorBoard and/or MLflow, each under the same metric names (miles' names) and step axes
(``rollout/step``, ``train/step``, ``eval/step``), for both backends. Secrets (WANDB_API_KEY,
MLFLOW_TRACKING_TOKEN, ...) come only from the environment.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from miles_hydra.errors import ConfigError


class Tracker(enum.Enum):
    wandb = "wandb"  # Weights & Biases
    tensorboard = "tensorboard"  # TensorBoard event files in <run_dir>/tensorboard
    mlflow = "mlflow"  # MLflow tracking (a SQLite store in the run directory by default)


class WandbMode(enum.Enum):
    online = "online"  # sync to the W&B server (needs WANDB_API_KEY)
    offline = "offline"  # write runs locally; `wandb sync` them later
    disabled = "disabled"  # no W&B at all (wandb calls become no-ops)


TENSORBOARD_SUBDIR = "tensorboard"  # <run_dir>/tensorboard: event files (both backends)
MLFLOW_DB = "mlflow.db"  # <run_dir>/mlflow.db: the default MLflow store


@dataclass
class LoggingConfig:
    trackers: list[Tracker] = field(default_factory=list)  # experiment trackers; [] = none
    wandb_project: Optional[str] = None  # W&B project
    wandb_entity: Optional[str] = None  # W&B team
    wandb_group: Optional[str] = None  # W&B group; None = the sweep id or experiment name
    wandb_mode: WandbMode = WandbMode.offline  # W&B mode (online needs WANDB_API_KEY)
    # A server (http://host:5000), a database (sqlite:////abs/mlflow.db) or a file store
    # (file:/abs/mlruns; MLflow 3 wants MLFLOW_ALLOW_FILE_STORE=true for it).
    mlflow_tracking_uri: Optional[str] = None  # MLflow store; None = sqlite:///<run_dir>/mlflow.db
    mlflow_experiment_name: Optional[str] = None  # MLflow experiment; None = experiment_name
    progress_bar: bool = True  # console progress bar with the key numbers
    # false (launch/console.py): the local engine's actor output in <run_dir>/logs/trainer.log
    # and engine_<i>.log, library warnings (either backend) in <run_dir>/logs/warnings.log,
    # counted once at the end; true: all of it on the console as it comes
    verbose: bool = False  # actor output and every warning on the console as they come

    def uses(self, tracker: Tracker) -> bool:
        """Whether ``tracker`` is one of the selected trackers."""
        return tracker in self.trackers

    def mlflow_uri(self, run_dir: str) -> str:
        """The MLflow store of a run in ``run_dir`` (``mlflow_tracking_uri`` when set)."""
        return self.mlflow_tracking_uri or f"sqlite:///{run_dir.rstrip('/')}/{MLFLOW_DB}"

    def validate(self) -> None:
        if len(set(self.trackers)) != len(self.trackers):
            raise ConfigError(
                "logging.trackers",
                [t.value for t in self.trackers],
                "names a tracker twice",
                "list each of wandb, tensorboard, mlflow at most once",
            )
        if self.uses(Tracker.wandb) and not self.wandb_project:
            raise ConfigError(
                "logging.wandb_project",
                None,
                "is required with logging=wandb",
                "set logging.wandb_project=<project>",
            )

    def __post_init__(self) -> None:
        self.validate()
