"""Slurm's warning signal: a flag the training loop polls, then a requeue through submitit.

Slurm sends USR2 ``cluster.signal_delay_s`` seconds before the time limit (and ``scancel
--signal=USR2`` or a preempting scheduler can send it at any time). submitit's own handler would
requeue at once, in the middle of a training step. We put a flag-setting handler in front of it:

1. :func:`install` (called by the job body, main thread) swaps submitit's USR2 handler for ours;
2. the training loop polls :func:`requested` after each step and, when true, saves a checkpoint
   and returns early with ``{PREEMPTED_KEY: True, ...}``;
3. the job body calls :func:`requeue_and_exit`, which runs submitit's original handler: it calls
   the job's ``checkpoint()`` (same arguments again), requeues the job (``scontrol requeue``,
   counting time-limit requeues against ``cluster.max_num_requeue``) and exits.

The requeued attempt runs with the same run directory and resumes from its checkpoints.
"""

from __future__ import annotations

import logging
import signal
import threading
import types
from collections.abc import Callable
from typing import Any, Optional, Union

log = logging.getLogger(__name__)

PREEMPTED_KEY = "preempted"  # result key: true when the job stopped early to be requeued
WARNING_SIGNAL = signal.SIGUSR2  # submitit's default (--signal=USR2@<signal_delay_s>)

_Handler = Union[Callable[[int, Optional[types.FrameType]], Any], int, None]

_requested = threading.Event()
_previous_handler: _Handler = None


def requested() -> bool:
    """True once the warning signal arrived: checkpoint and return at the next step boundary."""
    return _requested.is_set()


def request() -> None:
    """Set the flag as the signal would (tests, or a job that wants to stop and requeue)."""
    _requested.set()


def clear() -> None:
    """Forget a request (a new attempt starts clean)."""
    _requested.clear()


def _on_signal(signum: int, frame: Optional[types.FrameType]) -> None:
    log.warning(
        "received %s: will checkpoint and requeue after this step", signal.Signals(signum).name
    )
    _requested.set()


def install() -> None:
    """Route the warning signal to the flag (main thread only; elsewhere nothing to route)."""
    global _previous_handler
    clear()
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(WARNING_SIGNAL)
    if current is not _on_signal:
        _previous_handler = current
    signal.signal(WARNING_SIGNAL, _on_signal)


def uninstall() -> None:
    """Give the warning signal back to the handler that was there before :func:`install`."""
    global _previous_handler
    if signal.getsignal(WARNING_SIGNAL) is _on_signal:
        signal.signal(WARNING_SIGNAL, _previous_handler or signal.SIG_DFL)
    _previous_handler = None


def can_requeue() -> bool:
    """True when a submitit handler (Slurm job) is there to requeue us."""
    return callable(_previous_handler)


def requeue_and_exit() -> None:
    """Run submitit's checkpoint-and-requeue handler: requeue this job, then exit (SystemExit).

    Raises SystemExit on success (as submitit does) and submitit's UncompletedJobError when the
    job may not be requeued any more (e.g. ``cluster.max_num_requeue`` time-outs reached).
    """
    handler = _previous_handler
    if not callable(handler):
        raise RuntimeError("no submitit handler to requeue through (not a Slurm job)")
    uninstall()
    log.warning("requeueing the job through submitit")
    handler(int(WARNING_SIGNAL), None)
