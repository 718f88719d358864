"""``hydra/sweeper=miles_optuna``: asynchronous Optuna with pruning and resume (Slurm, or
submitit_local). The loop is ``miles_hydra.sweep.optuna_loop``; this module is what it needs
from Hydra and submitit: the search space (``hydra.sweeper.params``, the optuna sweeper's
syntax: ``interval(a, b)``, ``tag(log, interval(a, b))``, ``choice(...)``, ``range(...)``),
validation of each trial by the miles launcher, and submission of each trial as one job through
the executor builder of single runs (``miles_hydra.cluster.submit.make_executor``).

Resume after the launcher died: the same command with ``hydra.sweep.dir=<the sweep dir>``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.miles_hydra_launcher.config import PRUNERS, MilesOptunaSweeperConf

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


class MilesOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        settings.pop("_target_", None)
        self.settings = MilesOptunaSweeperConf(**settings)
        if self.settings.pruner not in PRUNERS:
            raise ValueError(
                f"hydra.sweeper.pruner={self.settings.pruner!r} is not one of {', '.join(PRUNERS)}"
            )
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        import os

        from miles_hydra.sweep.manifest import SWEEP_ID_ENV
        from miles_hydra.sweep.optuna_loop import (
            STORAGE_FILE,
            AsyncStudy,
            LoopSettings,
            load_or_create_study,
            summary,
        )

        assert self.config is not None and self.hydra_context is not None
        distributions, fixed = self._search_space(arguments)
        first = self._validate_first(distributions, fixed)  # exits 2: no sweep dir left
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        resuming = (sweep_dir / STORAGE_FILE).exists()
        s = self.settings
        loop = LoopSettings(
            study_name=s.study_name or first.experiment_name,
            direction=s.direction,
            n_trials=s.n_trials,
            max_concurrent=s.max_concurrent,
            poll_s=s.poll_s,
        )
        study = load_or_create_study(sweep_dir, loop, self._sampler(), self._pruner())
        if not resuming:
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        manifest = _manifest(sweep_dir, first, list(distributions))
        os.environ[SWEEP_ID_ENV] = manifest.sweep_id
        done = len(study.get_trials(deepcopy=False))
        log.info(
            f"{'resuming' if resuming else 'starting'} study {loop.study_name} in {sweep_dir} "
            f"({done} of {loop.n_trials} trials asked); resume with: hydra.sweep.dir={sweep_dir}"
        )
        runner = SubmititTrials(self.launcher, self.hydra_context, self.config, sweep_dir)
        AsyncStudy(study, sweep_dir, loop, distributions, fixed, runner, manifest).run()
        result = summary(study)
        _write_results(sweep_dir, result, s.direction)
        print(f"miles_hydra: study {loop.study_name}: {result['states']}; best: {result['best']}")
        return result

    # ------------------------------------------------------------------ helpers
    def _search_space(
        self, arguments: list[str]
    ) -> tuple[dict[str, optuna.distributions.BaseDistribution], list[str]]:
        from hydra_plugins.hydra_optuna_sweeper._impl import (
            create_optuna_distribution_from_override,
        )

        assert self.hydra_context is not None
        lines = [f"{k}={v}" for k, v in (self.settings.params or {}).items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        distributions, fixed = {}, []
        for override in parser.parse_overrides(lines):
            if override.is_sweep_override():
                key = override.get_key_element()
                distributions[key] = create_optuna_distribution_from_override(override)
            else:
                fixed.append(override.input_line)
        return distributions, fixed

    def _validate_first(self, distributions: dict[str, Any], fixed: list[str]) -> Any:
        """The base config with each parameter at its lowest value: refused configs (and
        cluster=local, which cannot run trials side by side) exit 2 before the sweep dir."""
        from miles_hydra.config.cluster import ClusterKind
        from miles_hydra.sweep.variants import SweepValidationError, validate_variants

        assert self.hydra_context is not None and self.config is not None
        probe = [*fixed, *(f"{k}={_lowest(d)}" for k, d in distributions.items())]
        try:
            (run,) = validate_variants(self.hydra_context.config_loader, self.config, [probe], 0)
        except SweepValidationError as exc:
            print(f"miles_hydra: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if run.cluster.kind is ClusterKind.local:
            print(
                "miles_hydra: hydra/sweeper=miles_optuna runs trials side by side as jobs; "
                "cluster.kind=local runs one in this process: use cluster=slurm or "
                "cluster=submitit_local",
                file=sys.stderr,
            )
            raise SystemExit(2)
        return run

    def _sampler(self) -> optuna.samplers.BaseSampler:
        import optuna

        s = self.settings
        return optuna.samplers.TPESampler(
            seed=s.seed, n_startup_trials=s.n_startup_trials, constant_liar=True
        )

    def _pruner(self) -> optuna.pruners.BasePruner:
        import optuna

        s = self.settings
        if s.pruner == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=s.pruner_startup_trials, n_warmup_steps=s.pruner_warmup_steps
            )
        if s.pruner == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=max(1, s.pruner_warmup_steps)
            )
        if s.pruner == "threshold":
            return optuna.pruners.ThresholdPruner(
                lower=s.prune_below, upper=s.prune_above, n_warmup_steps=s.pruner_warmup_steps
            )
        return optuna.pruners.NopPruner()


class SubmititTrials:
    """Each trial as one job of the miles launcher's job function (its own run directory
    ``<sweep dir>/<trial>``, Hydra's ``.hydra`` record, requeue on preemption)."""

    def __init__(
        self, launcher: Any, hydra_context: HydraContext, config: DictConfig, sweep_dir: Path
    ) -> None:
        self.launcher = launcher
        self.hydra_context = hydra_context
        self.config = config
        self.folder = sweep_dir / ".submitit" / "%j"
        self.runs: dict[int, Any] = {}
        self.jobs: dict[str, Any] = {}

    def validate(self, num: int, overrides: list[str]) -> str:
        from miles_hydra.sweep.optuna_loop import TrialInvalid
        from miles_hydra.sweep.variants import SweepValidationError, validate_variants

        loader = self.hydra_context.config_loader
        try:
            (run,) = validate_variants(loader, self.config, [overrides], num)
        except SweepValidationError as exc:
            raise TrialInvalid(str(exc)) from None
        self.runs[num] = run
        return run.objective_metric or ""

    def submit(self, num: int, overrides: list[str], job_name: str) -> str:
        from miles_hydra.cluster.submit import make_executor

        run = self.runs[num]
        executor = make_executor(run.cluster, self.folder, job_name)
        job = executor.submit(
            self.launcher, overrides, "hydra.sweep.dir", num, f"trial_{num}", Singleton.get_state()
        )
        self.jobs[job.job_id] = job
        return str(job.job_id)

    def find(self, job_name: str) -> str | None:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "--name", job_name, "-o", "JobID", "-S", "now-7days"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        ours = [i for i in out.stdout.split() if (self.folder.parent / i).is_dir()]  # this sweep's
        return ours[-1] if out.returncode == 0 and ours else None

    def _job(self, job_id: str) -> Any:
        if job_id not in self.jobs:
            import submitit

            if not job_id.isdigit():  # a local subprocess of a launcher that is gone
                return None
            self.jobs[job_id] = submitit.SlurmJob(self.folder, job_id)
        return self.jobs[job_id]

    def poll(self, job_id: str) -> str:
        job = self._job(job_id)
        if job is None:
            return "failed: a local trial cannot be re-attached after the launcher stopped"
        if not job.done():
            return "running"
        try:
            ret = job.results()[0]
        except Exception as exc:  # the job failed, was cancelled or died: say how
            return f"failed ({job.state}): {_last_line(exc)}"
        if getattr(ret, "status", None) is JobStatus.FAILED:  # Hydra caught the run's error
            return f"failed: {_last_line(ret._return_value)}"
        return "done"

    def result(self, job_id: str) -> float | None:
        job = self._job(job_id)
        try:
            value = job.results()[0].return_value
        except Exception:
            return None
        return None if value is None else float(value)


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _lowest(distribution: Any) -> Any:
    if hasattr(distribution, "choices"):
        return distribution.choices[0]
    return distribution.low


def _manifest(sweep_dir: Path, run: Any, swept: list[str]) -> Any:
    import time

    from miles_hydra.sweep.manifest import MANIFEST, Manifest

    if (sweep_dir / MANIFEST).exists():
        return Manifest.read(sweep_dir)
    manifest = Manifest(
        sweep_id=f"{run.experiment_name}-{sweep_dir.name}-{time.strftime('%H%M%S')}",
        experiment_name=run.experiment_name,
        swept=swept,
        scheduler=run.cluster.kind.value,
    )
    manifest.write(sweep_dir)
    return manifest


def _write_results(sweep_dir: Path, result: dict[str, Any], direction: str) -> None:
    best = result["best"] or {}
    OmegaConf.save(
        OmegaConf.create(
            {
                "name": "optuna",
                "direction": direction,
                "best_params": best.get("params"),
                "best_value": best.get("value"),
                "states": result["states"],
            }
        ),
        sweep_dir / "optimization_results.yaml",
    )
