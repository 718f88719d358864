"""logging.trackers for the local engine: TensorBoard event files and an MLflow store, read back.

A tiny local run through real Ray logs to both; the test reads the events with TensorBoard's
EventAccumulator and the store with MLflow's client and compares them with metrics.jsonl: same
metric names, miles' step axes (rollout, optimizer step, rollouts done).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.tiny import TINY_RUN

from miles_hydra.backends.local import loop
from miles_hydra.backends.local.metrics import MetricsLogger, read_records
from miles_hydra.backends.local.trackers import MLFLOW_RUN_ID_FILE, mlflow_key
from miles_hydra.config.store import materialize

TINY = [*TINY_RUN, "rollout.eval_interval=1", "data.num_eval_prompts=4", "data.warmup_sft_steps=0"]


@pytest.fixture(scope="module")
def ray_instance():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _scalars(event_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _mlflow_history(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
    }


@pytest.mark.slow
def test_local_run_logs_the_same_metrics_to_tensorboard_and_mlflow(ray_instance, compose, tmp_path):
    cfg = materialize(
        compose(
            [
                *TINY,
                "rollout.num_rollout=2",
                "rollout.num_steps_per_rollout=2",  # two optimizer steps per rollout
                "logging=tensorboard",
                "logging.trackers=[tensorboard,mlflow]",
            ]
        )
    )
    assert cfg.rollout.num_steps_per_rollout == 2
    result = loop.train(cfg, tmp_path)
    records = read_records(tmp_path / "metrics.jsonl")
    rollout_keys = {k for r in records if "step" in r for k in r if k != "step"}
    eval_keys = {k for r in records if "eval/step" in r for k in r if k != "eval/step"}
    assert "eval/arithmetic" in eval_keys and "rollout/raw_reward" in rollout_keys

    tb = _scalars(tmp_path / "tensorboard")
    assert set(tb) == rollout_keys | eval_keys  # every metric, under its own name
    assert [s for s, _ in tb["rollout/raw_reward"]] == [0, 1]  # the rollout
    assert [s for s, _ in tb["train/loss"]] == [1, 3]  # the rollout's last optimizer step
    assert [s for s, _ in tb["eval/arithmetic"]] == [0, 1, 2]  # rollouts done
    last = [r for r in records if "step" in r][-1]
    assert tb["rollout/raw_reward"][-1][1] == pytest.approx(last["rollout/raw_reward"])

    run_id = (tmp_path / MLFLOW_RUN_ID_FILE).read_text().strip()
    history = _mlflow_history(f"sqlite:///{tmp_path}/mlflow.db", run_id)
    assert set(history) == {mlflow_key(k) for k in rollout_keys | eval_keys}
    assert [s for s, _ in history["train/loss"]] == [1, 3]
    assert [s for s, _ in history["eval/arithmetic"]] == [0, 1, 2]
    assert history["eval/arithmetic"][-1][1] == pytest.approx(result["eval/arithmetic"])


def test_mlflow_run_continues_on_resume_and_keys_are_mlflow_safe(compose, tmp_path):
    cfg = materialize(compose([*TINY, "logging=mlflow", "logging.progress_bar=false"]))
    first = MetricsLogger(cfg, tmp_path, start_step=0)
    first.log_rollout(0, {"rollout/raw_reward": 0.25})
    first.log_eval(1, {"eval/arithmetic": 0.5, "eval/arithmetic-pass@4": 1.0})
    first.close(write_plots_too=False)
    resumed = MetricsLogger(cfg, tmp_path, start_step=1)
    resumed.log_rollout(1, {"rollout/raw_reward": 0.75})
    resumed.close(write_plots_too=False)

    run_id = (tmp_path / MLFLOW_RUN_ID_FILE).read_text().strip()
    history = _mlflow_history(cfg.logging.mlflow_uri(str(tmp_path)), run_id)
    assert history["rollout/raw_reward"] == [(0, 0.25), (1, 0.75)]  # one run across attempts
    assert history["eval/arithmetic-pass_4"] == [(1, 1.0)]
    assert mlflow_key("train/lr-pg_0") == "train/lr-pg_0"
