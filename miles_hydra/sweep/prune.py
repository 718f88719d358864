"""Prune requests: how the sweep loop stops a trial's job cleanly.

The loop (in the launcher) writes ``<run_dir>/prune.json``; the job (a thread started by the
sweep launcher around the variant) sees it within a second and asks the training loop to stop
at the next rollout boundary without a requeue (``preemption.request_stop``): the loop saves a
checkpoint, Ray shuts down, the job ends, and its ``status.json`` says ``pruned``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from miles_hydra.cluster import preemption
from miles_hydra.sweep.manifest import atomic_write_json, read_status, write_status

log = logging.getLogger(__name__)

PRUNE_FILE = "prune.json"
POLL_S = 1.0  # how often the job looks for a prune request


def request(run_dir: Path, **why: Any) -> None:
    """Ask the trial in ``run_dir`` to stop (launcher side)."""
    atomic_write_json(run_dir / PRUNE_FILE, {"requested_at": time.time(), **why})


def requested(run_dir: Path) -> bool:
    return (run_dir / PRUNE_FILE).exists()


def read(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / PRUNE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@contextlib.contextmanager
def watch(run_dir: Path, poll_s: float = POLL_S) -> Iterator[None]:
    """Inside the job: while the block runs, turn a prune request into a clean stop; after it,
    mark the run ``pruned`` if it was."""
    done = threading.Event()

    def look() -> None:
        while not done.wait(poll_s):
            if requested(run_dir):
                log.warning("prune requested (%s): stopping after this rollout", read(run_dir))
                preemption.request_stop()
                return

    thread = threading.Thread(target=look, name="prune-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
        if requested(run_dir) and read_status(run_dir).get("state") != "failed":
            write_status(run_dir, "pruned", **read(run_dir))
