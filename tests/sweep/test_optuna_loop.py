"""The asynchronous Optuna loop with real Optuna (SQLite storage) and trials that are threads
in this process writing metrics.jsonl like a job does (a stand-in for Slurm, named so): slots
refill as soon as a trial ends, the pruner's requests stop trials, a loop that died is resumed
with no trial lost or run twice. The same loop on real Slurm: test_optuna_async_slurm.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from miles_hydra.sweep import prune
from miles_hydra.sweep.manifest import Manifest, read_status, write_status
from miles_hydra.sweep.optuna_loop import (
    ATTR_JOB,
    AsyncStudy,
    LoopSettings,
    TrialInvalid,
    load_or_create_study,
    param_override,
)

STEPS = 5  # rollouts per trial
STEP_S = 0.01  # a rollout of a trial with x=1 takes this long


class ThreadTrials:
    """Each trial a thread: ``STEPS`` rollouts of ``x * STEP_S`` seconds each, metric ``x``; it
    stops at a prune request like the real job (status ``pruned``)."""

    def __init__(
        self, sweep_dir: Path, invalid: set[int] = frozenset(), dies: set[int] = frozenset()
    ) -> None:
        self.sweep_dir = sweep_dir
        self.invalid = invalid
        self.dies = dies  # trials whose job dies before it writes a status (Ray never came up)
        self.threads: dict[str, threading.Thread] = {}
        self.starts: list[tuple[float, int]] = []  # (time, trial) of each submission
        self.ends: dict[int, float] = {}
        self.values: dict[str, float] = {}

    def validate(self, num: int, overrides: list[str]) -> str:
        if num in self.invalid:
            raise TrialInvalid(f"variant #{num}: x refused")
        return "score"

    def submit(self, num: int, overrides: list[str], job_name: str) -> str:
        x = float(next(o for o in overrides if o.startswith("x=")).split("=")[1])
        job_id = f"thread-{num}"
        self.starts.append((time.monotonic(), num))
        thread = threading.Thread(target=self._job, args=(num, x, job_id), daemon=True)
        self.threads[job_id] = thread
        thread.start()
        return job_id

    def _job(self, num: int, x: float, job_id: str) -> None:
        run_dir = self.sweep_dir / str(num)
        run_dir.mkdir(parents=True, exist_ok=True)
        if num in self.dies:
            self.ends[num] = time.monotonic()
            return
        write_status(run_dir, "running")
        for step in range(STEPS):
            if prune.requested(run_dir):
                write_status(run_dir, "pruned")
                break
            time.sleep(x * STEP_S)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "score": x}) + "\n")
        else:
            write_status(run_dir, "completed")
            self.values[job_id] = x
        self.ends[num] = time.monotonic()

    def find(self, job_name: str) -> str | None:
        return None

    def poll(self, job_id: str) -> str:
        thread = self.threads.get(job_id)
        if thread is None:
            return "failed: unknown job"
        if thread.is_alive():
            return "running"
        return "failed: ray head timed out" if int(job_id.split("-")[1]) in self.dies else "done"

    def result(self, job_id: str) -> float | None:
        return self.values.get(job_id)


def _study(tmp_path: Path, n_trials: int, pruner=None, max_concurrent: int = 2):
    settings = LoopSettings("s", "maximize", n_trials, max_concurrent, poll_s=0.02)
    sampler = optuna.samplers.RandomSampler(seed=3)
    study = load_or_create_study(tmp_path, settings, sampler, pruner or optuna.pruners.NopPruner())
    manifest = Manifest("s", "exp", ["x"], scheduler="slurm")
    return study, settings, manifest


SPACE = {"x": optuna.distributions.IntUniformDistribution(1, 100)}


def test_a_slot_is_refilled_as_soon_as_its_trial_ends(tmp_path):
    """One long trial and four short ones, two slots: the short ones run one after another in
    the second slot while the long one still runs (synchronous batches would wait for it)."""
    study, settings, manifest = _study(tmp_path, n_trials=5)
    for x in (100, 2, 2, 2, 2):
        study.enqueue_trial({"x": x})
    runner = ThreadTrials(tmp_path)
    AsyncStudy(study, tmp_path, settings, SPACE, ["+sweep=s"], runner, manifest).run()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    starts = {num: t for t, num in runner.starts}
    assert all(starts[n] < runner.ends[0] for n in (2, 3, 4))  # no batch barrier
    for n in (2, 3, 4):  # and never more than max_concurrent=2 at once
        assert runner.ends[n - 1] <= starts[n]
    assert [v.num for v in Manifest.read(tmp_path).variants] == [0, 1, 2, 3, 4]
    assert study.trials[0].user_attrs["overrides"] == ["+sweep=s", "x=100"]


def test_pruned_trials_stop_and_say_so(tmp_path):
    pruner = optuna.pruners.ThresholdPruner(upper=50.0, n_warmup_steps=1)  # x > 50: pruned
    study, settings, manifest = _study(tmp_path, n_trials=4, pruner=pruner)
    runner = ThreadTrials(tmp_path)
    AsyncStudy(study, tmp_path, settings, SPACE, [], runner, manifest).run()
    for trial in study.trials:
        run_dir = tmp_path / str(trial.number)
        rollouts = len((run_dir / "metrics.jsonl").read_text().splitlines())
        if trial.params["x"] > 50:
            assert trial.state is TrialState.PRUNED
            assert read_status(run_dir)["state"] == "pruned"
            assert rollouts < STEPS  # stopped early
        else:
            assert trial.state is TrialState.COMPLETE and rollouts == STEPS
    assert any(t.state is TrialState.PRUNED for t in study.trials)


def test_invalid_trials_are_never_submitted_and_dead_jobs_are_failed(tmp_path):
    study, settings, manifest = _study(tmp_path, n_trials=4)
    runner = ThreadTrials(tmp_path, invalid={1}, dies={3})
    AsyncStudy(study, tmp_path, settings, SPACE, [], runner, manifest).run()
    complete, fail = TrialState.COMPLETE, TrialState.FAIL
    assert [t.state for t in study.trials] == [complete, fail, complete, fail]
    assert [num for _, num in runner.starts] == [0, 2, 3]
    status = read_status(tmp_path / "3")  # the job never said: the loop says it failed
    assert status["state"] == "failed" and status["error"] == "failed: ray head timed out"


def test_a_resumed_loop_reattaches_running_trials_and_runs_none_twice(tmp_path):
    study, settings, manifest = _study(tmp_path, n_trials=4)
    runner = ThreadTrials(tmp_path)
    first = AsyncStudy(study, tmp_path, settings, SPACE, [], runner, manifest)
    first._fill_slots()  # the launcher submitted two trials, then died
    assert len(runner.starts) == 2
    orphan = study.ask(SPACE)  # and had asked a third it never submitted
    study2, _, _ = _study(tmp_path, n_trials=4)  # a new launcher, same storage
    AsyncStudy(study2, tmp_path, settings, SPACE, [], runner, manifest).run()
    trials = study2.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert sorted(num for _, num in runner.starts) == [0, 1, 2, 3]  # each submitted once
    assert trials[orphan.number].user_attrs[ATTR_JOB] == f"thread-{orphan.number}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.5e-4, "lr=0.00015"), (True, "lr=true"), ("tis", "lr=tis"), (3, "lr=3")],
)
def test_param_override(value, expected):
    assert param_override("lr", value) == expected
