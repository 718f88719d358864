"""Submitting a sweep: one Slurm job array vs one job per variant.

    python bench/bench_sweep_submit.py [--variants 64]

Submits ``--variants`` trivial jobs through submitit both ways (the way the miles_hydra launcher
submits a sweep: ``executor.map_array``; and a plain loop of ``executor.submit``), counts the
scheduler calls each way through logging shims for sbatch/squeue/sacct/scontrol/scancel put in
front of the real commands on PATH, times the submission (until every job id is known), then
cancels the jobs. Needs a running Slurm (``bash scripts/slurm_single_node.sh up``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import submitit

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")


def _noop(x: int) -> int:
    return x


def install_shims(shim_dir: Path, log_file: Path) -> None:
    """A wrapper per Slurm command that logs its name, then runs the real one."""
    for name in COMMANDS:
        real = shutil.which(name)
        if real is None:
            sys.exit(f"{name} not found: bring Slurm up with scripts/slurm_single_node.sh up")
        shim = shim_dir / name
        shim.write_text(f'#!/bin/sh\necho {name} >> "{log_file}"\nexec "{real}" "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)


def calls(log_file: Path) -> Counter:
    return Counter(log_file.read_text().split()) if log_file.exists() else Counter()


def submit(mode: str, n: int, folder: Path) -> list[submitit.Job]:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(
        timeout_min=5,
        slurm_partition=os.environ.get("BENCH_PARTITION", "debug"),
        cpus_per_task=1,
        mem_gb=1,
        slurm_array_parallelism=n,
    )
    if mode == "array":
        return executor.map_array(_noop, list(range(n)))
    return [executor.submit(_noop, i) for i in range(n)]


def measure(mode: str, n: int, work: Path, log_file: Path) -> dict[str, float]:
    before = calls(log_file)
    start = time.perf_counter()
    jobs = submit(mode, n, work / mode)
    ids = [job.job_id for job in jobs]
    seconds = time.perf_counter() - start
    used = calls(log_file) - before
    scancel = shutil.which("scancel")
    array_ids = sorted({i.split("_")[0] for i in ids})
    subprocess.run([scancel, *array_ids], check=False, capture_output=True)
    return {
        "jobs": len(ids),
        "seconds": seconds,
        "sbatch": used["sbatch"],
        "all_calls": sum(used.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=64, help="jobs in the sweep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        work = Path(tmp)
        shim_dir, log_file = work / "bin", work / "calls.log"
        shim_dir.mkdir()
        install_shims(shim_dir, log_file)
        os.environ["PATH"] = f"{shim_dir}:{os.environ['PATH']}"
        rows = {mode: measure(mode, args.variants, work, log_file) for mode in ("array", "per_job")}
    print(f"| {args.variants} variants | sbatch calls | Slurm CLI calls | submit wall (s) |")
    print("|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['sbatch']} | {r['all_calls']} | {r['seconds']:.2f} |")
    a, p = rows["array"], rows["per_job"]
    print(
        f"\nper-job / array: {p['sbatch'] / max(a['sbatch'], 1):.0f}x sbatch calls, "
        f"{p['seconds'] / a['seconds']:.1f}x submit wall time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
