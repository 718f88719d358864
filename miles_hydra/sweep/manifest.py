"""The sweep manifest (``<sweep_dir>/sweep.json``) and each run's ``status.json``.

The launcher writes the manifest once every variant has been validated; each job writes its
own status as it starts and ends. The report reads both, so it works on a partial sweep.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

IN_JOB_ENV = "MILES_HYDRA_IN_JOB"  # set by the sweep launcher inside each variant's job
SWEEP_ID_ENV = "MILES_HYDRA_SWEEP_ID"  # the sweep id, for grouping (wandb group)
MANIFEST = "sweep.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"


@dataclass
class Variant:
    num: int  # position in the sweep (also the variant's subdirectory name)
    overrides: list[str]  # the Hydra overrides that make this variant
    run_dir: str  # where its run directory is (relative to the sweep dir)


@dataclass
class Manifest:
    sweep_id: str  # groups the variants' runs (wandb group too)
    experiment_name: str  # the experiment the sweep belongs to
    swept: list[str]  # keys that differ between variants
    variants: list[Variant] = field(default_factory=list)  # every submitted variant
    created: float = field(default_factory=time.time)  # unix time of submission
    scheduler: str = "local"  # cluster.kind of the variants: local | submitit_local | slurm
    array_job_id: str | None = None  # the Slurm array's job id

    def write(self, sweep_dir: Path) -> None:
        atomic_write_json(sweep_dir / MANIFEST, asdict(self))

    @classmethod
    def read(cls, sweep_dir: Path) -> Manifest:
        data = json.loads((sweep_dir / MANIFEST).read_text())
        data["variants"] = [Variant(**v) for v in data["variants"]]
        return cls(**data)


def swept_keys(job_overrides: list[list[str]]) -> list[str]:
    """Keys whose value differs between variants, in first-seen order."""
    values: dict[str, set[str]] = {}
    for overrides in job_overrides:
        for item in overrides:
            key, _, value = item.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    return [k for k, v in values.items() if len(v) > 1 or len(job_overrides) == 1]


def write_status(run_dir: Path, state: str, **extra: Any) -> None:
    """Record a run's state: running | completed | failed | preempted."""
    payload = {"state": state, "time": time.time(), "host": os.uname().nodename, **extra}
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        if key in os.environ:
            payload[key.lower()] = os.environ[key]
    atomic_write_json(run_dir / STATUS, payload)


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATUS
    if not path.exists():
        return {"state": "pending"}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"state": "unknown"}


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
