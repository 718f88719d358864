"""Follow miles' TensorBoard events into ``<run_dir>/metrics.jsonl``, as the local engine logs.

miles runs with ``--use-tensorboard`` and ``TENSORBOARD_DIR=<run_dir>/tensorboard``
(sections.logging_args, compile.job_env). Each miles process that logs (the rollout manager:
``rollout/*``, ``perf/*``, ``eval/*``; the trainer's rank 0: ``train/*`` and the trained batch's
``rollout/*``) writes its own event file there. While the job runs, :class:`EventFollower` reads
new scalars from every file with the ``tensorboard`` package's event reader and appends records
in the local engine's format (``backends/local/metrics.py``), so the progress, ``objective()``,
the sweep report and Optuna see a miles run as they see a local one:

- ``{"step": r, ...}``: rollout ``r``'s ``rollout/*``, ``perf/*`` (miles' TensorBoard step is the
  rollout id) and ``train/*`` (miles' step is the optimizer step ``r * num_steps_per_rollout +
  i``; the record holds the mean over the rollout's steps, as the local engine's does);
- ``{"eval/step": n, "eval/<name>": ...}``: an evaluation after ``n`` rollouts. miles logs an
  evaluation at the id of the rollout it follows, or of the next one for the evaluation before
  training; the rollout manager logs that rollout's metrics to the same file before evaluating
  after it, so an evaluation at id ``r`` is ``n = r + 1`` if its file already holds rollout
  ``r``, else ``n = r``.

Names are miles' own (the local engine uses them) except those in :func:`renames`. A rollout's
record is written once every file that logs per rollout has moved past it (processes flush at
their own pace), an evaluation's once its file moves on; :meth:`EventFollower.close` writes
what is left when the job ends. Event files that exist when a follower starts belong to an
earlier attempt of the job (a requeue), whose records are already in metrics.jsonl: they are
skipped.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from miles_hydra.config.data import DataSource
from miles_hydra.config.run import RunConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"  # as the local engine's
MILES_EVAL_NAME = "eval"  # the name sections.eval_args gives the eval set (--eval-prompt-data)
EVENT_GLOB = "events.out.tfevents.*"
POLL_INTERVAL_S = 5.0  # how often a running job's event files are read


def eval_name(cfg: RunConfig) -> str:
    """The eval set's name in the local engine's metrics (``eval/<name>``): the synthetic task,
    else the eval (or train) prompt file's stem."""
    d = cfg.data
    if d.source is DataSource.synthetic:
        return d.task
    return Path(str(d.eval_prompt_data or d.prompt_data)).stem


def renames(eval_set: str) -> tuple[tuple[str, str], ...]:
    """The one table of miles metric names that differ from the local engine's: (miles prefix,
    ours). It covers ``eval/eval``, ``eval/eval-truncated_ratio``, ``eval/eval/response_len/*``."""
    return ((f"eval/{MILES_EVAL_NAME}", f"eval/{eval_set}"),)


def local_name(tag: str, table: tuple[tuple[str, str], ...]) -> str:
    for miles_prefix, ours in table:
        if tag == miles_prefix or tag.startswith((f"{miles_prefix}/", f"{miles_prefix}-")):
            return ours + tag[len(miles_prefix) :]
    return tag


def scalars(event: Any) -> Iterator[tuple[str, float]]:
    """(tag, value) of each scalar in a migrated ``Event`` (``EventFileLoader`` output)."""
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    if not event.HasField("summary"):
        return
    for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name != scalar_metadata.PLUGIN_NAME:
            continue
        number = tensor_util.make_ndarray(value.tensor).reshape(())[()]
        # float32 as written (0.1, not 0.10000000149011612): its shortest repr
        yield value.tag, float(str(number)) if number.dtype == np.float32 else float(number)


@dataclass
class _File:
    """One event file being followed."""

    loader: Any  # tensorboard's EventFileLoader (keeps its offset between reads)
    rollouts: set[int] = field(default_factory=set)  # rollout ids it logged rollout metrics for
    last_rollout: int = -1  # highest rollout it logged anything per rollout for (-1: none)
    open_eval: Optional[int] = None  # eval/step of the evaluation being read from it


