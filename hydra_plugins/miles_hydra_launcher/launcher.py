"""The multirun launcher: validate every variant, then run them here or as one Slurm array.

All-or-nothing: every variant is composed and validated before anything starts; one invalid
variant means nothing is submitted, and the error names the variant and the key. On Slurm the
whole batch goes out as one job array (one sbatch call) capped at ``cluster.array_parallelism``
concurrent tasks; each variant runs in its own directory ``<sweep dir>/<variant>``. The logic
lives in ``miles_hydra.sweep.variants`` (validation, the array), which builds the array's
executor with the same builder as single runs (``miles_hydra.cluster.submit.make_executor``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.miles_hydra_launcher import resolvers  # noqa: F401  (${launch_id:} in jobs)
from miles_hydra.sweep import prune
from miles_hydra.sweep.manifest import IN_JOB_ENV, SWEEP_ID_ENV

if TYPE_CHECKING:
    from miles_hydra.sweep.variants import SweepPlan

log = logging.getLogger(__name__)


class MilesHydraLauncher(Launcher):
    def __init__(self, submitit_folder: str) -> None:
        self.submitit_folder = submitit_folder
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def validate(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> None:
        """Compose and validate every variant, then run their pre-submission checks (files,
        reward, checkpoint, Slurm); on any refusal (ours or Hydra's) print each bad variant with
        its number and key and exit 2. Called by the sweeper before the sweep directory
        exists, so a refused sweep leaves nothing behind."""
        from miles_hydra.launch.preflight import refuse_failed_variants
        from miles_hydra.sweep.variants import SweepValidationError, validate_variants

        assert self.config is not None and self.hydra_context is not None
        try:
            runs = validate_variants(
                self.hydra_context.config_loader, self.config, job_overrides, initial_job_idx
            )
            nums = [initial_job_idx + i for i in range(len(runs))]
            refuse_failed_variants(runs, nums)
        except SweepValidationError as exc:
            print(f"miles_hydra: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from miles_hydra.sweep.variants import SweepValidationError, plan_sweep

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            plan = plan_sweep(
                self.hydra_context.config_loader,
                self.config,
                job_overrides,
                initial_job_idx,
                sweep_dir,
            )
        except SweepValidationError as exc:
            print(f"miles_hydra: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        os.environ[SWEEP_ID_ENV] = plan.manifest.sweep_id
        for num, overrides in zip(plan.nums, job_overrides):
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
        if plan.scheduler == "slurm":
            return self._launch_slurm(plan, job_overrides)
        return [
            self(list(overrides), "hydra.sweep.dir", num, f"local_{num}", Singleton.get_state())
            for num, overrides in zip(plan.nums, job_overrides)
        ]

    def _launch_slurm(
        self, plan: SweepPlan, job_overrides: Sequence[Sequence[str]]
    ) -> list[JobReturn]:
        from miles_hydra.sweep.variants import submit_array

        folder = self.submitit_folder.replace("${hydra.sweep.dir}", str(plan.sweep_dir))
        state = Singleton.get_state()
        calls = [
            (list(overrides), "hydra.sweep.dir", num, f"job_{num}", state)
            for num, overrides in zip(plan.nums, job_overrides)
        ]
        n = plan.runs[0].cluster.trials_per_job
        if n > 1:  # cluster.trials_per_job: n variants side by side in each array task
            return self._launch_packed(plan, calls, Path(folder), n)
        jobs = submit_array(plan, self, calls, Path(folder))
        log.info(f"submitted {len(jobs)} variants as Slurm array {plan.manifest.array_job_id}")
        return [_result(job) for job in jobs]

    def _launch_packed(
        self, plan: SweepPlan, calls: list[tuple], folder: Path, n: int
    ) -> list[JobReturn]:
        from miles_hydra.sweep.packing import PackedTask
        from miles_hydra.sweep.variants import submit_array

        packs = [calls[i : i + n] for i in range(0, len(calls), n)]
        cluster = plan.runs[0].cluster
        task = PackedTask(self, cluster.gpus_per_node, cluster.ray_startup_timeout_s)
        dirs = [[str(plan.sweep_dir / str(call[2])) for call in pack] for pack in packs]
        jobs = submit_array(plan, task, list(zip(packs, dirs)), folder)
        log.info(
            f"submitted {len(calls)} variants, {n} per task, as Slurm array "
            f"{plan.manifest.array_job_id} ({len(jobs)} tasks)"
        )
        returns = []
        for job, pack in zip(jobs, packs):
            try:
                outcomes = job.results()[0]
            except Exception as exc:  # the whole task failed: so did each of its variants
                outcomes = [(None, f"array task {job.job_id} failed: {exc}")] * len(pack)
            for (value, error), call in zip(outcomes, pack):
                ret = JobReturn()
                ret.status = JobStatus.FAILED if error else JobStatus.COMPLETED
                ret._return_value = RuntimeError(error) if error else value
                if error:
                    log.error(f"variant #{call[2]} (task {job.job_id}) failed: {error}")
                returns.append(ret)
        return returns

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        assert self.hydra_context is not None and self.config is not None
        assert self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        os.environ[IN_JOB_ENV] = "1"
        sweep_config = self.hydra_context.config_loader.load_sweep_config(
            self.config, sweep_overrides
        )
        with open_dict(sweep_config.hydra.job) as job:
            job.id = os.environ.get("SLURM_JOB_ID", job_id)
            job.num = job_num
        run_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        with prune.watch(run_dir):  # an Optuna trial the pruner stops: checkpoint, end, "pruned"
            return run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=sweep_config,
                job_dir_key=job_dir_key,
                job_subdir_key="hydra.sweep.subdir",
            )

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """On preemption or time limit: requeue the same variant; it resumes from its checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _result(job: Any) -> JobReturn:
    try:
        return job.results()[0]
    except Exception as exc:  # a failed variant must not hide the others' results
        log.error(f"variant job {job.job_id} failed: {exc}")
        ret = JobReturn()
        ret.status = JobStatus.FAILED
        ret._return_value = exc
        return ret
