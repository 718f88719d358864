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
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import submitit

from miles_hydra.cluster import preemption, rundir, secrets, watch
from miles_hydra.cluster.allocation import AllocationTask
from miles_hydra.config.cluster import ClusterConfig, ClusterKind
from miles_hydra.errors import ClusterError

if TYPE_CHECKING:
    from miles_hydra.config.run import RunConfig

log = logging.getLogger(__name__)


def slurm_parameters(
    cluster: ClusterConfig, job_name: str, env: Optional[Mapping[str, str]] = None
) -> dict[str, Any]:
    """SlurmExecutor.update_parameters() arguments for one job of ``cluster`` (pure given
    ``env``, the launcher's environment, default ``os.environ``): its ``--export`` is the
    allowlist of ``miles_hydra.cluster.secrets``, never a secret."""
    env = os.environ if env is None else env
    srun_args = ["--kill-on-bad-exit=1"]  # one dead node task ends the whole job at once
    if "ALL" in cluster.export_env:
        export = "ALL"  # Slurm's default: the whole environment, secrets included
    else:
        export = ",".join(secrets.export_names(env, cluster.export_env)) or "NONE"
        # srun would apply the same list again (SLURM_EXPORT_ENV) and drop what the batch
        # script itself sets (SUBMITIT_EXECUTOR, cluster.setup): it passes the script's all
        srun_args.append("--export=ALL")
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
        "additional_parameters": {"requeue": True, "export": export, **cluster.sbatch_args},
    }
    if cluster.gpus_per_node and cluster.request_gpus:
        params["gpus_per_node"] = cluster.gpus_per_node
    if cluster.mem_gb is not None:
        params["mem"] = f"{cluster.mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cluster, key):
            params[key] = getattr(cluster, key)
    if cluster.exclusive:
        params["exclusive"] = True
    return params


def make_executor(
    cluster: ClusterConfig, folder: Path, job_name: str, env: Optional[Mapping[str, str]] = None
) -> submitit.Executor:
    """The submitit executor for ``cluster.kind`` (submitit_local or slurm): the only place one
    is built, for single runs and sweep arrays alike.

    ``cluster.max_num_requeue`` bounds the requeues after the time limit and ``cluster.python``
    is the interpreter in the job's command line (None: this process's ``sys.executable``).
    A Slurm job gets the allowlist of ``env`` (default ``os.environ``) and its secrets in a
    user-only file under ``folder`` (``miles_hydra.cluster.secrets``).
    """
    env = os.environ if env is None else env
    if cluster.kind is ClusterKind.slurm:
        executor = submitit.SlurmExecutor(
            folder=folder, max_num_timeout=cluster.max_num_requeue, python=cluster.python
        )
        params = slurm_parameters(cluster, job_name, env)
        extra = params["additional_parameters"]
        if extra["export"] != "ALL":  # secrets travel in a user-only file, not in the job record
            found = secrets.secrets_of(env, cluster.export_env)
            if path := secrets.write_secrets_file(_fixed_part(folder) / "secrets", found):
                export = f"{secrets.SECRETS_FILE_ENV}={path}"
                extra["export"] = (
                    export if extra["export"] == "NONE" else f"{extra['export']},{export}"
                )
        executor.update_parameters(**params)
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


def _fixed_part(folder: Path) -> Path:
    """``folder`` up to its first part with a submitit placeholder (``%j``, ``%A``)."""
    parts = Path(folder).parts
    fixed = next((i for i, part in enumerate(parts) if "%" in part), len(parts))
    return Path(*parts[:fixed])


def sbatch_script(executor: submitit.SlurmExecutor) -> str:
    """The sbatch script ``executor`` writes for a job (golden tests); arrays add ``--array``."""
    return executor._make_submission_file_text(executor._submitit_command_str, uid="")