class EventFollower:
    """Turns miles' TensorBoard scalars into metrics.jsonl records (see the module doc)."""

    def __init__(
        self,
        event_dir: Path,
        metrics_path: Path,
        eval_set: str,
        steps_per_rollout: int,
    ) -> None:
        self.event_dir = Path(event_dir)
        self.metrics_path = Path(metrics_path)
        self.table = renames(eval_set)
        self.steps_per_rollout = max(1, steps_per_rollout)
        self.files: dict[Path, _File] = {}
        self.skipped = set(self._event_paths())  # an earlier attempt's files
        self.rollouts: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.evals: dict[int, dict[str, float]] = defaultdict(dict)
        self.sealed_evals: set[int] = set()
        self.lock = threading.Lock()

    def _event_paths(self) -> list[Path]:
        return sorted(self.event_dir.glob(EVENT_GLOB)) if self.event_dir.is_dir() else []

    def poll(self) -> list[dict[str, Any]]:
        """Read what the event files gained; append and return the records now complete."""
        with self.lock:
            self._read()
            return self._write(self._complete(final=False))

    def close(self) -> list[dict[str, Any]]:
        """The job ended: read the rest, append every record still open."""
        with self.lock:
            self._read()
            return self._write(self._complete(final=True))

    def _read(self) -> None:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        for path in self._event_paths():
            if path in self.skipped:
                continue
            if path not in self.files:
                self.files[path] = _File(EventFileLoader(str(path)))
            f = self.files[path]
            for event in f.loader.Load():
                for tag, value in scalars(event):
                    self._add(f, tag, value, int(event.step))

    def _add(self, f: _File, tag: str, value: float, step: int) -> None:
        if tag.startswith("eval/"):
            done = step + 1 if step in f.rollouts else step
            if f.open_eval is not None and f.open_eval != done:
                self.sealed_evals.add(f.open_eval)
            f.open_eval = done
            self.evals[done][local_name(tag, self.table)] = value
            return
        if f.open_eval is not None:  # the file moved on: that evaluation is complete
            self.sealed_evals.add(f.open_eval)
            f.open_eval = None
        rollout = step // self.steps_per_rollout if tag.startswith("train/") else step
        if not tag.startswith("train/"):
            f.rollouts.add(rollout)
        f.last_rollout = max(f.last_rollout, rollout)
        self.rollouts[rollout][local_name(tag, self.table)].append(value)

    def _complete(self, final: bool) -> list[dict[str, Any]]:
        """Records ready to write, rollouts in order, each evaluation after its rollout."""
        logging_files = [f.last_rollout for f in self.files.values() if f.last_rollout >= 0]
        horizon = min(logging_files, default=-1)  # every such file has moved past older ones
        out = []
        for rollout in sorted(self.rollouts):
            if final or rollout < horizon:
                values = self.rollouts.pop(rollout)
                out.append({"step": rollout, **{k: _mean(v) for k, v in sorted(values.items())}})
        if final:
            self.sealed_evals.update(self.evals)
        for done in sorted(self.sealed_evals & set(self.evals)):
            out.append({"eval/step": done, **dict(sorted(self.evals.pop(done).items()))})
        self.sealed_evals -= {r["eval/step"] for r in out if "eval/step" in r}
        return out

    def _write(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if records:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            with self.metrics_path.open("a") as sink:
                for record in records:
                    sink.write(json.dumps(_jsonable(record)) + "\n")
        return records


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: non-finite values become strings, as in the local engine's records."""
    return {
        k: v if not isinstance(v, float) or math.isfinite(v) else str(v) for k, v in record.items()
    }


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a line being written is skipped)."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def final_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """As the local engine's result: the last evaluation's metrics (not one before a
    warm-start, ``eval/step`` -1), then every rollout record's, later ones winning."""
    out: dict[str, Any] = {}
    for record in records:
        if record.get("eval/step", -1) >= 0:
            out.update(record)
    for record in records:
        if "step" in record:
            out.update(record)
    return out


@contextmanager
def following(follower: EventFollower, interval_s: float = POLL_INTERVAL_S) -> Iterator[None]:
    """Poll ``follower`` in a thread while the body runs; close it (final records) after."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                for record in follower.poll():
                    _announce(record)
            except Exception:  # a torn read must not end the job; the final read retries
                log.exception("reading TensorBoard events from %s", follower.event_dir)

    thread = threading.Thread(target=loop, name="miles-events", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval_s + 60)
        for record in follower.close():
            _announce(record)


def _announce(record: dict[str, Any]) -> None:
    """One log line per record with its key numbers (the job log's progress)."""
    if "eval/step" in record:
        evals = {k: v for k, v in record.items() if k != "eval/step" and "/" not in k[5:]}
        log.info("eval after %d rollouts: %s", record["eval/step"], _short(evals))
        return
    keys = ("rollout/raw_reward", "train/loss", "rollout/spec_accept_length", "perf/step_time")
    log.info("rollout %d: %s", record["step"], _short({k: record[k] for k in keys if k in record}))


def _short(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
