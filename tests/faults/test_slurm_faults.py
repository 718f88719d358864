"""Faults of a Slurm job, on the real single-node Slurm of this machine: the job's driver or its
Ray raylet killed with SIGKILL, USR2 + requeue in a loop, and secrets kept out of Slurm's record
of the job. The job function is ``faultjob.FaultJob``, a resumable step counter (the real
engine's preemption and resume: tests/cluster/test_cluster_engine.py)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from pathlib import Path

import cloudpickle
import pytest
from conftest import compose_config, materialize
from support.slurmenv import cancelled_on_failure, slurm_only

from faults import faultjob
from miles_hydra.cluster import allocation, submit, watch
from miles_hydra.errors import ClusterError
from miles_hydra.sweep.manifest import read_status

cloudpickle.register_pickle_by_value(faultjob)

pytestmark = [slurm_only, pytest.mark.slurm]
REPORT_S = 10.0  # a dead job is reported within this long


def _cfg(tmp_path: Path, *overrides: str):
    base = [
        "cluster=slurm",
        "cluster.cpus_per_task=1",
        "cluster.mem_gb=3",
        "cluster.timeout_min=15",
        "cluster.ray_startup_timeout_s=150",
    ]
    return materialize(compose_config([*base, *overrides], output_root=tmp_path))


def _wait(what: str, condition, job, timeout_s: float = 200.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        state = watch.scheduler_state(job.job_id)
        assert state not in watch.DEAD_STATES, f"job {job.job_id} {state}: {job.stderr()}"
        time.sleep(0.3)


def _pids_with(marker: str) -> dict[int, list[str]]:
    """Processes whose command line holds ``marker`` (read from /proc; a test's victim list)."""
    found = {}
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            argv = open(path, "rb").read().split(b"\0")
        except OSError:
            continue
        if any(marker.encode() in arg for arg in argv):
            found[int(path.split("/")[2])] = [a.decode(errors="replace") for a in argv if a]
    return found


def _submit(cfg, run_dir: Path, job_fn) -> object:
    """Submit an allocation task that runs in ``run_dir`` itself (a resume reuses it)."""
    executor = submit.make_executor(cfg.cluster, run_dir.parent / ".submitit" / "%j", "mh_fault")
    return executor.submit(allocation.AllocationTask(job_fn), cfg, str(run_dir), False)


def _dies_and_is_reported(job, run_dir: Path, kill, without_result: bool = True) -> float:
    """Kill with ``kill()``; the launcher's wait must end fast: with the Slurm state when the
    job died without a result, else with the job's own error and its logs."""
    killed = time.monotonic()
    kill()
    with pytest.raises(ClusterError) as info:
        submit.wait_for(job, run_dir)
    reported = time.monotonic() - killed
    message = str(info.value)
    status = read_status(run_dir)
    assert status["state"] == "failed", status
    if without_result:
        assert f"job {job.job_id} ended FAILED in Slurm without a result" in message, message
        assert status["slurm_state"] == "FAILED", status
    else:
        assert f"job {job.job_id} failed; logs: " in message, message
    return reported


@pytest.mark.fault("kill -9 of the job driver")
@pytest.mark.timeout(420)
def test_killed_driver_is_reported_within_seconds_and_the_run_resumes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run_dir = tmp_path / "run"
    job = _submit(cfg, run_dir, faultjob.FaultJob(12, step_s=0.3))
    with cancelled_on_failure(job):
        _wait("the job to step", lambda: len(faultjob.done_steps(run_dir)) >= 2, job)
        pid = int((run_dir / "driver.pid").read_text())
        reported = _dies_and_is_reported(job, run_dir, lambda: os.kill(pid, signal.SIGKILL))
    assert reported < REPORT_S, f"reported {reported:.1f} s after the kill"
    left = glob.glob(f"/tmp/mh_ray_{job.job_id}_*")  # a killed job cannot remove its Ray dir
    again = _submit(cfg, run_dir, faultjob.FaultJob(12, step_s=0.05))
    with cancelled_on_failure(again):
        result = submit.wait_for(again, run_dir)
    assert result["step"] == 12 and result["resumed_from"] >= 2
    assert faultjob.done_steps(run_dir) == list(range(1, 13))  # none lost, none repeated
    assert read_status(run_dir)["state"] == "completed"
    assert not [d for d in left if Path(d).exists()], "the next job start removes dead Ray dirs"


@pytest.mark.fault("kill -9 of the raylet")
@pytest.mark.timeout(300)
def test_killed_raylet_fails_the_job_fast_with_its_state(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run_dir = tmp_path / "run"
    job = _submit(cfg, run_dir, faultjob.FaultJob(400, step_s=0.3))
    with cancelled_on_failure(job):
        _wait("the job to step", lambda: len(faultjob.done_steps(run_dir)) >= 2, job)
        raylets = [
            pid
            for pid, argv in _pids_with(f"/tmp/mh_ray_{job.job_id}_0_0").items()
            if argv[0].endswith("raylet")
        ]
        assert len(raylets) == 1, raylets
        # the job fails itself (a step past its deadline, or Ray's node watch): with a result
        kill = lambda: os.kill(raylets[0], signal.SIGKILL)  # noqa: E731
        reported = _dies_and_is_reported(job, run_dir, kill, without_result=False)
    assert reported < 45, f"reported {reported:.1f} s after the kill"
    assert len(faultjob.done_steps(run_dir)) < 400


@pytest.mark.fault("USR2 + requeue, in a loop")
@pytest.mark.timeout(420)
def test_usr2_and_requeue_in_a_loop_lose_and_repeat_no_step(tmp_path: Path) -> None:
    """Three warnings, three requeues, each resumed where it stopped (no Ray: the requeue path
    alone; the engine's own: tests/cluster/test_cluster_engine.py)."""
    cfg = _cfg(tmp_path, "cluster.start_ray=false")
    run_dir = tmp_path / "run"
    job = _submit(cfg, run_dir, faultjob.FaultJob(24, step_s=0.25))
    with cancelled_on_failure(job):
        for attempt in range(3):
            _wait(
                f"attempt {attempt} to step",
                lambda a=attempt: str(a) in _attempts(run_dir),
                job,
            )
            subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
            _wait(f"attempt {attempt} to stop", lambda a=attempt: _stopped(run_dir, a), job)
        result = submit.wait_for(job, run_dir)
    assert result["step"] == 24
    assert faultjob.done_steps(run_dir) == list(range(1, 25))
    assert faultjob.attempts(run_dir) == {"0", "1", "2", "3"}


def _attempts(run_dir: Path) -> set[str]:
    return faultjob.attempts(run_dir) if (run_dir / "steps.log").exists() else set()


def _stopped(run_dir: Path, attempt: int) -> bool:
    status = read_status(run_dir)
    return status["state"] == "preempted" or str(attempt + 1) in _attempts(run_dir)


@pytest.mark.fault("secrets in Slurm's job record")
@pytest.mark.timeout(240)
def test_secrets_reach_the_job_but_not_slurms_record_of_it(tmp_path: Path, monkeypatch) -> None:
    secret = "wk-fault-suite-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", secret + "-ml")
    cfg = _cfg(tmp_path, "cluster.start_ray=false")
    run_dir = tmp_path / "run"
    probe = faultjob.SecretProbe(["WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN"], hold_s=3.0)
    job = _submit(cfg, run_dir, probe)
    with cancelled_on_failure(job):
        _wait("the job to start", lambda: (run_dir / "started").exists(), job)
        record = subprocess.run(
            ["scontrol", "show", "job", "-dd", job.job_id], capture_output=True, text=True
        ).stdout
        script = subprocess.run(
            ["scontrol", "write", "batch_script", job.job_id, "-"], capture_output=True, text=True
        ).stdout
        spooled = [
            Path(p).read_bytes()
            for p in glob.glob(f"/var/spool/slurm*/**/job.{job.job_id}/environment", recursive=True)
            if os.access(p, os.R_OK)
        ]
        result = submit.wait_for(job, run_dir)
    assert f"JobId={job.job_id}" in record and "#SBATCH" in script
    for text in (record, script, *(b.decode(errors="replace") for b in spooled)):
        assert secret not in text and "WANDB_API_KEY" not in text
    assert result["secrets"] == {"WANDB_API_KEY": secret, "MLFLOW_TRACKING_TOKEN": secret + "-ml"}
    assert result["file_mode"] == "0o600" and result["path"] == os.environ["PATH"]
    assert not Path(result["file"]).exists()  # the job deleted it when it ended
