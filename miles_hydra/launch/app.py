"""What launch.py does with a composed config: validate, then plan, check or run."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from miles_hydra.config import Mode, RunConfig
from miles_hydra.config.store import materialize
from miles_hydra.errors import ConfigError
from miles_hydra.launch import resume
from miles_hydra.sweep.manifest import IN_JOB_ENV

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> float | None:
    """Validate the whole config before anything runs; then act on ``cfg.mode``."""
    try:
        run = materialize(cfg)
        resume.check(_task_config(cfg))  # resume=<run_dir>: the same config, or told otherwise
    except ConfigError as exc:
        discard_run_dir(cfg.output_root)
        print(f"miles_hydra: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    if run.mode is Mode.plan:
        from miles_hydra.launch import preflight
        from miles_hydra.launch.hardware import detect_hardware
        from miles_hydra.launch.plan import render_plan

        discard_run_dir(cfg.output_root)
        print(render_plan(run, hardware=detect_hardware(run)))
        checks = preflight.run_checks(run)
        print(preflight.render_checks(checks))
        if preflight.failures(checks):  # rc 2 like the launcher's refusal
            sys.exit(2)
        return None
    if run.mode is Mode.check:
        from miles_hydra.launch.plan import run_check

        discard_run_dir(cfg.output_root)
        sys.exit(run_check(run))
    return _run(run)


def _task_config(cfg: DictConfig) -> dict:
    """The config as Hydra saves it in ``.hydra/config.yaml`` (without ``hydra``), resolved."""
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return OmegaConf.to_container(task, resolve=True, enum_to_str=True)


def discard_run_dir(output_root: str) -> None:
    """Remove the run directory Hydra made before the task function ran (``.hydra/`` and the
    job log) when nothing will run in it: ``mode=plan``, ``mode=check`` and refused configs
    leave no directory behind. Its parents below ``output_root`` go too when left empty. A
    directory holding anything else, and multirun (sweep) directories, are kept as they are."""
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode is not RunMode.RUN or not hc.runtime.output_dir:
        return
    run_dir = Path(hc.runtime.output_dir)
    own = {hc.output_subdir, f"{hc.job.name}.log"} - {None}
    if not run_dir.is_dir() or any(entry.name not in own for entry in run_dir.iterdir()):
        return
    for handler in list(logging.root.handlers):  # Hydra's job log file is open inside it
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(
            run_dir
        ):
            logging.root.removeHandler(handler)
            handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    root = Path(output_root).resolve()
    parent = run_dir.resolve().parent
    while parent != root and parent.is_relative_to(root):  # e.g. <output_root>/<experiment_name>
        try:
            parent.rmdir()  # only when empty: another run may be writing next to this one
        except OSError:
            break
        parent = parent.parent


def _run(run: RunConfig) -> float | None:
    from miles_hydra.launch.plan import advisories
    from miles_hydra.launch.run import launch_run, run_sweep_variant

    for advice in advisories(run):
        log.warning(advice)

    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    if os.environ.get(IN_JOB_ENV) and run_dir is not None:
        # A sweep variant, already placed by the launcher (a Slurm array task, or here).
        return run_sweep_variant(run, run_dir)
    from miles_hydra.launch import preflight

    if not preflight.passes(run):  # files, reward function, checkpoint, Slurm: before submitting
        discard_run_dir(run.output_root)
        sys.exit(2)
    return launch_run(run, run_dir)