def submit_jobs(
    cfgs: Sequence[RunConfig], group: Path, task: AllocationTask, job_dir: Optional[Path] = None
) -> list[submitit.Job]:
    """Submit ``task`` once per config; several become one job array (same cluster settings).

    Every job gets its own run directory ``<group>/<job id>`` (array tasks: ``<id>_<index>``),
    or ``job_dir`` for a single job that continues a run in place.
    """
    if not cfgs:
        return []
    cluster = cfgs[0].cluster
    if any(cfg.cluster != cluster for cfg in cfgs[1:]):
        raise ClusterError("all configs of one array must share the same cluster settings")
    group.mkdir(parents=True, exist_ok=True)
    executor = make_executor(cluster, group / ".submitit" / "%j", f"mh_{cfgs[0].experiment_name}")
    if job_dir is not None:
        (cfg,) = cfgs
        return [executor.submit(task, cfg, str(job_dir), False)]
    if len(cfgs) == 1:
        return [executor.submit(task, cfgs[0], str(group))]
    with executor.batch():
        futures = [executor.submit(task, cfg, str(group)) for cfg in cfgs]
    return list(futures)


def wait_for(job: submitit.Job, run_dir: Optional[Path] = None) -> dict:
    """Block until ``job`` is done; its task-0 result, or ClusterError with the log paths.

    A Slurm job is watched through the scheduler too (``watch.until_done``): a job that dies
    without a result is reported within seconds, with its Slurm state, and the ``status.json``
    of ``run_dir`` is corrected."""
    if isinstance(job, submitit.SlurmJob):
        try:
            watch.until_done(job, run_dir)
        except ClusterError as exc:  # a Ray node lost mid-job: say which (ray_cluster)
            from miles_hydra.cluster.ray_cluster import node_failures

            lost = node_failures(run_dir) if run_dir is not None else []
            if not lost:
                raise
            raise ClusterError(f"{exc}\n" + "\n".join(lost)) from exc
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


def submit_run(
    cfg: RunConfig, run_dir: Optional[Path], task: AllocationTask, job_dir: Optional[Path] = None
) -> Optional[dict]:
    """Run ``task`` here or submit it; wait (``cluster.wait``) and return its final metrics.

    Returns None when ``cluster.wait=false`` (the job id and run dir are printed).

    ``run_dir`` is the directory of this launch (Hydra's output dir:
    ``<output_root>/<experiment_name>/<time or sweep id>``); each job runs in ``<run_dir>/<job id>``,
    or in ``job_dir`` when it continues an earlier job's run there (``resume=<run_dir>``).
    """
    group = run_dir or rundir.group_dir(cfg.output_root, cfg.experiment_name)
    cluster = cfg.cluster
    if cluster.kind is ClusterKind.local:
        result = task(cfg, str(job_dir or group), job_dir is None)
    else:
        (job,) = submit_jobs([cfg], group, task, job_dir)
        where = job_dir or rundir.job_run_dir(group, job.job_id)
        print(
            f"miles_hydra: submitted job {job.job_id} ({cluster.kind.value}); run dir {where}",
            flush=True,
        )
        if not cluster.wait:
            return None
        try:
            result = wait_for(job, where)
        except KeyboardInterrupt:
            raise preemption.RunInterrupted("SIGINT", _stop_waiting(job, cluster)) from None
    assert result is not None  # task 0 always returns a dict
    print(f"miles_hydra: job done: {_summary(result)}", flush=True)
    return result


def _stop_waiting(job: submitit.Job, cluster: ClusterConfig) -> str:
    """Ctrl-C while waiting: a Slurm job is the scheduler's and keeps running; a local
    subprocess is ours and is cancelled (SIGINT, then it stops like a run here)."""
    if cluster.kind is ClusterKind.slurm:
        return f"stopped waiting; job {job.job_id} keeps running in Slurm (scancel {job.job_id})"
    job.cancel(check=False)
    return f"interrupted by SIGINT: job {job.job_id} cancelled; logs: {job.paths.stderr}"


def _summary(result: dict) -> str:
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())[:12])
