"""Is a Slurm node idle here, and small helpers for tests that submit real jobs."""

from __future__ import annotations

import contextlib
import glob
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest


def _idle_slurm() -> str:
    """Why Slurm tests cannot run here, or '' when a node is idle."""
    if shutil.which("sinfo") is None:
        return "no Slurm here (sinfo not found); run: bash scripts/slurm_single_node.sh up"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld not answering"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s in ("idle", "mix") for s in states):
        return f"no idle Slurm node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return ""


NO_SLURM = _idle_slurm()
slurm_only = pytest.mark.skipif(bool(NO_SLURM), reason=NO_SLURM)


def sacct_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def no_ray_dirs_left(job_id: str) -> bool:
    """The job's Ray nodes removed their temp dirs (a clean stop)."""
    return not glob.glob(f"/tmp/mh_ray_{job_id}_*")


def ray_processes_left(job_id: str) -> list[str]:
    """Command lines of live processes that belong to the job's Ray nodes (read, never killed)."""
    marker = f"/tmp/mh_ray_{job_id}_".encode()
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            data = open(cmdline, "rb").read()
        except OSError:
            continue
        if marker in data:
            found.append(data.replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


def wait_for_state(job_id: str, state: str, timeout_s: float) -> bool:
    """Accounting lags the job's end by a moment: poll sacct."""
    deadline = time.monotonic() + timeout_s
    while sacct_state(job_id) != state:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def ray_processes_gone(job_id: str, timeout_s: float) -> list[str]:
    """Poll until no Ray process of the job lives; what is still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (left := ray_processes_left(job_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@contextlib.contextmanager
def cancelled_on_failure(job: Any) -> Iterator[Any]:
    """Never leave this test's job running on the shared node when the test fails."""
    try:
        yield job
    except BaseException:
        if not job.done():
            job.cancel(check=False)
        raise
