"""The job's console: the progress bar and the launcher's lines; the detail in ``<run_dir>/logs``.

With ``logging.verbose=false`` (the default), while a run runs:

- the local engine's actors write their output to ``logs/trainer.log`` and
  ``logs/engine_<i>.log`` instead of the console (``ray_session`` passes the directory to the
  job's Ray workers; each actor's ``__init__`` starts with :func:`redirect_actor_output`);
- Python warnings and the log records of libraries (torch, transformers, Ray, matplotlib, ...)
  below ERROR go to ``logs/warnings.log``, one line each naming the process that wrote it
  (``driver``, ``trainer``, ``engine_0``, ...); at the end the console gets one line,
  ``miles_hydra: N warnings (K distinct), see <run_dir>/logs/warnings.log``.

miles_hydra's own records and every ERROR still reach the console. ``logging.verbose=true``
leaves the console as Ray and the libraries make it: actor lines with Ray's
``(TrainerActor pid=...)`` prefix, every warning as it comes.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

LOG_DIR = "logs"  # <run_dir>/logs: actor output, warnings.log, the job log
WARNINGS_FILE = "warnings.log"  # <run_dir>/logs/warnings.log: every process's warnings
OUR_LOGGERS = ("miles_hydra", "hydra", "__main__")  # records that always reach the console
# Set by the local engine's ray_session (verbose=false) in the job's Ray runtime env: where the
# actors write their output. Process wiring, read only by redirect_actor_output.
ACTOR_LOG_DIR_ENV = "MILES_HYDRA_ACTOR_LOG_DIR"


def is_ours(record: logging.LogRecord) -> bool:
    """Whether ``record`` comes from miles_hydra (or Hydra) rather than a library."""
    return record.name.split(".")[0] in OUR_LOGGERS


class WarningFile(logging.FileHandler):
    """Appends library warnings (and ``warnings.warn``, through ``logging.captureWarnings``)
    to ``warnings.log`` as one line each: ``[<process>] <logger> <LEVEL>: <message>``. Several
    processes append to the same file; each line is one write."""

    def __init__(self, path: Path, process: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)  # no warning, no file
        self.setLevel(logging.WARNING)
        self.addFilter(lambda record: not is_ours(record) and record.levelno < logging.ERROR)
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        text = " | ".join(line.strip() for line in record.getMessage().splitlines() if line.strip())
        return f"[{self.process}] {record.name} {record.levelname}: {text}"


def divert_warnings(path: Path, process: str) -> WarningFile:
    """Send this process's Python warnings and library warnings to ``path``; returns the
    handler (remove it from the root logger to stop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = WarningFile(path, process)
    logging.getLogger().addHandler(handler)
    logging.captureWarnings(True)
    return handler


def _library_below_error(record: logging.LogRecord) -> bool:
    """The console filter: False for a library's record below ERROR (it is in the job log)."""
    return is_ours(record) or record.levelno >= logging.ERROR


def _console_handlers() -> list[logging.Handler]:
    """The root logger's handlers that write to a terminal stream, not to a file."""
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


class _AboveBar(logging.StreamHandler):
    """A console handler that prints through ``tqdm.write``: the line lands above the progress
    bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's contract: report the failure, never raise it
            self.handleError(record)


@contextlib.contextmanager
def log_above_bar() -> Iterator[None]:
    """While a tqdm progress bar is on the console: the root logger's console handlers print
    above it (same stream, level, format and filters); nothing changes where there is none."""
    root = logging.getLogger()
    swapped = {}
    for handler in _console_handlers():
        above = _AboveBar(handler.stream)
        above.setLevel(handler.level)
        above.setFormatter(handler.formatter)
        for log_filter in handler.filters:
            above.addFilter(log_filter)
        swapped[handler] = above
    root.handlers = [swapped.get(h, h) for h in root.handlers]
    try:
        yield
    finally:
        back = {above: handler for handler, above in swapped.items()}
        root.handlers = [back.get(h, h) for h in root.handlers]


def summary(path: Path, start: int = 0) -> str | None:
    """The end-of-run line for the warnings written to ``path`` after byte ``start``; None
    when there were none."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        f.seek(start)
        lines = [line for line in f.read().decode("utf-8", "replace").splitlines() if line]
    if not lines:
        return None
    distinct = {line.split("] ", 1)[-1] for line in lines}
    noun = "warning" if len(lines) == 1 else "warnings"
    return f"miles_hydra: {len(lines)} {noun} ({len(distinct)} distinct), see {path}"


@contextlib.contextmanager
def quiet_console(run_dir: Path, verbose: bool) -> Iterator[None]:
    """During the run: library warnings and records below ERROR off the console and into
    ``<run_dir>/logs/warnings.log``, then one summary line. ``verbose``: nothing changes."""
    if verbose:
        yield
        return
    path = Path(run_dir) / LOG_DIR / WARNINGS_FILE
    start = path.stat().st_size if path.is_file() else 0  # a resumed run appends
    consoles = _console_handlers()
    for handler in consoles:
        handler.addFilter(_library_below_error)
    warning_file = divert_warnings(path, "driver")
    try:
        yield
    finally:
        logging.captureWarnings(False)
        logging.getLogger().removeHandler(warning_file)
        warning_file.close()
        for handler in consoles:
            handler.removeFilter(_library_below_error)
        if line := summary(path, start):
            print(line, flush=True)


# ---------------------------------------------------------------- Ray actors' output


def ray_driver_options(run_dir: Path, verbose: bool) -> dict[str, Any]:
    """``ray.init`` arguments for the job's driver. Quiet: Ray does not copy the actors' output
    to the console, and the job's runtime env tells every actor where to write it
    (``<run_dir>/logs``); ``verbose``: Ray's default, actor lines on the console."""
    if verbose:
        return {"log_to_driver": True}
    log_dir = str(Path(run_dir).resolve() / LOG_DIR)
    return {"log_to_driver": False, "runtime_env": {"env_vars": {ACTOR_LOG_DIR_ENV: log_dir}}}


def redirect_actor_output(role: str, numbered: bool = False) -> Optional[Path]:
    """First thing in an actor's ``__init__``: when the driver asked for it
    (``ray_driver_options``), this process's stdout and stderr (file descriptors 1 and 2, so
    C/C++ output too) append to ``<log dir>/<role>.log``, or ``<role>_<i>.log`` for the i-th
    live actor of a ``numbered`` role; Python and library warnings go to ``warnings.log``;
    Hugging Face progress bars (a checkpoint's "Writing model shards") are off. Returns the log
    file, or None when the output stays with Ray."""
    log_dir = os.environ.get(ACTOR_LOG_DIR_ENV)
    if not log_dir:
        return None
    path, fd = _claim_log_file(Path(log_dir), role, numbered)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)  # fds 1 and 2 keep the file, and its lock, for the life of the process
    os.write(1, f"==== {_actor_header(path.stem)} ====\n".encode())
    divert_warnings(Path(log_dir) / WARNINGS_FILE, path.stem)
    _quiet_hugging_face()
    return path


