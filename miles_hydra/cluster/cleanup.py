"""Ray temp dirs left behind by dead jobs of this user, removed when the next job starts.

A job's Ray node keeps its sockets, logs and spilled objects in ``/tmp/mh_ray_<job id>_<attempt>
_<rank>`` (``/tmp/mh_ray_<job id>_<attempt>p<slot>_<rank>`` for each trial packed into one job;
``miles_hydra.cluster.ray_cluster``) and removes it when it stops cleanly. A job that
was killed (``kill -9``, a node failure, a requeue) cannot, so each job start removes the dirs of
this node that are provably dead:

- owned by this user (``lstat``: a link is never followed, another user's dir never touched);
- of a job that is no longer in the queue (``squeue``), or a local run whose process is gone,
  or an earlier attempt of this very job (a requeue).

When the queue cannot be read, Slurm jobs' dirs are kept: nothing is removed on a guess.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

TEMP_ROOT = Path("/tmp")
PREFIX = "mh_ray_"
# mh_ray_<job id>_<attempt>[p<slot>]_<rank>; job ids: 123, 123_4 (array task), local-<pid>;
# p<slot>: the slot of a trial packed into the job (sweep.packing, allocation.PACK_SLOT_ENV)
DIR_NAME = re.compile(
    r"^mh_ray_(?P<job>local-\d+|\d+(?:_\d+)?)_(?P<attempt>\d+)(?:p(?P<slot>\d+))?_(?P<rank>\d+)$"
)
QUERY_TIMEOUT_S = 20.0


def queued_job_ids(user: Optional[str] = None) -> Optional[set[str]]:
    """Ids of this user's jobs Slurm still has (``123`` and ``123_4`` forms); None when the
    queue cannot be read (no Slurm here, or it does not answer)."""
    if shutil.which("squeue") is None:
        return None
    argv = ["squeue", "-h", "-u", user or str(os.getuid()), "-o", "%i %A"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return set(proc.stdout.split())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_ray_dirs(current_job: str, current_attempt: int, root: Path = TEMP_ROOT) -> list[Path]:
    """This user's Ray temp dirs under ``root`` whose job (or attempt) is provably dead."""
    uid = os.getuid()
    queued: Optional[set[str]] = None
    queue_read = False
    dead = []
    for path in sorted(root.glob(f"{PREFIX}*")):
        match = DIR_NAME.match(path.name)
        try:
            st = path.lstat()
        except OSError:
            continue
        if match is None or st.st_uid != uid or not path.is_dir() or path.is_symlink():
            continue
        job, attempt = match["job"], int(match["attempt"])
        if job == current_job:  # the current attempt's other slots are sibling trials: kept
            if attempt != current_attempt:  # an earlier attempt of this job (requeued)
                dead.append(path)
            continue
        if job.startswith("local-"):
            if not _pid_alive(int(job.split("-", 1)[1])):
                dead.append(path)
            continue
        if not queue_read:
            queued, queue_read = queued_job_ids(), True
        if queued is not None and job not in queued and job.split("_")[0] not in queued:
            dead.append(path)
    return dead


def clean_dead_ray_dirs(current_job: str, current_attempt: int, root: Path = TEMP_ROOT) -> int:
    """Remove :func:`dead_ray_dirs`; return how many went."""
    removed = 0
    for path in dead_ray_dirs(current_job, current_attempt, root):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed += 1
            log.info("removed Ray temp dir of a dead job: %s", path)
    return removed
