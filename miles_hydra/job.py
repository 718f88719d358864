"""The job: what runs on the allocation (or this machine) once the config is valid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from miles_hydra.config import RunConfig
from miles_hydra.config.backend import BackendKind

log = logging.getLogger(__name__)


def run_job(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run the configured backend in ``run_dir``; return its final metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.backend.kind is BackendKind.local:
        from miles_hydra.engine.driver import train

        return train(cfg, run_dir)
    from miles_hydra.miles.runner import run_miles

    return run_miles(cfg, run_dir)


def submit(cfg: RunConfig, run_dir: Path | None) -> float | None:
    """Hand the job to the configured cluster; return the sweep objective if there is one."""
    from miles_hydra.cluster.submit import submit_run

    return submit_run(cfg, run_dir, run_job)