def _claim_log_file(log_dir: Path, role: str, numbered: bool) -> tuple[Path, int]:
    """Open ``<role>.log``, or the first ``<role>_<i>.log`` no live actor holds (an exclusive
    lock, released when its process dies: a resumed run appends to the same files)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for i in itertools.count():
        path = log_dir / (f"{role}_{i}.log" if numbered else f"{role}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not numbered:  # the one actor of its role: a dying predecessor still holds it
                return path, fd
            os.close(fd)
            continue
        return path, fd
    raise AssertionError("unreachable")


def _actor_header(name: str) -> str:
    """``<name> actor <Ray actor id> pid <pid> <time>``, what ``dead_actor_note`` looks for."""
    ray = sys.modules.get("ray")  # imported in every Ray worker
    actor_id = ray.get_runtime_context().get_actor_id() if ray and ray.is_initialized() else None
    return f"{name} actor {actor_id} pid {os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _quiet_hugging_face() -> None:
    """No progress bars; transformers' warnings through the root logger (to warnings.log)
    instead of its own stderr handler."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


def dead_actor_note(exc: BaseException, run_dir: Path, tail_lines: int = 10) -> Optional[str]:
    """For an error caused by a Ray actor's death (``exc.__cause__``): the actor's log file
    under ``<run_dir>/logs`` and its last lines; None when it has none (e.g. a verbose run)."""
    from ray.exceptions import RayActorError

    cause = exc.__cause__
    actor_id = getattr(cause, "actor_id", None)
    if not isinstance(cause, RayActorError) or not actor_id:
        return None
    marker = f" actor {actor_id} pid "
    for path in sorted((Path(run_dir) / LOG_DIR).glob("*.log")):
        text = path.read_text(errors="replace")
        at = text.rfind(marker)
        if at < 0:
            continue
        lines = text[at:].splitlines()[1:][-tail_lines:]
        shown = "".join(f"\n  | {line}" for line in lines)
        return f"its output is in {path}" + (f"; the last lines:{shown}" if lines else "")
    return None
