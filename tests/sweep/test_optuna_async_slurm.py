"""Asynchronous Optuna on the real single-node Slurm: trials validated and submitted as their own
jobs, two at a time; the pruner stops them cleanly from their live metrics (checkpoint kept,
job COMPLETED, status ``pruned``); the launcher is killed mid-study and the same command with
``hydra.sweep.dir`` resumes it with no trial lost or run twice.

Skipped with a reason when no Slurm node is idle here (``bash scripts/slurm_single_node.sh up``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from support.slurmenv import NO_SLURM, wait_for_state
from support.tiny import TINY_BARE_RUN

from miles_hydra.sweep.manifest import read_status
from miles_hydra.sweep.optuna_loop import ATTR_JOB, STORAGE_FILE, storage_url

REPO = Path(__file__).resolve().parents[2]
N_TRIALS = 3
ARGS = [
    "-m",
    "+sweep=optuna_async_lr_tis",
    *TINY_BARE_RUN,
    "rollout.num_rollout=40",  # long unless pruned
    "objective_metric=rollout/raw_reward",
    "cluster=slurm",
    "cluster.cpus_per_task=1",
    "cluster.mem_gb=4",
    "cluster.ray_startup_timeout_s=300",  # a loaded node starts Ray slowly
    f"hydra.sweeper.n_trials={N_TRIALS}",
    "hydra.sweeper.max_concurrent=2",
    "hydra.sweeper.poll_s=1",
    "hydra.sweeper.pruner=threshold",
    "hydra.sweeper.prune_above=-1",  # every reward is above: pruned after the warm-up rollout
    "hydra.sweeper.pruner_warmup_steps=1",
]
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(bool(NO_SLURM), reason=NO_SLURM),
]


def _launcher(tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), *ARGS, f"output_root={tmp_path}", *extra],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _submitted(sweep_dir: Path) -> int:
    manifest = sweep_dir / "sweep.json"
    return len(json.loads(manifest.read_text())["variants"]) if manifest.exists() else 0


@pytest.mark.timeout(600)
def test_async_study_prunes_and_resumes_after_its_launcher_is_killed(tmp_path):
    first = _launcher(tmp_path)
    try:
        _wait_for(lambda: list(tmp_path.rglob(STORAGE_FILE)), 120, "the study's storage")
        (storage,) = tmp_path.rglob(STORAGE_FILE)
        sweep_dir = storage.parent
        _wait_for(lambda: _submitted(sweep_dir) >= 1, 120, "a first trial")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the launcher dies; its jobs run on in Slurm
        first.wait(timeout=30)
    resumed = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch.py"),
            *ARGS,
            f"output_root={tmp_path}",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert "resuming study" in resumed.stderr + resumed.stdout

    study = optuna.load_study(study_name="optuna_async_lr_tis", storage=storage_url(sweep_dir))
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(N_TRIALS))  # none lost, none extra
    assert [t.state for t in trials] == [TrialState.PRUNED] * N_TRIALS
    job_ids = [t.user_attrs[ATTR_JOB] for t in trials]
    assert len(set(job_ids)) == N_TRIALS  # one job per trial: none ran twice
    named = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobName", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert sorted(named) == [f"optuna_async_lr_tis_t{n}" for n in range(N_TRIALS)]
    for trial, job_id in zip(trials, job_ids):
        run_dir = sweep_dir / str(trial.number)
        assert read_status(run_dir)["state"] == "pruned"
        assert wait_for_state(job_id, "COMPLETED", timeout_s=120)  # stopped cleanly, not cancelled
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
        assert steps == list(range(len(steps))) and 1 <= len(steps) < 40  # stopped early
        assert any((run_dir / "checkpoints").iterdir())  # its checkpoint stays
