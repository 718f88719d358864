"""What a run does, and how the launcher hands it to the cluster.

- :func:`run_with_status` is the *job function*: the configured backend in the run directory,
  with ``status.json`` kept current; it runs on node 0 once Ray is up.
- :func:`allocation_task` wraps it into the :class:`AllocationTask` every task of the allocation
  runs (``miles_hydra.cluster.allocation``), saying what this backend needs from Ray.
- :func:`launch_run` hands a single run to the configured cluster (here, submitit, Slurm);
  :func:`run_sweep_variant` runs a sweep variant the sweep launcher already placed.
- :func:`objective_value` is the number a sweeper optimizes.
"""

from __future__ import annotations

import logging
import math
import sys
import traceback
from pathlib import Path
from typing import Any

from miles_hydra.cluster import preemption
from miles_hydra.cluster.allocation import AllocationTask
from miles_hydra.cluster.submit import submit_run
from miles_hydra.config import RunConfig
from miles_hydra.config.backend import BackendKind
from miles_hydra.launch import resume
from miles_hydra.launch.console import quiet_console
from miles_hydra.sweep.manifest import write_status

log = logging.getLogger(__name__)


def run_backend(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run the configured backend in ``run_dir``, library warnings kept off the console
    (``console.quiet_console``); return its final metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with quiet_console(run_dir, cfg.logging.verbose):
        if cfg.backend.kind is BackendKind.local:
            from miles_hydra.backends.local.loop import train

            return train(cfg, run_dir)
        from miles_hydra.backends.miles.runner import run_miles

        return run_miles(cfg, run_dir)


def run_with_status(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """run_backend with ``status.json`` kept current (read by the sweep report).

    SIGINT/SIGTERM (outside Slurm) stop the run: a checkpoint after the current step if it
    comes quickly, state ``interrupted``, and :class:`RunInterrupted` out of here."""
    write_status(run_dir, "running")
    with preemption.stop_on_signals() as stop:
        try:
            result = run_backend(cfg, run_dir)
        except BaseException as exc:
            # stopped by a signal: also what broke because of it (a Ctrl-C reaches Ray too)
            if stop.signal_name or isinstance(exc, KeyboardInterrupt):
                name = stop.signal_name or getattr(exc, "signal_name", None) or "SIGINT"
                write_status(run_dir, "interrupted", signal=name, checkpointed=False)
                log.debug(traceback.format_exc())
                detail = _interrupted(cfg, name, run_dir, None)
                raise preemption.RunInterrupted(name, detail) from None
            write_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}")
            log.debug(traceback.format_exc())
            raise
    if stop.signal_name is not None and result.get(preemption.PREEMPTED_KEY):
        step = result.get("step")
        checkpointed = step is not None  # None: stopped during the warm-start
        write_status(
            run_dir, "interrupted", signal=stop.signal_name, checkpointed=checkpointed, step=step
        )
        raise preemption.RunInterrupted(
            stop.signal_name, _interrupted(cfg, stop.signal_name, run_dir, step)
        )
    write_status(run_dir, "preempted" if result.get("preempted") else "completed")
    return result


def _interrupted(cfg: RunConfig, signal_name: str, run_dir: Path, step: int | None) -> str:
    if step is None:
        return f"interrupted by {signal_name} (no checkpoint of this step); run dir {run_dir}"
    return (
        f"interrupted by {signal_name}: checkpointed after rollout {step}; continue in place "
        f"with: python launch.py resume={run_dir}"
    )


def allocation_task(cfg: RunConfig) -> AllocationTask:
    """What every task of ``cfg``'s allocation runs: Ray, then :func:`run_with_status` on node 0.

    miles submits its trainer with ``ray job submit``, so its Ray head serves the job API.
    """
    return AllocationTask(run_with_status, ray_job_api=cfg.backend.kind is BackendKind.miles)


def objective_value(cfg: RunConfig, metrics: dict[str, Any]) -> float | None:
    """The number a sweeper optimizes: ``objective_metric``, else the first eval/* metric."""
    key = cfg.objective_metric
    if key is None:
        evals = sorted(k for k, v in metrics.items() if k.startswith("eval/") and _is_number(v))
        key = evals[0] if evals else "rollout/raw_reward"
    value = metrics.get(key)
    return float(value) if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def launch_run(cfg: RunConfig, run_dir: Path | None) -> float | None:
    """Hand a single run to the configured cluster; return its objective. Interrupted
    (SIGINT/SIGTERM): one line, no traceback, exit code 128 + the signal."""
    try:
        metrics = submit_run(cfg, run_dir, allocation_task(cfg), resume.job_dir())
    except preemption.RunInterrupted as exc:
        print(f"miles_hydra: {exc.detail}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("miles_hydra: interrupted by SIGINT", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    return None if metrics is None else objective_value(cfg, metrics)


def run_sweep_variant(cfg: RunConfig, run_dir: Path) -> float | None:
    """Run a sweep variant in this allocation task (a Slurm array task, or here), in the run
    directory the sweep launcher chose; return its objective (None on tasks other than 0)."""
    metrics = allocation_task(cfg)(cfg, str(run_dir), append_job_id=False)
    return None if metrics is None else objective_value(cfg, metrics)
