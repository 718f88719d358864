"""Validate every variant of a multirun before anything starts, lay the sweep out, and submit
it to Slurm as one job array through the executor builder of single runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from omegaconf import DictConfig

from miles_hydra.cluster.submit import make_executor
from miles_hydra.config import RunConfig
from miles_hydra.config.store import materialize
from miles_hydra.errors import ConfigError, MilesHydraError
from miles_hydra.sweep.manifest import Manifest, Variant, swept_keys

ARRAY_JOB_NAME = "miles_hydra"  # Slurm job name of a sweep's job array


class SweepValidationError(MilesHydraError):
    """One or more variants are invalid; nothing was submitted."""


@dataclass
class SweepPlan:
    manifest: Manifest  # written before anything runs
    nums: list[int]  # variant numbers, in launch order
    runs: list[RunConfig]  # each variant, validated
    scheduler: str  # local | submitit_local | slurm (cluster.kind of every variant)
    sweep_dir: Path  # holds the manifest and one run directory per variant


def validate_variants(
    config_loader: Any,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[RunConfig]:
    """Compose and validate each variant; raise SweepValidationError listing every bad one
    (ours, and what Hydra itself refuses: a value of the wrong type, an unknown option)."""
    runs, errors = [], []
    nums = [initial_job_idx + i for i in range(len(job_overrides))]
    for num, overrides in zip(nums, job_overrides):
        try:
            composed = config_loader.load_sweep_config(config, list(overrides))
            runs.append(materialize(composed))
        except ConfigError as exc:
            errors.append(f"  variant #{num} ({' '.join(overrides)}): {exc}")
        except Exception as exc:  # Hydra composition errors (wrong type, unknown option)
            errors.append(f"  variant #{num} ({' '.join(overrides)}): {hydra_error(exc)}")
    if errors:
        raise SweepValidationError(
            f"{len(errors)} of {len(job_overrides)} sweep variants are invalid; nothing was "
            "submitted:\n" + "\n".join(errors)
        )
    return runs


def plan_sweep(
    config_loader: Any,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    sweep_dir: Path,
) -> SweepPlan:
    """Validate every variant (:func:`validate_variants`), then write the manifest."""
    runs = validate_variants(config_loader, config, job_overrides, initial_job_idx)
    nums = [initial_job_idx + i for i in range(len(job_overrides))]
    kinds = {run.cluster.kind.value for run in runs}
    if len(kinds) > 1:
        raise SweepValidationError(
            f"variants mix clusters {sorted(kinds)}; sweep one cluster at a time"
        )
    scheduler = kinds.pop()
    manifest = _existing_or_new_manifest(sweep_dir, runs[0], scheduler)
    known = {v.num for v in manifest.variants}
    manifest.variants += [
        Variant(num=n, overrides=list(o), run_dir=str(n))
        for n, o in zip(nums, job_overrides)
        if n not in known
    ]
    manifest.swept = swept_keys([v.overrides for v in manifest.variants])
    manifest.write(sweep_dir)
    return SweepPlan(manifest, nums, runs, scheduler, sweep_dir)


def array_executor(plan: SweepPlan, folder: Path) -> submitit.Executor:
    """The executor of the sweep's job array, built like a single run's (same sbatch parameters,
    ``cluster.array_parallelism``, ``cluster.max_num_requeue``, ``cluster.python``)."""
    return make_executor(plan.runs[0].cluster, folder, ARRAY_JOB_NAME)


def submit_array(
    plan: SweepPlan, fn: Callable[..., Any], calls: Sequence[Sequence[Any]], folder: Path
) -> list[submitit.Job]:
    """Submit ``fn(*call)`` for every variant as ONE Slurm job array (one sbatch call); record
    the array's job id in the manifest. ``fn`` requeues a variant through its ``checkpoint()``."""
    executor = array_executor(plan, folder)
    jobs = executor.map_array(fn, *zip(*calls))
    plan.manifest.array_job_id = jobs[0].job_id.split("_")[0] if jobs else None
    plan.manifest.write(plan.sweep_dir)
    return jobs


def _existing_or_new_manifest(sweep_dir: Path, run: RunConfig, scheduler: str) -> Manifest:
    """Optuna launches in batches: later batches extend the same manifest."""
    if (sweep_dir / "sweep.json").exists():
        return Manifest.read(sweep_dir)
    sweep_id = f"{run.experiment_name}-{sweep_dir.name}-{time.strftime('%H%M%S')}"
    return Manifest(
        sweep_id=sweep_id, experiment_name=run.experiment_name, swept=[], scheduler=scheduler
    )


def hydra_error(exc: BaseException) -> str:
    """Hydra's refusal in our message shape: ``<key>=<value> <why>`` when OmegaConf names the
    key (a value of the wrong type), else Hydra's first line (unknown option, typo)."""
    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if key:
        why = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
        value = getattr(cause, "value", None)
        shown = f"={value!r}" if value is not None else ""
        return f"{key}{shown} is refused by Hydra: {why}"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
