"""Optuna on Slurm: synchronous batches (hydra-optuna-sweeper) vs the asynchronous loop.

    python bench/bench_optuna_async.py [--trials 8] [--slots 2] [--out bench/results_optuna_async.md]

Runs the same study twice on the real Slurm here, tiny CPU trials of uneven length (the search
space includes ``rollout.num_rollout`` in [2, --max-rollouts], so the sampler makes some trials
several times longer than others; both modes sample with the same seed):

- ``sync``:  ``+sweep=optuna_lr_tis`` (Hydra's Optuna sweeper: batches of ``n_jobs`` trials,
  each batch one job array, the next batch only after the slowest trial of the last ended);
- ``async``: ``+sweep=optuna_async_lr_tis`` (``hydra/sweeper=miles_optuna``, no pruning:
  a new trial as soon as one ends).

Per mode: the launcher's wall time, the trials' job run times from ``sacct`` (Start..End), and
the idle trial-slot fraction ``1 - sum(job run time) / (slots * wall)``. Needs a running Slurm
(``bash scripts/slurm_single_node.sh up``); ``--slots`` should not exceed the trials the node
runs at once (one CPU each).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support.tiny import TINY_BARE_RUN  # noqa: E402


def run_mode(mode: str, trials: int, slots: int, max_rollouts: int, root: Path) -> dict:
    out = root / mode
    common = [
        *TINY_BARE_RUN,
        "objective_metric=rollout/raw_reward",
        "cluster=slurm",
        "cluster.cpus_per_task=1",
        "cluster.mem_gb=3",
        "cluster.ray_startup_timeout_s=240",
        f"output_root={out}",
        f"rollout.num_rollout=int(interval(2,{max_rollouts}))",  # a search dimension: uneven
    ]
    if mode == "sync":
        specific = [
            "+sweep=optuna_lr_tis",
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.n_jobs={slots}",
        ]
    else:
        specific = [
            "+sweep=optuna_async_lr_tis",
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.max_concurrent={slots}",
            "hydra.sweeper.pruner=none",
            "hydra.sweeper.poll_s=1",
        ]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "-m", *specific, *common],
        cwd=root,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{mode} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    job_ids = [p.name for p in out.rglob(".submitit/*") if p.is_dir() and p.name[0].isdigit()]
    runs = job_runs(job_ids)
    busy = sum(runs.values())
    lengths = []
    for cfg in sorted(out.rglob("*/.hydra/overrides.yaml")):
        lengths += [
            line.split("=")[1] for line in cfg.read_text().split() if "num_rollout=" in line
        ]
    return {
        "mode": mode,
        "trials": len(runs),
        "slots": slots,
        "wall_s": round(wall, 1),
        "trial_job_s": round(busy, 1),
        "idle_slot_fraction": round(1 - busy / (slots * wall), 3),
        "num_rollout": lengths,
    }


def job_runs(job_ids: list[str], settle_s: float = 60.0) -> dict[str, float]:
    """Seconds each job ran (sacct Start..End); waits up to ``settle_s`` for accounting to
    record the last jobs' end."""
    deadline = time.monotonic() + settle_s
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,Start,End", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        if "Unknown" not in out or time.monotonic() > deadline:
            break
        time.sleep(2)
    runs = {}
    for line in out.splitlines():
        job, start, end = line.split("|")
        if "Unknown" in (start, end) or "None" in (start, end):  # never started (cancelled)
            continue
        t0, t1 = (datetime.datetime.fromisoformat(t) for t in (start, end))
        runs[job] = (t1 - t0).total_seconds()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--max-rollouts", type=int, default=16)
    parser.add_argument("--modes", default="sync,async")
    parser.add_argument("--out", type=Path, default=None, help="also write a Markdown table")
    args = parser.parse_args()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_optuna_"))  # kept: sweep dirs, logs, reports
    print(f"sweeps under {tmp}", flush=True)
    for mode in args.modes.split(","):
        row = run_mode(mode, args.trials, args.slots, args.max_rollouts, tmp)
        print(json.dumps(row), flush=True)
        rows.append(row)
    lines = [
        "| mode | trials | slots | wall s | trial job s | idle slot fraction |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['mode']} | {r['trials']} | {r['slots']} | {r['wall_s']} | {r['trial_job_s']} "
        f"| {r['idle_slot_fraction']} |"
        for r in rows
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
