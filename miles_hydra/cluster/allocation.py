"""What each task of an allocation runs: Ray across the nodes, then the job function on node 0.

Three things are called "job" around here; this module is the middle one:

- the *job function* (``JobFn``, e.g. ``miles_hydra.launch.run.run_with_status``): what a run
  does once Ray is up;
- the *allocation task* (:class:`AllocationTask`, :func:`run_allocation_task`): what every task
  of the allocation runs around the job function, in this process (``cluster=local``), in a
  submitit subprocess, or in each Slurm task (one per node);
- the *submitit job*: the scheduler's handle on the submitted allocation tasks.

Task 0 writes the run record, starts the Ray head, waits for every node, runs the job function
and writes ``result.json``; the other tasks join Ray and wait. A job function that returns
``{"preempted": True}`` after the warning signal has the job requeued through submitit; it
resumes in the same run directory. So does a job that loses a node mid-run, while it has been
requeued fewer than ``cluster.max_num_requeue`` times (else it fails, naming the node).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import submitit

from miles_hydra.cluster import cleanup, preemption, rundir, secrets
from miles_hydra.cluster.ray_cluster import RaySpec, free_port, head_node, worker_node
from miles_hydra.launch.console import ray_driver_options
from miles_hydra.sweep.manifest import write_status

log = logging.getLogger(__name__)

JobFn = Callable[[Any, Path], dict]  # job_fn(cfg, run_dir) -> final metrics
PACK_SLOT_ENV = "MILES_HYDRA_PACK_SLOT"  # "p<k>" for the k-th trial packed into one job


@dataclass(frozen=True)
class TaskInfo:
    """Who this task is within its allocation."""

    job_id: str  # scheduler job id ("123", "123_4" for an array task, "local-<pid>" here)
    rank: int  # 0 = head
    num_tasks: int  # tasks of the job = Ray nodes (one task per node)
    restart: int  # how many times the job was requeued before this attempt


def task_info() -> TaskInfo:
    """Read the submitit/Slurm environment, or describe this process when there is none."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return TaskInfo(job_id=f"local-{os.getpid()}", rank=0, num_tasks=1, restart=0)
    return TaskInfo(
        job_id=env.job_id,
        rank=env.global_rank,
        num_tasks=env.num_tasks,
        restart=int(os.environ.get("SLURM_RESTART_COUNT", "0")),
    )


@contextlib.contextmanager
def _job_log(run_dir: Path) -> Iterator[None]:
    """Also write this process's log records to ``<run_dir>/logs/job.log``."""
    handler = logging.FileHandler(run_dir / "logs" / "job.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def run_allocation_task(
    cfg: Any,
    group: Path,
    job_fn: JobFn,
    *,
    ray_job_api: bool = False,
    append_job_id: bool = True,
) -> Optional[dict]:
    """Run this task of the allocation; task 0 returns the job function's result, the others None.

    ``ray_job_api``: the Ray head also serves Ray's job API (for job functions that submit with
    ``ray job submit``). The run directory is ``<group>/<job id>``, or ``group`` itself with
    ``append_job_id=False`` (a sweep variant whose directory the sweep launcher already chose).
    """
    cluster = cfg.cluster
    task = task_info()
    secrets.load_secrets()  # tracker credentials sent beside the job, never in its record
    cleanup.clean_dead_ray_dirs(task.job_id, task.restart)  # what killed jobs left on this node
    run_dir = rundir.job_run_dir(group, task.job_id) if append_job_id else group
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    (run_dir / "ray").mkdir(exist_ok=True)  # rendezvous files of the Ray nodes
    spec = RaySpec(
        num_nodes=task.num_tasks,
        num_cpus_per_node=cluster.cpus_per_task,
        num_gpus_per_node=cluster.gpus_per_node,
        startup_timeout_s=cluster.ray_startup_timeout_s,
        rendezvous_dir=run_dir / "ray",
        attempt_id=f"{task.job_id}_{task.restart}{os.environ.get(PACK_SLOT_ENV, '')}",
        dashboard_port=free_port() if ray_job_api else None,
        driver_options=ray_driver_options(run_dir, cfg.logging.verbose),
    )
    if task.rank != 0:
        worker_node(spec, task.rank, run_dir / "logs")
        return None
    with _job_log(run_dir):
        log.info("job %s attempt %d: run dir %s", task.job_id, task.restart, run_dir)
        rundir.write_run_record(run_dir, cfg)
        preemption.install()
        try:
            result = _run_head(cfg, spec, run_dir, job_fn, task.restart)
        except BaseException:
            preemption.uninstall()
            secrets.delete_secrets()
            raise
    stopped_early = result.get(preemption.PREEMPTED_KEY) and preemption.requested()
    if stopped_early and preemption.can_requeue():
        preemption.requeue_and_exit()  # raises SystemExit; the next attempt resumes here
    preemption.uninstall()
    secrets.delete_secrets()  # the job is over: nothing will read them again
    return result


def _run_head(cfg: Any, spec: RaySpec, run_dir: Path, job_fn: JobFn, restart: int) -> dict:
    started = time.monotonic()
    if cfg.cluster.start_ray:
        on_lost = functools.partial(_after_node_loss, cfg.cluster.max_num_requeue, run_dir, restart)
        with head_node(spec, run_dir / "logs", on_node_lost=on_lost):
            ray_up_s = time.monotonic() - started
            result = dict(job_fn(cfg, run_dir))
        result.setdefault("cluster/ray_startup_s", round(ray_up_s, 2))
    else:
        result = dict(job_fn(cfg, run_dir))
    result.setdefault("cluster/job_wall_s", round(time.monotonic() - started, 2))
    rundir.write_result(run_dir, result)
    return result


def _after_node_loss(max_num_requeue: int, run_dir: Path, restart: int, reason: str) -> None:
    """A node of the job died mid-run (``reason`` names it). A Slurm job requeued fewer than
    ``cluster.max_num_requeue`` times so far is requeued (raises SystemExit): the next attempt
    resumes from the last checkpoint. Otherwise the job fails, and ``status.json`` says why."""
    if restart < max_num_requeue and preemption.can_requeue():
        write_status(run_dir, "preempted", error=reason, requeue=restart + 1)
        log.warning(
            "%s; requeueing the job (requeue %d of at most %d, cluster.max_num_requeue)",
            reason,
            restart + 1,
            max_num_requeue,
        )
        preemption.requeue_and_exit()
    write_status(run_dir, "failed", error=reason)
    log.error(
        "%s; the job fails (requeued %d of cluster.max_num_requeue=%d times)",
        reason,
        restart,
        max_num_requeue,
    )


class AllocationTask(submitit.helpers.Checkpointable):
    """What every task of the allocation runs, and the callable submitit pickles: checkpointable,
    so a requeue re-runs it unchanged. Arguments as in :func:`run_allocation_task`."""

    def __init__(self, job_fn: JobFn, ray_job_api: bool = False) -> None:
        self.job_fn = job_fn
        self.ray_job_api = ray_job_api

    def __call__(self, cfg: Any, group: str, append_job_id: bool = True) -> Optional[dict]:
        return run_allocation_task(
            cfg, Path(group), self.job_fn, ray_job_api=self.ray_job_api, append_job_id=append_job_id
        )
