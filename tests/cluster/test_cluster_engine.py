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
from conftest import REPO, compose_config, materialize
from slurmenv import no_ray_dirs_left, slurm_only, wait_for_state

from miles_hydra.cluster import rundir, submit
from miles_hydra.engine.metrics import read_records
from miles_hydra.job import run_tracked

TINY = [  # the default task and algorithm on a smaller model, no warm-start, no eval
    "model.hidden_size=32",
    "model.ffn_hidden_size=64",
    "model.num_attention_heads=2",
    "model.num_query_groups=1",
    "model.kv_channels=16",
    "rollout.rollout_batch_size=4",
    "rollout.n_samples_per_prompt=2",
    "rollout.rollout_max_response_len=6",
    "rollout.eval_interval=null",
    "data.warmup_sft_steps=0",
    "backend.device=cpu",
    "logging.progress_bar=false",
]
SLURM = ["cluster=slurm", "cluster.mem_gb=6", "cluster.ray_startup_timeout_s=120"]


def rollout_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_records(run_dir / "metrics.jsonl") if "step" in r]


@slurm_only
@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_launch_py_cluster_slurm_trains_through_ray_and_writes_the_run_dir(tmp_path: Path) -> None:
    argv = [sys.executable, "launch.py", *SLURM, *TINY, "rollout.num_rollout=3"]
    done = subprocess.run(
        [*argv, f"output_root={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "miles_hydra: submitted job" in done.stdout
    (run_dir,) = [p.parent for p in tmp_path.glob("default/*/*/result.json")]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["preempted"] is False and result["step"] == 2
    assert 0 < result["cluster/ray_startup_s"] < 120
    assert rollout_steps(run_dir) == [0, 1, 2]
    assert "kind: slurm" in (run_dir / "config.yaml").read_text()
    for name in ("env.json", "git.json", "git.diff", "logs/job.log", "logs/ray_node_0.log"):
        assert (run_dir / name).exists(), name
    assert wait_for_state(run_dir.name, "COMPLETED", timeout_s=60)
    assert no_ray_dirs_left(run_dir.name)


@slurm_only
@pytest.mark.slurm
@pytest.mark.timeout(360)
def test_warning_signal_checkpoints_requeues_and_resumes_exactly(tmp_path: Path) -> None:
    num_rollout = 8
    cfg = materialize(
        compose_config(
            [*SLURM, *TINY, f"rollout.num_rollout={num_rollout}", "cluster.timeout_min=15"],
            output_root=tmp_path,
        )
    )
    group = rundir.group_dir(cfg.output_root, cfg.experiment_name, "preempt")
    (job,) = submit.submit_jobs([cfg], group, run_tracked)
    run_dir = rundir.job_run_dir(group, job.job_id)
    deadline = time.monotonic() + 200
    while not (run_dir / "metrics.jsonl").exists() or not rollout_steps(run_dir):
        assert time.monotonic() < deadline, "the job never finished its first rollout"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    result = submit.wait_for(job)
    assert result["preempted"] is False and result["step"] == num_rollout - 1
    assert rollout_steps(run_dir) == list(range(num_rollout))  # nothing lost, nothing repeated
    log = (run_dir / "logs" / "job.log").read_text()
    assert "attempt 1" in log and "resuming from" in log
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert wait_for_state(job.job_id, "COMPLETED", timeout_s=60)
