"""Real jobs on the single-node Slurm of this machine (scripts/slurm_single_node.sh up).

Every job runs the real path: submitit -> sbatch -> srun -> allocation task -> Ray across the
allocation -> the job function. The job function is ``stepjob.StepJob``, a small resumable step
counter that polls the preemption flag like the engine does.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import cloudpickle
import pytest
import stepjob
from conftest import compose_config, materialize
from support.slurmenv import (
    no_ray_dirs_left,
    slurm_only,
)

from miles_hydra.cluster import allocation, ray_cluster, rundir, submit
from miles_hydra.errors import ClusterError

cloudpickle.register_pickle_by_value(stepjob)  # the job unpickles it without tests/ on its path


def _run_cfg(tmp_path: Path, *overrides: str):
    base = [
        "cluster=slurm",
        "cluster.cpus_per_task=1",
        "cluster.mem_gb=3",
        "cluster.timeout_min=15",
        "cluster.ray_startup_timeout_s=120",
    ]
    return materialize(compose_config([*base, *overrides], output_root=tmp_path))


@slurm_only
@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_two_variants_run_as_one_array_in_their_own_dirs(tmp_path: Path) -> None:
    cfgs = [_run_cfg(tmp_path, f"seed={seed}") for seed in (1, 2)]
    group = rundir.group_dir(tmp_path, "sweep", "t1")
    jobs = submit.submit_jobs(
        cfgs, group, allocation.AllocationTask(stepjob.StepJob(2, step_s=0.1))
    )
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one sbatch: an array
    results = [submit.wait_for(job) for job in jobs]
    assert [r["step"] for r in results] == [2, 2]
    dirs = [rundir.job_run_dir(group, job.job_id) for job in jobs]
    assert len(set(dirs)) == 2
    seeds = sorted(int(_yaml_value(d / "config.yaml", "seed")) for d in dirs)
    assert seeds == [1, 2]


def _yaml_value(path: Path, key: str) -> str:
    line = next(x for x in path.read_text().splitlines() if x.startswith(f"{key}:"))
    return line.split(":", 1)[1].strip()


@slurm_only
@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_ray_that_cannot_come_up_fails_the_job_with_a_clear_error(tmp_path: Path) -> None:
    cfg = _run_cfg(tmp_path, "cluster.ray_startup_timeout_s=1")
    group = rundir.group_dir(tmp_path, "fail", "t4")
    started = time.monotonic()
    (job,) = submit.submit_jobs([cfg], group, allocation.AllocationTask(stepjob.StepJob(1)))
    with pytest.raises(ClusterError) as info:
        submit.wait_for(job)
    assert "cluster.ray_startup_timeout_s" in str(info.value)
    assert time.monotonic() - started < 120
    assert no_ray_dirs_left(job.job_id)


@pytest.mark.timeout(120)
def test_ray_head_on_a_busy_port_ends_in_a_cluster_error(tmp_path: Path, monkeypatch) -> None:
    """In-process: the GCS port is taken, `ray start` cannot serve it, we stop within the bound."""
    with socket.socket() as taken:
        taken.bind(("", 0))
        ports = iter([taken.getsockname()[1]])
        real_free_port = ray_cluster.free_port
        monkeypatch.setattr(ray_cluster, "free_port", lambda: next(ports, None) or real_free_port())
        spec = ray_cluster.RaySpec(1, 1, 0, 8.0, tmp_path, "busy")
        started = time.monotonic()
        with pytest.raises(ClusterError, match="ray_startup_timeout_s|exited"):
            with ray_cluster.head_node(spec, tmp_path):
                pass
    assert time.monotonic() - started < 60
    assert (tmp_path / "ray_done_busy").exists()
    assert not Path("/tmp/mh_ray_busy_0").exists()
