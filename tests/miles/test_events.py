"""miles' TensorBoard events -> metrics.jsonl records under the local engine's names and steps.

The events are written by torch's SummaryWriter (what miles' TensorboardBackend uses), one
writer per miles process, in the order and on the steps miles logs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from miles_hydra.backends.miles.events import (
    EventFollower,
    final_metrics,
    following,
    local_name,
    read_records,
    renames,
)


def _follower(tmp_path: Path, steps_per_rollout: int = 2) -> EventFollower:
    return EventFollower(tmp_path / "tb", tmp_path / "metrics.jsonl", "gsm8k", steps_per_rollout)


def _rollout_manager(w: SummaryWriter, rollout: int) -> None:
    """What miles' RolloutManager logs per rollout (rollout/step = the rollout id)."""
    w.add_scalar("rollout/response_len/mean", 10.0 + rollout, rollout)
    w.add_scalar("perf/rollout_time", 2.0, rollout)
    w.flush()


def _evaluate(w: SummaryWriter, step: int, accuracy: float) -> None:
    w.add_scalar("eval/eval", accuracy, step)
    w.add_scalar("eval/eval-truncated_ratio", 0.25, step)
    w.add_scalar("eval/eval/response_len/mean", 7.0, step)
    w.flush()


def _trainer(w: SummaryWriter, rollout: int, steps: int) -> None:
    """The trainer's rank 0: the batch's rollout/* at the rollout, train/* per optimizer step."""
    w.add_scalar("rollout/raw_reward", 0.5 + 0.1 * rollout, rollout)
    for i in range(steps):
        w.add_scalar("train/loss", float(i), rollout * steps + i)
        w.add_scalar("train/critic-value_loss", 1.0, rollout * steps + i)
    w.flush()


def test_names_follow_one_table():
    table = renames("gsm8k")
    assert local_name("eval/eval", table) == "eval/gsm8k"
    assert local_name("eval/eval-truncated_ratio", table) == "eval/gsm8k-truncated_ratio"
    assert local_name("eval/eval/response_len/mean", table) == "eval/gsm8k/response_len/mean"
    assert local_name("eval/evaluator", table) == "eval/evaluator"  # a prefix, not a name
    assert local_name("rollout/spec_accept_length", table) == "rollout/spec_accept_length"


def test_two_processes_become_local_records_with_local_steps(tmp_path):
    follower = _follower(tmp_path)
    manager = SummaryWriter(str(tmp_path / "tb"), filename_suffix=".manager")
    trainer = SummaryWriter(str(tmp_path / "tb"), filename_suffix=".trainer")
    _evaluate(manager, 0, 0.1)  # before training: 0 rollouts done
    written = []
    for rollout in range(3):
        _rollout_manager(manager, rollout)
        written += follower.poll()
        _trainer(trainer, rollout, steps=2)
        _evaluate(manager, rollout, 0.2 + 0.1 * rollout)  # after rollout r: r + 1 done
        written += follower.poll()
    manager.close()
    trainer.close()
    written += follower.close()

    assert written == read_records(tmp_path / "metrics.jsonl")
    rollouts = [r for r in written if "step" in r]
    evals = [r for r in written if "eval/step" in r]
    assert [r["step"] for r in rollouts] == [0, 1, 2]  # each once, complete, in order
    assert rollouts[1] == {
        "step": 1,
        "perf/rollout_time": 2.0,
        "rollout/raw_reward": pytest.approx(0.6),
        "rollout/response_len/mean": 11.0,
        "train/critic-value_loss": 1.0,
        "train/loss": 0.5,  # mean over the rollout's two optimizer steps, as the local engine
    }
    assert [r["eval/step"] for r in evals] == [0, 1, 2, 3]
    assert evals[0] == {
        "eval/step": 0,
        "eval/gsm8k": pytest.approx(0.1),
        "eval/gsm8k-truncated_ratio": 0.25,
        "eval/gsm8k/response_len/mean": 7.0,
    }
    assert evals[0]["eval/gsm8k"] == 0.1  # float32 as written, not 0.10000000149011612
    final = final_metrics(written)
    assert final["step"] == 2 and final["eval/step"] == 3
    assert final["eval/gsm8k"] == pytest.approx(0.4)


def test_a_rollout_waits_for_every_process_that_logs_it(tmp_path):
    follower = _follower(tmp_path, steps_per_rollout=1)
    manager = SummaryWriter(str(tmp_path / "tb"), filename_suffix=".manager")
    trainer = SummaryWriter(str(tmp_path / "tb"), filename_suffix=".trainer")
    _rollout_manager(manager, 0)
    _trainer(trainer, 0, steps=1)
    _rollout_manager(manager, 1)  # the manager is ahead; the trainer has not moved past 0
    assert follower.poll() == []
    _trainer(trainer, 1, steps=1)  # now both are past rollout 0
    assert [r["step"] for r in follower.poll()] == [0]
    manager.close()
    trainer.close()
    (last,) = follower.close()
    assert last["step"] == 1 and {"train/loss", "perf/rollout_time"} <= set(last)


def test_an_earlier_attempts_events_are_not_appended_again(tmp_path):
    old = SummaryWriter(str(tmp_path / "tb"), filename_suffix=".attempt0")
    _rollout_manager(old, 0)
    old.close()
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "perf/rollout_time": 2.0}) + "\n"
    )
    follower = _follower(tmp_path)  # a requeued job: attempt 1 starts here
    new = SummaryWriter(str(tmp_path / "tb"), filename_suffix=".attempt1")
    _rollout_manager(new, 1)
    new.close()
    follower.close()
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl")] == [0, 1]


def test_following_polls_while_the_body_runs_and_closes_after(tmp_path):
    follower = _follower(tmp_path, steps_per_rollout=1)
    writer = SummaryWriter(str(tmp_path / "tb"))
    with following(follower, interval_s=0.05):
        for rollout in range(2):
            _rollout_manager(writer, rollout)
        writer.close()
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl")] == [0, 1]
