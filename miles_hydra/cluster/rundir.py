"""The run directory: ``<output_root>/<experiment_name>/<time or sweep id>/<job id>``.

One directory per job attempt chain (a requeued job keeps its id, hence its directory and its
checkpoints). It holds what is needed to know what ran and to reproduce it::

    config.yaml        the resolved config
    env.json           the job's environment, secrets redacted
    git.json           commit, branch and status of the code that ran
    git.diff           uncommitted changes of that code (``git diff HEAD``)
    command.sh         the compiled command (miles backend; written by that backend)
    logs/              Ray node logs, job logs
    metrics.jsonl      per-step metrics (written by the engine)
    result.json        the job's final metrics
    checkpoints/       resumable state (written by the engine)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
SECRET_IN_URL = re.compile(r"(?<=://)[^/@\s]+:[^/@\s]+(?=@)")  # user:password@ in URLs
REPO_ROOT = Path(__file__).resolve().parents[2]


def group_dir(output_root: str | Path, experiment_name: str, group: Optional[str] = None) -> Path:
    """``<output_root>/<experiment_name>/<group>``; group defaults to the current time."""
    group = group or datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(output_root) / experiment_name / group


def job_run_dir(group: Path, job_id: str) -> Path:
    """The run directory of one job (array tasks have ids like ``123_4``: never shared)."""
    return group / job_id.replace("/", "_")


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with secret values replaced (by name, and credentials inside URLs)."""
    out = {}
    for name, value in sorted(env.items()):
        if SECRET_NAME.search(name):
            out[name] = REDACTED
        else:
            out[name] = SECRET_IN_URL.sub(REDACTED, value)
    return out


def _git(*args: str) -> Optional[str]:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state() -> tuple[dict[str, Any], str]:
    """(commit/branch/dirty files, diff against HEAD) of the code that runs; None if not a repo."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=normal")
    info = {
        "repo": str(REPO_ROOT),
        "commit": commit.strip() if commit else None,
        "branch": (_git("rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "dirty_files": status.splitlines() if status else [],
    }
    diff = _git("diff", "HEAD") if commit else _git("diff")
    return info, diff or ""


def config_yaml(cfg: Any) -> str:
    """YAML of a RunConfig dataclass or a DictConfig, interpolations resolved."""
    from omegaconf import DictConfig, OmegaConf

    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        node = OmegaConf.structured(cfg)
    elif isinstance(cfg, DictConfig):
        node = cfg
    else:
        node = OmegaConf.create(cfg)
    return OmegaConf.to_yaml(node, resolve=True)


def write_run_record(run_dir: Path, cfg: Any, env: Optional[Mapping[str, str]] = None) -> None:
    """Write config, redacted environment and git state into ``run_dir`` (idempotent)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml(cfg))
    environment = redact_env(os.environ if env is None else env)
    (run_dir / "env.json").write_text(json.dumps(environment, indent=1, sort_keys=True))
    info, diff = git_state()
    (run_dir / "git.json").write_text(json.dumps(info, indent=1))
    (run_dir / "git.diff").write_text(diff)


def write_result(run_dir: Path, result: Mapping[str, Any]) -> None:
    """The job's final metrics, as JSON (values that JSON cannot hold become strings)."""
    (run_dir / "result.json").write_text(json.dumps(dict(result), indent=1, default=str))


def read_result(run_dir: Path) -> Optional[dict[str, Any]]:
    path = run_dir / "result.json"
    return json.loads(path.read_text()) if path.exists() else None
