"""Validate every variant of a multirun before anything starts, and lay the sweep out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from miles_hydra.config import RunConfig, materialize
from miles_hydra.errors import ConfigError, MilesHydraError
from miles_hydra.sweep.manifest import Manifest, Variant, swept_keys


class SweepValidationError(MilesHydraError):
    """One or more variants are invalid; nothing was submitted."""


@dataclass
class SweepPlan:
    manifest: Manifest  # written before anything runs
    nums: list[int]  # variant numbers, in launch order
    runs: list[RunConfig]  # each variant, validated
    scheduler: str  # local | slurm
    slurm_parameters: dict[str, Any] = field(default_factory=dict)  # submitit parameters


def plan_sweep(
    config_loader: Any,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    sweep_dir: Path,
) -> SweepPlan:
    """Compose and validate each variant; raise SweepValidationError listing every bad one."""
    runs, errors = [], []
    nums = [initial_job_idx + i for i in range(len(job_overrides))]
    for num, overrides in zip(nums, job_overrides):
        try:
            composed = config_loader.load_sweep_config(config, list(overrides))
            runs.append(materialize(composed))
        except ConfigError as exc:
            errors.append(f"  variant #{num} ({' '.join(overrides)}): {exc}")
        except Exception as exc:  # Hydra composition errors (unknown group option, typo)
            errors.append(f"  variant #{num} ({' '.join(overrides)}): {_first_line(exc)}")
    if errors:
        raise SweepValidationError(
            f"{len(errors)} of {len(job_overrides)} sweep variants are invalid; nothing was "
            "submitted:\n" + "\n".join(errors)
        )
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
    params = slurm_parameters(runs[0]) if scheduler == "slurm" else {}
    return SweepPlan(manifest, nums, runs, scheduler, params)


def slurm_parameters(run: RunConfig) -> dict[str, Any]:
    """submitit parameters of one array task from the variant's ``cluster`` group."""
    from miles_hydra.cluster.submit import executor_parameters

    params = executor_parameters(run.cluster)
    params["slurm_array_parallelism"] = run.cluster.array_parallelism
    return params


def _existing_or_new_manifest(sweep_dir: Path, run: RunConfig, scheduler: str) -> Manifest:
    """Optuna launches in batches: later batches extend the same manifest."""
    if (sweep_dir / "sweep.json").exists():
        return Manifest.read(sweep_dir)
    sweep_id = f"{run.experiment_name}-{sweep_dir.name}-{time.strftime('%H%M%S')}"
    return Manifest(
        sweep_id=sweep_id, experiment_name=run.experiment_name, swept=[], scheduler=scheduler
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
