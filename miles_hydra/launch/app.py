"""What launch.py does with a composed config: validate, then plan, check or run."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from miles_hydra.config import Mode, RunConfig, materialize
from miles_hydra.errors import ConfigError
from miles_hydra.sweep.manifest import IN_JOB_ENV

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> float | None:
    """Validate the whole config before anything runs; then act on ``cfg.mode``."""
    try:
        run = materialize(cfg)
    except ConfigError as exc:
        print(f"miles_hydra: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    if run.mode is Mode.plan:
        from miles_hydra.launch.plan import render_plan

        print(render_plan(run))
        return None
    if run.mode is Mode.check:
        from miles_hydra.launch.plan import run_check

        sys.exit(run_check(run))
    return _run(run)


def _run(run: RunConfig) -> float | None:
    from miles_hydra.launch.plan import advisories
    from miles_hydra.launch.run import launch_run, run_sweep_variant

    for advice in advisories(run):
        log.warning(advice)

    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    if os.environ.get(IN_JOB_ENV) and run_dir is not None:
        # A sweep variant, already placed by the launcher (a Slurm array task, or here).
        return run_sweep_variant(run, run_dir)
    return launch_run(run, run_dir)
