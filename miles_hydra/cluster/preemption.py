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

SIGINT and SIGTERM outside a Slurm job (a run in the launcher's process, or a submitit local
subprocess) stop the run instead (:func:`stop_on_signals`): the first sets the same flag, so
the loop checkpoints after the step it is in and returns, if that comes within
``INTERRUPT_GRACE_S``; after that, or at a second signal, :class:`RunInterrupted` is raised in
the main thread, and every ``finally`` on the way out (Ray's shutdown first) runs.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional, Union

log = logging.getLogger(__name__)

PREEMPTED_KEY = "preempted"  # result key: true when the job stopped early to be requeued
WARNING_SIGNAL = signal.SIGUSR2  # submitit's default (--signal=USR2@<signal_delay_s>)

_Handler = Union[Callable[[int, Optional[types.FrameType]], Any], int, None]

_requested = threading.Event()
_previous_handler: _Handler = None


def requested() -> bool:
    """True once the warning signal arrived: checkpoint and return at the next step boundary.

    After a stop signal (:func:`stop_on_signals`), the loop's True here means it is stopping
    now: the grace timer is off, and its checkpoint and shutdown run to the end (a second
    signal still stops at once)."""
    if not _requested.is_set():
        return False
    if _active_stop is not None and _active_stop.timer is not None:
        _active_stop.timer.cancel()
    return True


def request() -> None:
    """Set the flag as the signal would (tests, or a job that wants to stop and requeue)."""
    _requested.set()


def request_stop() -> None:
    """Checkpoint at the next step boundary and end the job there, with no requeue (a pruned
    sweep trial). Safe from any thread: the requeue handler is dropped, the flag set."""
    global _previous_handler
    _previous_handler = None  # can_requeue() is now false: the job ends after its checkpoint
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


# ---------------------------------------------------------------- SIGINT / SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPT_GRACE_S = 5.0  # the loop may finish its step and checkpoint this long after a signal


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT/SIGTERM; ``signal_name`` says which. A KeyboardInterrupt,
    so no ``except Exception`` on the way out swallows it."""

    def __init__(self, signal_name: str, detail: str = "") -> None:
        super().__init__(detail or f"interrupted by {signal_name}")
        self.signal_name = signal_name
        self.detail = detail or f"interrupted by {signal_name}"

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it."""
        return 128 + int(signal.Signals[self.signal_name])


@dataclass
class StopRequest:
    """What :func:`stop_on_signals` saw: the first stop signal's name, or None."""

    signal_name: Optional[str] = None
    timer: Optional[threading.Timer] = None


def in_slurm_job() -> bool:
    """Inside a Slurm job submitit runs (SIGTERM there means preemption: submitit's business)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


@contextlib.contextmanager
def stop_on_signals(grace_s: float = INTERRUPT_GRACE_S) -> Iterator[StopRequest]:
    """SIGINT/SIGTERM inside the block: checkpoint-and-stop at the next step boundary (the
    preemption flag), then RunInterrupted after ``grace_s`` or at a second signal. A no-op off
    the main thread, inside Slurm jobs, and where another Python handler owns SIGINT already
    (the Ray node watch of ``ray_cluster.head_node`` raises its node-lost error through it)."""
    stop = StopRequest()
    owner = signal.getsignal(signal.SIGINT)
    taken = callable(owner) and owner is not signal.default_int_handler
    if threading.current_thread() is not threading.main_thread() or in_slurm_job() or taken:
        yield stop
        return

    def on_signal(signum: int, frame: Optional[types.FrameType]) -> None:
        name = signal.Signals(signum).name
        if stop.signal_name is not None:  # a second signal, or the grace period is over
            raise RunInterrupted(stop.signal_name)
        stop.signal_name = name
        log.warning("received %s: stopping after this step (again: stop at once)", name)
        stop.timer = threading.Timer(grace_s, _thread.interrupt_main, args=(signal.SIGINT,))
        _requested.set()
        stop.timer.daemon = True
        stop.timer.start()

    global _stop_handler, _active_stop
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    _stop_handler, _active_stop = on_signal, stop
    rearm()
    try:
        yield stop
    finally:
        _stop_handler, _active_stop = None, None
        if stop.timer is not None:
            stop.timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


_stop_handler: Optional[Callable[[int, Optional[types.FrameType]], None]] = None
_active_stop: Optional[StopRequest] = None


def rearm() -> None:
    """Put the stop handlers of an active :func:`stop_on_signals` back in place. ``ray.init``
    replaces the SIGTERM handler with its own (exit at once, Ray's processes left to find out
    by themselves): call this right after it."""
    if _stop_handler is None or threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop_handler)
