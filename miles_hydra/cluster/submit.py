"""One code path from a validated RunConfig to running allocation tasks: here, a local
subprocess, or Slurm.

``cluster.kind=local`` runs the allocation task in this process; ``submitit_local`` and
``slurm`` hand the very same :class:`AllocationTask` to the executor that :func:`make_executor`
builds, the one builder of submitit executors: single runs use it here, sweeps use it for their
job array (``miles_hydra.sweep.variants``). Several configs submitted together become one Slurm
job array (``submit_jobs``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import submitit

from miles_hydra.cluster import rundir
from miles_hydra.cluster.allocation import AllocationTask
from miles_hydra.config.cluster import ClusterConfig, ClusterKind
from miles_hydra.errors import ClusterError

if TYPE_CHECKING:
    from miles_hydra.config.run import RunConfig

log = logging.getLogger(__name__)


def slurm_parameters(cluster: ClusterConfig, job_name: str) -> dict[str, Any]:
    """SlurmExecutor.update_parameters() arguments for one job of ``cluster`` (pure)."""
    srun_args = ["--kill-on-bad-exit=1"]  # one dead node task ends the whole job at once
    if cluster.container_image:
        srun_args.append(f"--container-image={cluster.container_image}")
    if cluster.container_mounts:
        srun_args.append(f"--container-mounts={cluster.container_mounts}")
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": cluster.timeout_min,
        "nodes": cluster.nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": cluster.cpus_per_task,
        "signal_delay_s": cluster.signal_delay_s,
        "array_parallelism": cluster.array_parallelism,
        "srun_args": srun_args,
        "setup": ["export RAY_AUTH_MODE=disabled", *cluster.setup],
        # the job requeues itself on the warning signal (scontrol requeue needs this)
        "additional_parameters": {"requeue": True, **cluster.sbatch_args},
    }
    if cluster.gpus_per_node:
        params["gpus_per_node"] = cluster.gpus_per_node
    if cluster.mem_gb is not None:
        params["mem"] = f"{cluster.mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cluster, key):
            params[key] = getattr(cluster, key)
    if cluster.exclusive:
        params["exclusive"] = True
    return params


def make_executor(cluster: ClusterConfig, folder: Path, job_name: str) -> submitit.Executor:
    """The submitit executor for ``cluster.kind`` (submitit_local or slurm): the only place one
    is built, for single runs and sweep arrays alike.

    ``cluster.max_num_requeue`` bounds the requeues after the time limit and ``cluster.python``
    is the interpreter in the job's command line (None: this process's ``sys.executable``).
    """
    if cluster.kind is ClusterKind.slurm:
        executor = submitit.SlurmExecutor(
            folder=folder, max_num_timeout=cluster.max_num_requeue, python=cluster.python
        )
        executor.update_parameters(**slurm_parameters(cluster, job_name))
        return executor
    if cluster.kind is ClusterKind.submitit_local:
        executor = submitit.LocalExecutor(
            folder=folder, max_num_timeout=cluster.max_num_requeue, python=cluster.python
        )
        executor.update_parameters(
            timeout_min=cluster.timeout_min,
            nodes=1,
            tasks_per_node=1,
            gpus_per_node=cluster.gpus_per_node,
            signal_delay_s=cluster.signal_delay_s,
        )
        return executor
    raise ValueError(f"cluster.kind={cluster.kind.value} runs in-process, not through submitit")


def sbatch_script(executor: submitit.SlurmExecutor) -> str:
    """The sbatch script ``executor`` writes for a job (golden tests); arrays add ``--array``."""
    return executor._make_submission_file_text(executor._submitit_command_str, uid="")


def submit_jobs(cfgs: Sequence[RunConfig], group: Path, task: AllocationTask) -> list[submitit.Job]:
    """Submit ``task`` once per config; several become one job array (same cluster settings).

    Every job gets its own run directory ``<group>/<job id>`` (array tasks: ``<id>_<index>``).
    """
    if not cfgs:
        return []
    cluster = cfgs[0].cluster
    if any(cfg.cluster != cluster for cfg in cfgs[1:]):
        raise ClusterError("all configs of one array must share the same cluster settings")
    group.mkdir(parents=True, exist_ok=True)
    executor = make_executor(cluster, group / ".submitit" / "%j", f"mh_{cfgs[0].experiment_name}")
    if len(cfgs) == 1:
        return [executor.submit(task, cfgs[0], str(group))]
    with executor.batch():
        futures = [executor.submit(task, cfg, str(group)) for cfg in cfgs]
    return list(futures)


def wait_for(job: submitit.Job) -> dict:
    """Block until ``job`` is done; its task-0 result, or ClusterError with the log paths."""
    try:
        result = job.results()[0]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as exc:
        raise ClusterError(
            f"job {job.job_id} failed; logs: {job.paths.stdout} and {job.paths.stderr}\n{exc}"
        ) from exc
    if result is None:
        raise ClusterError(
            f"job {job.job_id} returned no result from task 0; see {job.paths.stdout}"
        )
    return result


def submit_run(cfg: RunConfig, run_dir: Optional[Path], task: AllocationTask) -> Optional[dict]:
    """Run ``task`` here or submit it; wait (``cluster.wait``) and return its final metrics.

    Returns None when ``cluster.wait=false`` (the job id and run dir are printed).

    ``run_dir`` is the directory of this launch (Hydra's output dir:
    ``<output_root>/<experiment_name>/<time or sweep id>``); each job runs in ``<run_dir>/<job id>``.
    """
    group = run_dir or rundir.group_dir(cfg.output_root, cfg.experiment_name)
    cluster = cfg.cluster
    if cluster.kind is ClusterKind.local:
        result = task(cfg, str(group))
    else:
        (job,) = submit_jobs([cfg], group, task)
        print(
            f"miles_hydra: submitted job {job.job_id} ({cluster.kind.value}); "
            f"run dir {rundir.job_run_dir(group, job.job_id)}",
            flush=True,
        )
        if not cluster.wait:
            return None
        result = wait_for(job)
    assert result is not None  # task 0 always returns a dict
    print(f"miles_hydra: job done: {_summary(result)}", flush=True)
    return result


def _summary(result: dict) -> str:
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())[:12])
