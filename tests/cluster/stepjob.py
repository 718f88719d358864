"""A small resumable job for the cluster tests (the real engine has its own tests).

It counts steps, one Ray task per step when Ray is up, appends every finished step to
``<run_dir>/steps.log`` and checkpoints the step counter in ``<run_dir>/checkpoints``. It polls
``preemption.requested()`` after each step exactly as the engine does, and stops with
``{"preempted": True}`` when asked.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from miles_hydra.cluster import preemption


class StepJob:
    """Job function stand-in (``run_with_status``): ``num_steps`` steps of ``step_s`` seconds,
    resumable."""

    def __init__(self, num_steps: int, step_s: float = 0.2, use_ray: bool = True) -> None:
        self.num_steps = num_steps
        self.step_s = step_s
        self.use_ray = use_ray

    def __call__(self, cfg: Any, run_dir: Path) -> dict:
        ckpt = run_dir / "checkpoints" / "step.json"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
        square = None
        if self.use_ray:
            import ray

            def _square(x: int) -> int:  # defined here: pickled by value, not by module
                return x * x

            square = ray.remote(num_cpus=0.1)(_square)
            alive = sum(1 for n in ray.nodes() if n["Alive"])
            (run_dir / "ray_nodes.txt").write_text(str(alive))
        attempt = os.environ.get("SLURM_RESTART_COUNT", "0")
        for step in range(start + 1, self.num_steps + 1):
            time.sleep(self.step_s)
            value = ray.get(square.remote(step), timeout=60) if square else step * step
            assert value == step * step
            with open(run_dir / "steps.log", "a") as log:
                log.write(f"{step} {attempt}\n")
            tmp = ckpt.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": step}))
            tmp.replace(ckpt)
            if preemption.requested():
                return {preemption.PREEMPTED_KEY: True, "step": step}
        result: dict[str, Any] = {"step": self.num_steps, "resumed_from": start}
        if self.use_ray:
            result["ray_nodes"] = sum(1 for n in ray.nodes() if n["Alive"])
            result["ray_cpus"] = ray.cluster_resources().get("CPU", 0.0)
        return result
