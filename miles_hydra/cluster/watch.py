"""The launcher's view of a Slurm job, from the scheduler itself (``squeue``, then ``sacct``).

submitit learns that a job died by polling ``sacct`` slowly and then waiting for a result file
that a killed job never writes (112 s measured after ``kill -9`` of the job's driver). Here the
launcher asks the scheduler every ``POLL_S`` and ends the wait as soon as Slurm has the job in a
final state without a result: it names the state (FAILED, CANCELLED, TIMEOUT, NODE_FAIL,
PREEMPTED, ...), and corrects the run's ``status.json``, which the dead job could not.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from miles_hydra.errors import ClusterError
from miles_hydra.sweep.manifest import read_status, write_status

log = logging.getLogger(__name__)

POLL_S = 1.0  # interval between scheduler queries
CONFIRM = 2  # consecutive polls that must agree on a final state (no race with a requeue)
QUERY_TIMEOUT_S = 20.0  # a squeue / sacct call that takes longer counts as "no answer"
# final states of a job that ended without finishing its work (sacct/squeue spelling)
DEAD_STATES = frozenset(
    {
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)
LIVE_STATUSES = ("pending", "running")  # status.json states a dead job must not keep


def _query(argv: list[str]) -> Optional[str]:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.strip().splitlines() if proc.returncode == 0 else []
    return lines[0].split()[0] if lines and lines[0].split() else None


def scheduler_state(job_id: str) -> Optional[str]:
    """Slurm's state of ``job_id`` (``123`` or ``123_4``): ``squeue`` while it is queued or
    running, else ``sacct``; None when neither answers (yet)."""
    state = _query(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if state:
        return state
    return _query(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id])


def until_done(job: Any, run_dir: Optional[Path] = None, poll_s: float = POLL_S) -> None:
    """Return once ``job`` (a submitit SlurmJob) has its result, or Slurm says it completed;
    raise ClusterError as soon as Slurm has it dead without a result (``status.json`` of
    ``run_dir`` corrected first)."""
    result_file = Path(job.paths.result_pickle)
    dead_polls = 0
    while True:
        if result_file.exists():
            return
        state = scheduler_state(str(job.job_id))
        if state == "COMPLETED":
            return
        dead_polls = dead_polls + 1 if state in DEAD_STATES else 0
        if dead_polls >= CONFIRM and not result_file.exists():
            raise ClusterError(dead_job_message(job, state, run_dir))
        time.sleep(poll_s)


def dead_job_message(job: Any, state: str, run_dir: Optional[Path]) -> str:
    """Correct the run's status and say what happened, with the log paths."""
    if run_dir is not None:
        mark_dead(run_dir, state)
    where = f"; run dir {run_dir}" if run_dir is not None else ""
    return (
        f"job {job.job_id} ended {state} in Slurm without a result{where}; "
        f"logs: {job.paths.stdout} and {job.paths.stderr}"
    )


def mark_dead(run_dir: Path, state: str) -> bool:
    """Record in ``status.json`` that the job ended ``state``, unless the job already wrote a
    final state itself; True when corrected."""
    current = read_status(run_dir).get("state")
    if current not in LIVE_STATUSES or not run_dir.exists():
        return False
    write_status(run_dir, "failed", slurm_state=state, error=f"the job ended {state} in Slurm")
    log.info("status of %s corrected: %s -> failed (%s)", run_dir, current, state)
    return True
