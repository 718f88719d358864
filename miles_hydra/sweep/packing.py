"""Trial packing (``cluster.trials_per_job=N``): N sweep variants side by side in one job.

The sweep launcher submits one array task per N variants, with the resources of one variant's
``cluster`` group (e.g. 8 GPUs). The task starts one process per variant (``spawn``: a fresh
interpreter each), each with

- its own CPU subset (``sched_setaffinity``; the task's cores dealt round-robin, shared only
  when there are fewer cores than trials) and its own ``CUDA_VISIBLE_DEVICES`` share
  (``gpus_per_node / N`` GPUs each);
- its own Ray cluster: its own temp dir and rendezvous files (``PACK_SLOT_ENV`` makes the
  attempt id unique) and its own free ports; the Ray node registers only its share
  (``cluster.cpus_per_task`` / ``cluster.gpus_per_node`` overridden for the variant);
- its own run directory, status and result, as an unpacked variant;
- the job's secrets (``miles_hydra.cluster.secrets``), taken at its start; the task deletes
  the shared secrets file once every trial ended, not when the first one ends.

A variant that fails does not stop the others; the task waits for all of them. On preemption
the job requeues as a whole and every variant resumes from its own last checkpoint.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from miles_hydra.cluster import secrets
from miles_hydra.cluster.allocation import PACK_SLOT_ENV
from miles_hydra.sweep.manifest import read_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """What one packed trial gets of the job's node."""

    index: int  # 0..N-1
    cpus: tuple[int, ...]  # cores it is pinned to
    gpus: tuple[str, ...]  # its CUDA_VISIBLE_DEVICES

    def overrides(self) -> list[str]:
        """The variant's cluster share: its Ray node registers only these."""
        return [
            f"cluster.cpus_per_task={len(self.cpus)}",
            f"cluster.gpus_per_node={len(self.gpus)}",
            "cluster.trials_per_job=1",
        ]


def slots(n: int, cpus: Sequence[int], gpus: Sequence[str]) -> list[Slot]:
    """Deal ``cpus`` round-robin and ``gpus`` in equal contiguous shares to ``n`` trials."""
    if len(gpus) % n:
        raise ValueError(f"{len(gpus)} GPUs cannot be shared equally by {n} trials")
    cores = sorted(cpus)
    per_gpu = len(gpus) // n
    out = []
    for k in range(n):
        mine = tuple(cores[k::n]) if len(cores) >= n else (cores[k % len(cores)],)
        out.append(Slot(k, mine, tuple(gpus[k * per_gpu : (k + 1) * per_gpu])))
    return out


def visible_gpus(gpus_per_node: int) -> list[str]:
    """The GPUs this task may use: Slurm's ``CUDA_VISIBLE_DEVICES``, else 0..gpus_per_node-1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g for g in visible.split(",") if g]
    return [str(i) for i in range(gpus_per_node)]


def _run_slot(payload: bytes, queue: Any) -> None:
    """In the trial's own process: take the slot's share, run the variant, report.
    ``payload``: cloudpickle of (fn, slot, args), as submitit ships the task itself (the task
    function may live in the launcher's ``__main__``)."""
    import cloudpickle

    fn, slot, args = cloudpickle.loads(payload)
    secrets.take_secrets()  # the job's file is shared: the task deletes it after the last trial
    os.environ[PACK_SLOT_ENV] = f"p{slot.index}"
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
    os.sched_setaffinity(0, slot.cpus)
    overrides, *rest = args
    try:
        ret = fn([*overrides, *slot.overrides()], *rest)
        value = getattr(ret, "return_value", ret)
        queue.put((slot.index, value, None))
    except BaseException as exc:  # reported to the task, which waits for the other trials
        queue.put((slot.index, None, f"{type(exc).__name__}: {exc}"))


def _wait_until_running(run_dir: Path, since: float, proc: Any, timeout_s: float) -> None:
    """Until the trial in ``run_dir`` says running (written after its Ray is up), its process
    ended, or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while proc.is_alive() and time.monotonic() < deadline:
        status = read_status(run_dir)
        if status.get("state") == "running" and status.get("time", 0) >= since:
            return
        time.sleep(1.0)


class PackedTask(submitit.helpers.Checkpointable):
    """One array task running ``fn(*call)`` for several variants at once (see module doc)."""

    def __init__(
        self, fn: Callable[..., Any], gpus_per_node: int, startup_timeout_s: float
    ) -> None:
        self.fn = fn
        self.gpus_per_node = gpus_per_node
        self.startup_timeout_s = startup_timeout_s

    def __call__(
        self, calls: Sequence[tuple], run_dirs: Sequence[str]
    ) -> list[tuple[Any, str | None]]:
        """``(value, error)`` per call, in order. The trials start one after another, each once
        the previous one's Ray cluster is up (its ``status.json`` says running): Ray start-ups
        compete for the CPU, the trials themselves then run side by side."""
        import cloudpickle

        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        cores = sorted(os.sched_getaffinity(0))
        mine = slots(len(calls), cores, visible_gpus(self.gpus_per_node))
        procs = []
        for slot, call in zip(mine, calls):
            payload = cloudpickle.dumps((self.fn, slot, tuple(call)))
            proc = ctx.Process(target=_run_slot, args=(payload, queue))
            started = time.time()
            proc.start()
            log.info(
                "packed trial %d: pid %d, cpus %s, gpus %s",
                slot.index,
                proc.pid,
                slot.cpus,
                slot.gpus,
            )
            procs.append(proc)
            _wait_until_running(Path(run_dirs[slot.index]), started, proc, self.startup_timeout_s)
        results: dict[int, tuple[Any, str | None]] = {}
        while len(results) < len(procs):
            try:
                index, value, error = queue.get(timeout=5)
                results[index] = (value, error)
                continue
            except queue_module.Empty:
                pass
            dead = [k for k, proc in enumerate(procs) if k not in results and not proc.is_alive()]
            try:  # what the dead ones said before they went
                while True:
                    index, value, error = queue.get(timeout=1)
                    results[index] = (value, error)
            except queue_module.Empty:
                pass
            for k in dead:  # a trial process that died without a word (killed, OOM)
                results.setdefault(k, (None, f"trial process exited with code {procs[k].exitcode}"))
        for proc in procs:
            proc.join(timeout=30)
        secrets.delete_secrets()  # every trial ended (a requeue never gets here)
        return [results[k] for k in range(len(procs))]
