"""``python launch.py resume=<run_dir> [overrides]``: continue a run in its own directory.

The run is composed again from the overrides it was launched with (``<run_dir>/.hydra/
overrides.yaml``) plus the new ones, in the same directory (``hydra.run.dir``), with
``checkpoint.resume=true``: the engine finds its checkpoints there, truncates metrics.jsonl to
the checkpoint's rollout and appends, and continues the same W&B/MLflow run. A resumed run that
would differ from the saved config (``.hydra/config.yaml``) is refused with the differences,
except for the keys that extending or moving a run needs (``FREE_KEYS``), unless
``resume_allow_changes=true`` is given; the saved ``.hydra`` files are then left as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from miles_hydra.errors import ConfigError

RESUME_ARG = "resume="
ALLOW_ARG = "resume_allow_changes="
# Keys a resumed run may change without being told: more rollouts, where it runs, how it logs.
FREE_KEYS = (
    "mode",
    "rollout.num_rollout",
    "checkpoint.resume",
    "checkpoint.save_interval",
    "checkpoint.keep_last",
    "cluster.",
    "logging.",
)


@dataclass
class Resume:
    run_dir: Path  # what the user named: the job's run dir, or the launch dir holding .hydra
    job_dir: Path | None  # the job's run dir to continue in; None = the launch ran no job yet
    saved_config: dict[str, Any]  # the run's .hydra/config.yaml
    saved_files: dict[Path, str]  # .hydra/*.yaml as they were, put back when refused
    allow_changes: bool


_active: Resume | None = None


def rewrite_argv(argv: list[str]) -> list[str]:
    """``argv`` with ``resume=<dir>`` replaced by the run's own overrides, the new ones (which
    win) and its directory; unchanged when there is no ``resume=``. Raises ConfigError."""
    global _active
    wanted = [arg for arg in argv if arg.startswith(RESUME_ARG)]
    if not wanted:
        return argv
    value = wanted[-1].partition("=")[2]
    if any(arg in ("-m", "--multirun") for arg in argv):
        raise ConfigError("resume", value, "resumes one run, not a sweep", "drop -m")
    group, job = _locate(value)
    hydra_dir = group / ".hydra"
    allow = [arg.partition("=")[2] for arg in argv if arg.startswith(ALLOW_ARG)]
    saved_overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
    new = [arg for arg in argv if not arg.startswith((RESUME_ARG, ALLOW_ARG))]
    _active = Resume(
        run_dir=job or group,
        job_dir=job,
        saved_config=yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {},
        saved_files={p: p.read_text() for p in sorted(hydra_dir.glob("*.yaml"))},
        allow_changes=bool(allow) and allow[-1].lower() in ("true", "1", "yes"),
    )
    merged = _merge([*saved_overrides, *new, "checkpoint.resume=true"])
    return [*merged, f"hydra.run.dir={group}"]


def job_dir() -> Path | None:
    """The run directory a resumed run continues in (None when not resuming)."""
    return None if _active is None else _active.job_dir


def _locate(value: str) -> tuple[Path, Path | None]:
    """``(launch dir with .hydra/, job run dir)`` for what the user named: either of the two
    (``runs/default/<time>`` holds one job dir per launch: ``local-<pid>`` or a Slurm job id)."""
    path = Path(value).expanduser().resolve()
    job: Path | None
    if _launched_here(path):
        group, job = path, None
    elif _launched_here(path.parent):
        group, job = path.parent, path
    else:
        raise ConfigError(
            "resume",
            value,
            "is not a run directory (neither it nor its parent has .hydra/overrides.yaml)",
            "pass the run dir the launcher printed, e.g. runs/default/<time>/local-<pid>",
        )
    if job is None:
        jobs = sorted(p for p in group.iterdir() if (p / "status.json").is_file())
        if len(jobs) > 1:
            raise ConfigError(
                "resume",
                value,
                f"holds {len(jobs)} runs ({', '.join(p.name for p in jobs)})",
                "pass the one to continue",
            )
        job = jobs[0] if jobs else None
    return group, job


def _launched_here(path: Path) -> bool:
    hydra_dir = path / ".hydra"
    return (hydra_dir / "overrides.yaml").is_file() and (hydra_dir / "config.yaml").is_file()


def check(new_config: dict[str, Any]) -> None:
    """Refuse a resumed run whose resolved config differs from the saved one outside
    ``FREE_KEYS`` (unless allowed); the saved ``.hydra`` files are restored before raising."""
    if _active is None:
        return
    changes = [
        (key, old, new)
        for key, old, new in differences(_resolved(_active.saved_config), new_config)
        if not key.startswith(FREE_KEYS)
    ]
    if not changes or _active.allow_changes:
        return
    for path, text in _active.saved_files.items():  # Hydra rewrote them when the job started
        path.write_text(text)
    lines = "\n".join(f"    {key}: {old!r} -> {new!r}" for key, old, new in changes)
    raise ConfigError(
        "resume",
        str(_active.run_dir),
        "would continue with a different config (drop those overrides, or add "
        f"resume_allow_changes=true to continue anyway):\n{lines}",
    )


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    """The saved config with its interpolations resolved, as the new one is compared."""
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    except OmegaConfBaseException:  # e.g. a resolver this process does not have
        return config
    assert isinstance(resolved, dict)
    return resolved


def differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf that differs between two config trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _merge(overrides: list[str]) -> list[str]:
    """One override per key, the last one winning, in first-seen order (Hydra refuses a key
    given twice)."""
    by_key: dict[str, str] = {}
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        by_key.pop(key, None)
        by_key[key] = override
    return list(by_key.values())
