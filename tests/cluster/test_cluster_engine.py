"""The local engine on the real single-node Slurm: `python launch.py cluster=slurm`, preemption.

The issue's bar: ``python launch.py cluster=slurm`` trains the local default through Ray and
writes the run directory; an interrupted job resumes exactly; nothing hangs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from support.slurmenv import no_ray_dirs_left, slurm_only, wait_for_state
from support.tiny import TINY_BARE_RUN

from miles_hydra.backends.local.metrics import read_records

TINY = TINY_BARE_RUN
SLURM = ["cluster=slurm", "cluster.mem_gb=6", "cluster.ray_startup_timeout_s=120"]


def rollout_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_records(run_dir / "metrics.jsonl") if "step" in r]


def _wait_for_first_rollout(root: Path, proc: subprocess.Popen, timeout_s: float) -> Path:
    """The job's run dir (``<root>/default/<time>/<job id>``) once it logged a rollout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for metrics in root.glob("default/*/*/metrics.jsonl"):
            if rollout_steps(metrics.parent):
                return metrics.parent
        time.sleep(0.2)
    raise AssertionError("the job never finished its first rollout")


@slurm_only
@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_launch_py_cluster_slurm_trains_then_is_preempted_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    """`python launch.py cluster=slurm`: Ray in the allocation, the local engine, the run dir;
    USR2 mid-run -> checkpoint -> requeue through submitit -> resume at the next rollout."""
    # Enough rollouts that USR2 (sent after the first) lands mid-run: a rollout of this model
    # takes ~50 ms once warm, and 8 once all finished before the signal arrived (no requeue).
    num_rollout = 64
    argv = [sys.executable, "launch.py", *SLURM, *TINY, f"rollout.num_rollout={num_rollout}"]
    proc = subprocess.Popen(
        [*argv, "cluster.timeout_min=15", f"output_root={tmp_path}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = None
    try:
        run_dir = _wait_for_first_rollout(tmp_path, proc, timeout_s=200)
        job_id = run_dir.name
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # never leave a job behind
            proc.kill()
            if run_dir is not None:
                subprocess.run(["scancel", run_dir.name], timeout=30, check=False)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"miles_hydra: submitted job {job_id}" in stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert result["preempted"] is False and result["step"] == num_rollout - 1
    assert rollout_steps(run_dir) == list(range(num_rollout))  # nothing lost, nothing repeated
    log = (run_dir / "logs" / "job.log").read_text()
    assert "attempt 1" in log and "resuming from" in log  # requeued, resumed from a checkpoint
    assert 0 < result["cluster/ray_startup_s"] < 120
    assert "kind: slurm" in (run_dir / "config.yaml").read_text()
    for name in ("env.json", "git.json", "git.diff", "logs/ray_node_0.log"):
        assert (run_dir / name).exists(), name
    # the quiet console in the job too: actor output in the run dir, appended by the 2nd attempt
    job_err = (run_dir.parent / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
    assert "pid=" not in job_err and "Writing model shards" not in job_err, job_err[-2000:]
    assert (run_dir / "logs" / "trainer.log").read_text().count("==== trainer actor ") == 2
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    assert wait_for_state(job_id, "COMPLETED", timeout_s=60)
    assert no_ray_dirs_left(job_id)
