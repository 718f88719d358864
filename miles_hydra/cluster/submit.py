"""One code path from a validated RunConfig to a running job: here, a local subprocess, or Slurm.

``cluster.kind=local`` runs the job body in this process; ``submitit_local`` and ``slurm`` hand
the very same body (:class:`ClusterJob`) to submitit's LocalExecutor / SlurmExecutor. Several
configs submitted together become one Slurm job array (``submit_jobs``), which is what sweeps
build on.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import submitit

from miles_hydra.cluster import rundir
from miles_hydra.cluster.allocation import ClusterJob, JobFn, run_in_allocation
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


# SlurmExecutor parameter -> AutoExecutor name (generic names, others get the "slurm_" prefix)
_AUTO_NAMES = {
    "job_name": "name",
    "time": "timeout_min",
    "nodes": "nodes",
    "ntasks_per_node": "tasks_per_node",
    "cpus_per_task": "cpus_per_task",
    "gpus_per_node": "gpus_per_node",
}


def executor_parameters(cluster: ClusterConfig, job_name: str = "miles_hydra") -> dict[str, Any]:
    """The same parameters for ``submitit.AutoExecutor(cluster="slurm")`` (pure)."""
    params = slurm_parameters(cluster, job_name)
    out = {_AUTO_NAMES.get(key, f"slurm_{key}"): value for key, value in params.items()}
    if "slurm_mem" in out:
        out["mem_gb"] = cluster.mem_gb
        del out["slurm_mem"]
    return out


def make_executor(cluster: ClusterConfig, folder: Path, job_name: str) -> submitit.Executor:
    """The submitit executor for ``cluster.kind`` (submitit_local or slurm)."""
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


def sbatch_script(
    cluster: ClusterConfig, folder: Path, job_name: str, python: str = "python3"
) -> str:
    """The sbatch script submitit would write for one job (golden tests, `mode=plan`)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join(
        [shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))]
    )
    return _make_sbatch_string(
        command=command, folder=str(folder), **slurm_parameters(cluster, job_name)
    )


def submit_jobs(cfgs: Sequence[RunConfig], group: Path, job_fn: JobFn) -> list[submitit.Job]:
    """Submit one job per config; several become one job array (same cluster settings).

    Every job gets its own run directory ``<group>/<job id>`` (array tasks: ``<id>_<index>``).
    """
    if not cfgs:
        return []
    cluster = cfgs[0].cluster
    if any(cfg.cluster != cluster for cfg in cfgs[1:]):
        raise ClusterError("all configs of one array must share the same cluster settings")
    group.mkdir(parents=True, exist_ok=True)
    executor = make_executor(cluster, group / ".submitit" / "%j", f"mh_{cfgs[0].experiment_name}")
    job = ClusterJob(job_fn)
    if len(cfgs) == 1:
        return [executor.submit(job, cfgs[0], str(group))]
    with executor.batch():
        futures = [executor.submit(job, cfg, str(group)) for cfg in cfgs]
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


def submit_run(cfg: RunConfig, run_dir: Optional[Path], job_fn: JobFn) -> Optional[dict]:
    """Run or submit one job; wait for it (``cluster.wait``) and return its final metrics.

    Returns None when ``cluster.wait=false`` (the job id and run dir are printed).

    ``run_dir`` is the directory of this launch (Hydra's output dir:
    ``<output_root>/<experiment_name>/<time or sweep id>``); each job runs in ``<run_dir>/<job id>``.
    """
    group = run_dir or rundir.group_dir(cfg.output_root, cfg.experiment_name)
    cluster = cfg.cluster
    if cluster.kind is ClusterKind.local:
        result = run_in_allocation(cfg, group, job_fn)
    else:
        (job,) = submit_jobs([cfg], group, job_fn)
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
