"""Job functions for the Slurm faults (pickled by value: the job has no tests/ on its path).

``FaultJob`` counts steps like a training loop: one Ray task per step when Ray is up, each
finished step appended to ``<run_dir>/steps.log`` as ``<step> <attempt>`` (the log is the
checkpoint: a step is done once its line is written), ``status.json`` kept like
``run_with_status`` does, the driver's pid in ``driver.pid``; it polls the preemption flag
after each step and stops with ``{"preempted": True}`` when asked. ``SecretProbe`` reports what
the job's environment holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from miles_hydra.cluster import preemption
from miles_hydra.cluster.secrets import SECRETS_FILE_ENV
from miles_hydra.sweep.manifest import write_status

STEP_TIMEOUT_S = 10.0  # a step that takes longer has failed


def done_steps(run_dir: Path) -> list[int]:
    log = run_dir / "steps.log"
    return [int(line.split()[0]) for line in log.read_text().splitlines()] if log.exists() else []


def attempts(run_dir: Path) -> set[str]:
    return {line.split()[1] for line in (run_dir / "steps.log").read_text().splitlines()}


class FaultJob:
    def __init__(self, num_steps: int, step_s: float = 0.2) -> None:
        self.num_steps = num_steps
        self.step_s = step_s

    def __call__(self, cfg: Any, run_dir: Path) -> dict:
        (run_dir / "driver.pid").write_text(str(os.getpid()))
        write_status(run_dir, "running")
        try:
            return self._steps(cfg, run_dir)
        except BaseException as exc:  # as run_with_status does
            write_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}")
            raise

    def _steps(self, cfg: Any, run_dir: Path) -> dict:
        square = None
        if cfg.cluster.start_ray:
            import ray

            def _square(x: int) -> int:
                return x * x

            square = ray.remote(num_cpus=0.1)(_square)
        start = len(done_steps(run_dir))
        attempt = os.environ.get("SLURM_RESTART_COUNT", "0")
        for step in range(start + 1, self.num_steps + 1):
            time.sleep(self.step_s)
            if square is not None:
                # a step's own deadline: a lost raylet fails the step, as an engine's would
                assert ray.get(square.remote(step), timeout=STEP_TIMEOUT_S) == step * step
            with open(run_dir / "steps.log", "a") as log:
                log.write(f"{step} {attempt}\n")
            if preemption.requested():
                write_status(run_dir, "preempted", step=step)
                return {preemption.PREEMPTED_KEY: True, "step": step}
        write_status(run_dir, "completed")
        return {"step": self.num_steps, "resumed_from": start}


class SecretProbe:
    """Says which secret reached the job and where from; waits ``hold_s`` so the test can read
    Slurm's record of the running job."""

    def __init__(self, names: list[str], hold_s: float) -> None:
        self.names = names
        self.hold_s = hold_s

    def __call__(self, cfg: Any, run_dir: Path) -> dict:
        (run_dir / "started").write_text("1")
        time.sleep(self.hold_s)
        file = os.environ.get(SECRETS_FILE_ENV)
        return {
            "secrets": {n: os.environ.get(n) for n in self.names},
            "file": file,
            "file_mode": oct(os.stat(file).st_mode & 0o777) if file else None,
            "path": os.environ.get("PATH"),
        }
