"""The job: what runs on the allocation (or this machine) once the config is valid."""

from __future__ import annotations

import logging
import math
import traceback
from pathlib import Path
from typing import Any

from miles_hydra.config import RunConfig
from miles_hydra.config.backend import BackendKind
from miles_hydra.sweep.manifest import write_status

log = logging.getLogger(__name__)


def run_job(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run the configured backend in ``run_dir``; return its final metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.backend.kind is BackendKind.local:
        from miles_hydra.backends.local.loop import train

        return train(cfg, run_dir)
    from miles_hydra.backends.miles.runner import run_miles

    return run_miles(cfg, run_dir)


def run_tracked(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """run_job with ``status.json`` kept current (read by the sweep report)."""
    write_status(run_dir, "running")
    try:
        result = run_job(cfg, run_dir)
    except BaseException as exc:
        write_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}")
        log.debug(traceback.format_exc())
        raise
    write_status(run_dir, "preempted" if result.get("preempted") else "completed")
    return result


def objective(cfg: RunConfig, metrics: dict[str, Any]) -> float | None:
    """The number a sweeper optimizes: ``objective_metric``, else the first eval/* metric."""
    key = cfg.objective_metric
    if key is None:
        evals = sorted(k for k, v in metrics.items() if k.startswith("eval/") and _is_number(v))
        key = evals[0] if evals else "rollout/raw_reward"
    value = metrics.get(key)
    return float(value) if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def submit(cfg: RunConfig, run_dir: Path | None) -> float | None:
    """Hand a single run to the configured cluster; return its objective."""
    from miles_hydra.cluster.submit import submit_run

    metrics = submit_run(cfg, run_dir, run_tracked)
    return None if metrics is None else objective(cfg, metrics)
