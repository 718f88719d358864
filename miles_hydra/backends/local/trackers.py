"""Experiment trackers of the local engine: W&B, TensorBoard, MLflow (``logging.trackers``).

Each gets the records that go to metrics.jsonl, under the same names (miles' names) and on
miles' step axes: ``rollout/*`` and ``perf/*`` on the rollout, ``train/*`` on the optimizer step
(``train/step`` = the rollout's last optimizer step), ``eval/*`` on ``eval/step`` (rollouts done).
So a local run's TensorBoard or MLflow curves line up with a miles run's.

- W&B: ``wandb.init`` in ``<run_dir>`` (offline unless ``logging.wandb_mode=online``); a resumed
  run continues the same W&B run (its id is in the checkpoint).
- TensorBoard: event files in ``<run_dir>/tensorboard`` (``tensorboard --logdir <run_dir>``).
- MLflow: one MLflow run per job in ``logging.mlflow_uri(run_dir)`` (a SQLite store in the run
  directory by default); a resumed job continues it (its id is in ``<run_dir>/mlflow_run_id``).
  Credentials for a server come from the environment (MLFLOW_TRACKING_TOKEN, ...), never the config.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Protocol

from miles_hydra.config import RunConfig
from miles_hydra.config.logging import TENSORBOARD_SUBDIR, Tracker

log = logging.getLogger(__name__)

MLFLOW_RUN_ID_FILE = "mlflow_run_id"  # <run_dir>/mlflow_run_id: the run a resumed job continues
STEP_KEYS = ("step", "eval/step", "rollout/step", "train/step")  # axes, not metrics


class MetricTracker(Protocol):
    """Where the records of metrics.jsonl also go."""

    def log_rollout(self, record: dict[str, Any], step: int, train_step: int) -> None: ...

    def log_eval(self, record: dict[str, Any], eval_step: int) -> None: ...

    def close(self) -> None: ...


def open_trackers(
    cfg: RunConfig, run_dir: Path, start_step: int, wandb_id: str | None
) -> list[MetricTracker]:
    """The trackers of ``logging.trackers``, in that order."""
    makers = {
        Tracker.wandb: lambda: WandbTracker(cfg, run_dir, wandb_id),
        Tracker.tensorboard: lambda: TensorboardTracker(run_dir / TENSORBOARD_SUBDIR),
        Tracker.mlflow: lambda: MlflowTracker(cfg, run_dir, resume=start_step > 0),
    }
    return [makers[t]() for t in cfg.logging.trackers]


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The metrics of a record: finite or not, numbers only, axes left out."""
    return {
        k: float(v)
        for k, v in record.items()
        if k not in STEP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _is_train(key: str) -> bool:
    return key.startswith("train/")


class WandbTracker:
    """A W&B run with miles' step axes (``define_metric``)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, wandb_id: str | None) -> None:
        import wandb

        lg = cfg.logging
        os.environ.setdefault("WANDB_MODE", lg.wandb_mode.value)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=lg.wandb_project,
            entity=lg.wandb_entity,
            group=lg.wandb_group or cfg.experiment_name,
            name=run_dir.name,
            id=wandb_id,
            resume="allow" if wandb_id else None,
            mode=lg.wandb_mode.value,
            dir=str(run_dir),
            config={"run_dir": str(run_dir)},
        )
        for axis in ("rollout/step", "train/step", "eval/step"):
            self.run.define_metric(axis)
        for prefix, axis in (("rollout", "rollout/step"), ("perf", "rollout/step")):
            self.run.define_metric(f"{prefix}/*", step_metric=axis)
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("eval/*", step_metric="eval/step")

    @property
    def id(self) -> str:
        return self.run.id

    def log_rollout(self, record: dict[str, Any], step: int, train_step: int) -> None:
        self.run.log({**record, "rollout/step": step, "train/step": train_step})

    def log_eval(self, record: dict[str, Any], eval_step: int) -> None:
        self.run.log(record)

    def close(self) -> None:
        self.run.finish()


class TensorboardTracker:
    """Scalars in TensorBoard event files, each on its miles axis."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(log_dir))

    def log_rollout(self, record: dict[str, Any], step: int, train_step: int) -> None:
        for key, value in numbers(record).items():
            self.writer.add_scalar(key, value, train_step if _is_train(key) else step)

    def log_eval(self, record: dict[str, Any], eval_step: int) -> None:
        for key, value in numbers(record).items():
            self.writer.add_scalar(key, value, eval_step)

    def close(self) -> None:
        self.writer.close()


_MLFLOW_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_\-./ ]")  # what MLflow accepts in a metric key


def mlflow_key(key: str) -> str:
    """``eval/gsm8k-pass@4`` -> ``eval/gsm8k-pass_4`` (MLflow refuses ``@`` and friends)."""
    return _MLFLOW_BAD_CHARS.sub("_", key)


class MlflowTracker:
    """One MLflow run per job, metrics on miles' step axes."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool) -> None:
        from mlflow.tracking import MlflowClient

        lg = cfg.logging
        self.uri = lg.mlflow_uri(str(run_dir))
        self.client = MlflowClient(tracking_uri=self.uri)
        id_file = run_dir / MLFLOW_RUN_ID_FILE
        if resume and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            name = lg.mlflow_experiment_name or cfg.experiment_name
            found = self.client.get_experiment_by_name(name)
            experiment_id = found.experiment_id if found else self.client.create_experiment(name)
            run = self.client.create_run(experiment_id, run_name=run_dir.name)
            self.run_id = run.info.run_id
            id_file.write_text(self.run_id + "\n")
            self.client.log_param(self.run_id, "run_dir", str(run_dir))
        log.info("MLflow run %s in %s", self.run_id, self.uri)

    def _log(self, values: dict[str, float], step_of: Any) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        metrics = [Metric(mlflow_key(k), v, now, step_of(k)) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_rollout(self, record: dict[str, Any], step: int, train_step: int) -> None:
        self._log(numbers(record), lambda k: train_step if _is_train(k) else step)

    def log_eval(self, record: dict[str, Any], eval_step: int) -> None:
        self._log(numbers(record), lambda k: eval_step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
