"""Host side of the miles parser oracle: run miles' own parse_args() on many argvs at once.

The parsing itself happens in ``oracle_child.py`` under a Python that has miles installed: the
oracle venv made by ``scripts/setup_miles_oracle.sh`` (CI, laptops) or the miles image's own
``python3`` (``MILES_ORACLE_PYTHON=python3`` inside the image). One subprocess parses every argv,
so the ~7 s import of miles/Megatron/SGLang is paid once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[4]
CHILD_SCRIPT = Path(__file__).with_name("oracle_child.py")
DEFAULT_VENV = REPO_ROOT / ".venv-miles-oracle"
SETUP_HINT = "run scripts/setup_miles_oracle.sh (about 4 minutes) or set MILES_ORACLE_PYTHON"
PINNED_RELEASE = "v0.1.0"  # the miles the image runs (docker/Dockerfile: radixark/miles:v0.1.0)
WHEEL_RELEASE = "0.0.2"  # PyPI miles-rl: the oracle venv's base, older than the pinned release


@dataclass
class OracleResult:
    """miles' verdict on one argv."""

    id: str  # the caller's name for this argv
    ok: bool  # parse_args() returned
    derived: dict[str, Any] = field(default_factory=dict)  # values miles derived (ok only)
    error: str = ""  # argparse/validation message (not ok only)
    seconds: float = 0.0  # time spent parsing this argv


@dataclass
class OracleRun:
    """All verdicts of one oracle subprocess."""

    results: list[OracleResult]  # one per argv, in order
    import_seconds: float  # time to import miles in the subprocess
    wall_seconds: float  # the whole subprocess
    log: str  # the subprocess's stdout + stderr (Megatron prints its full arg table)


def release_overlay(release: str = PINNED_RELEASE) -> Optional[list[str]]:
    """PYTHONPATH entries that put miles `release`'s source over the wheel's; [] for the wheel
    itself ("0.0.2"); None when that release's overlay is not set up here."""
    if release == WHEEL_RELEASE:
        return []
    venv = Path(os.environ.get("MILES_ORACLE_VENV", DEFAULT_VENV))
    overlay = venv / f"overlay-{release}"
    if not (overlay / ".pins").exists() or not (overlay / "miles-src" / "miles").is_dir():
        return None
    return [str(overlay / "miles-src"), str(overlay)]


def oracle_python() -> Optional[str]:
    """The interpreter that can import miles: $MILES_ORACLE_PYTHON, else the oracle venv's."""
    explicit = os.environ.get("MILES_ORACLE_PYTHON")
    if explicit:
        return explicit
    venv = Path(os.environ.get("MILES_ORACLE_VENV", DEFAULT_VENV))
    python = venv / "bin" / "python"
    if python.exists() and (venv / ".miles-oracle-pins").exists():
        return str(python)
    return None


def parse_many(
    argvs: dict[str, list[str]],
    python: Optional[str] = None,
    timeout_s: float = 600.0,
    release: Optional[str] = None,
) -> OracleRun:
    """Parse each argv (keyed by a name) with miles' parse_args in ONE subprocess (the venv's
    wheel, or `release`'s source overlay: release_overlay)."""
    python = python or oracle_python()
    if python is None:
        raise FileNotFoundError(f"no miles oracle interpreter found; {SETUP_HINT}")
    import time

    jobs = [{"id": key, "argv": list(argv)} for key, argv in argvs.items()]
    with tempfile.TemporaryDirectory(prefix="miles_oracle_host_") as tmp:
        jobs_path, results_path = Path(tmp, "jobs.json"), Path(tmp, "results.json")
        jobs_path.write_text(json.dumps(jobs))
        env = _child_env(release)
        start = time.monotonic()
        proc = subprocess.run(
            [python, str(CHILD_SCRIPT), "parse", str(jobs_path), str(results_path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=tmp,
        )
        wall = time.monotonic() - start
        log = proc.stdout + proc.stderr
        if proc.returncode != 0 or not results_path.exists():
            raise RuntimeError(
                f"miles oracle subprocess failed (exit {proc.returncode}):\n{log[-4000:]}"
            )
        payload = json.loads(results_path.read_text())
    results = [OracleResult(**r) for r in payload["results"]]
    return OracleRun(results, payload["import_seconds"], wall, log)


def _child_env(release: Optional[str] = None) -> dict[str, str]:
    """The child's env: ours minus anything that would steer it away from CPU parsing; with a
    release overlay when `release` is given (and set up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "WANDB_"))}
    overlay = release_overlay(release) if release else None
    if overlay:
        env["PYTHONPATH"] = os.pathsep.join(overlay)
        env["ORACLE_MILES_RELEASE"] = release
        env["ORACLE_TORCHVISION_AVAILABLE"] = "1"
    env["CUDA_DEVICE_MAX_CONNECTIONS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONHASHSEED"] = "0"  # some choices lists are built from sets: keep dumps reproducible
    return env


def dump_flags(
    out_path: Path, python: Optional[str] = None, release: Optional[str] = PINNED_RELEASE
) -> None:
    """Write the miles parser's flag table (see scripts/dump_miles_flags.py): `release`'s
    overlay in the oracle venv, or whatever miles `python` has when release is None."""
    python = python or oracle_python() or sys.executable
    if release and release_overlay(release) is None:
        raise FileNotFoundError(f"no miles {release} overlay; {SETUP_HINT}")
    proc = subprocess.run(
        [python, str(CHILD_SCRIPT), "dump", str(out_path)],
        capture_output=True,
        text=True,
        env=_child_env(release),
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"flag dump failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
