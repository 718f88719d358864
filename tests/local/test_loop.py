"""The driver through real Ray: a short run, preemption + resume, crash + resume, NaN guard.

One local Ray instance serves the module (started here, so ``loop.train`` joins it instead
of starting its own); each run still creates and drops its own actors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.tiny import TINY_RUN

from miles_hydra.backends.local import checkpoint, loop
from miles_hydra.backends.local.metrics import read_records
from miles_hydra.config import RunConfig
from miles_hydra.config.store import materialize
from miles_hydra.errors import TrainingError

TINY = [*TINY_RUN, "rollout.eval_interval=2", "data.num_eval_prompts=8", "data.warmup_sft_steps=2"]


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_worker_niceness", "0")  # as actors.ray_session does
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def make_cfg(compose):
    def make(*overrides: str) -> RunConfig:
        return materialize(compose([*TINY, *overrides]))

    return make


def rollout_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_records(run_dir / "metrics.jsonl") if "step" in r]


def test_preempted_run_resumes_with_nothing_lost_or_repeated(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    cfg = make_cfg(
        "rollout.num_rollout=4",
        "checkpoint.save_interval=3",
        "logging=wandb",
        "logging.wandb_project=test",
        "logging.wandb_mode=offline",
    )
    calls = iter(range(100))  # asked before each of the 2 warm-start steps, then per rollout
    monkeypatch.setattr(loop.preemption, "requested", lambda: next(calls) == 3)
    first = loop.train(cfg, tmp_path)
    assert first["preempted"] is True and first["step"] == 1
    ckpt = checkpoint.find_latest(tmp_path / "checkpoints")
    assert ckpt.name == "step_000002"  # preemption forces a checkpoint after rollout 1
    state = checkpoint.load_driver_state(ckpt)
    assert state["wandb_id"] and state["data"]["kind"] == "synthetic"
    assert rollout_steps(tmp_path) == [0, 1]

    monkeypatch.setattr(loop.preemption, "requested", lambda: False)
    final = loop.train(cfg, tmp_path)
    assert final["preempted"] is False and final["step"] == 3
    assert rollout_steps(tmp_path) == [0, 1, 2, 3]
    records = read_records(tmp_path / "metrics.jsonl")
    assert [r["eval/step"] for r in records if "eval/step" in r] == [-1, 0, 2, 4]
    assert sum("warmup/steps" in r for r in records) == 1  # no second warm-start on resume
    last = [r for r in records if "step" in r][-1]
    for key in (
        "rollout/raw_reward",
        "rollout/response_len/mean",
        "train/train_rollout_logprob_abs_diff",
        "train/train_rollout_kl",
        "train/pg_clipfrac",
        "train/ppo_kl",
        "perf/rollout_time",
        "perf/update_weights_time",
        "perf/train_time",
        "perf/step_time",
        "perf/tokens_per_gpu_per_sec",
    ):
        assert key in last, key
    assert "eval/arithmetic" in final
    assert checkpoint.find_latest(tmp_path / "checkpoints").name == "step_000004"
    assert len(checkpoint.list_checkpoints(tmp_path / "checkpoints")) == 2  # keep_last
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} >= {
        "reward.png",
        "eval_accuracy.png",
        "mismatch.png",
        "timings.png",
    }
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and all(p.name.endswith(state["wandb_id"]) for p in runs)  # same run resumed


def test_stop_during_the_warm_start_ends_the_run_before_rl(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    """A stop request between two warm-start calls ends the run there (preempted, no step, no
    checkpoint: the next attempt repeats the warm-start), not after the whole warm-start."""
    cfg = make_cfg("rollout.num_rollout=2", "data.warmup_sft_steps=20")
    calls = iter(range(100))
    monkeypatch.setattr(loop.preemption, "requested", lambda: next(calls) == 3)
    result = loop.train(cfg, tmp_path)
    assert result["preempted"] is True and result["step"] is None
    assert next(calls) == 4  # asked 4 times: before each of the first 4 of 10 warm-start calls
    assert rollout_steps(tmp_path) == []
    assert not any("warmup/steps" in r for r in read_records(tmp_path / "metrics.jsonl"))
    assert checkpoint.find_latest(tmp_path / "checkpoints") is None


def test_crashed_run_resumes_after_last_checkpoint(make_cfg, tmp_path: Path, monkeypatch) -> None:
    cfg = make_cfg(
        "rollout.num_rollout=3", "checkpoint.save_interval=1", "rollout.eval_interval=null"
    )
    original = loop._Loop._step

    def crash_at_2(self, rollout_id: int) -> None:
        if rollout_id == 2:
            raise RuntimeError("node lost")
        original(self, rollout_id)

    monkeypatch.setattr(loop._Loop, "_step", crash_at_2)
    with pytest.raises(RuntimeError, match="node lost"):
        loop.train(cfg, tmp_path)
    assert checkpoint.find_latest(tmp_path / "checkpoints").name == "step_000002"
    monkeypatch.setattr(loop._Loop, "_step", original)
    final = loop.train(cfg, tmp_path)
    assert final["step"] == 2
    assert rollout_steps(tmp_path) == [0, 1, 2]


def test_nan_loss_stops_with_training_error_and_keeps_checkpoint(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    import ray
    import torch

    cfg = make_cfg(
        "rollout.num_rollout=3", "checkpoint.save_interval=1", "rollout.eval_interval=null"
    )
    original = loop._Loop._step

    def poison(trainer) -> None:  # runs on the trainer actor, through Ray's __ray_call__
        with torch.no_grad():
            next(trainer.policy.lm.parameters()).fill_(float("nan"))

    def poison_at_1(self, rollout_id: int) -> None:
        if rollout_id == 1:
            ray.get(self.actors.trainer.__ray_call__.remote(poison), timeout=60)
        original(self, rollout_id)

    monkeypatch.setattr(loop._Loop, "_step", poison_at_1)
    with pytest.raises(TrainingError, match="non-finite"):
        loop.train(cfg, tmp_path)
    good = checkpoint.find_latest(tmp_path / "checkpoints")
    assert good.name == "step_000001"
    assert rollout_steps(tmp_path) == [0]
    config = json.loads((good / checkpoint.MODEL_DIR / "config.json").read_text())
    assert config["hidden_size"] == 32
