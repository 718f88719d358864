"""Time compose + validate of the default config (in-process) and `python launch.py mode=plan`.

    python bench/bench_compose.py [--reps 50] [--cli-reps 5] [overrides ...]

Prints mean / p95 / min per phase. Issue 2 asks for compose + validate well under a second and
mode=plan under 2 s wall.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from miles_hydra.config.store import materialize, register_configs  # noqa: E402
from miles_hydra.launch.plan import render_plan  # noqa: E402


def _stats(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return (
        f"{name:<34} n={len(ms):<3} mean {statistics.mean(ms):8.1f} ms  "
        f"p95 {p95:8.1f} ms  min {ms[0]:8.1f} ms"
    )


def bench_in_process(overrides: list[str], reps: int) -> list[str]:
    """Fresh Hydra each repetition (what launch.py pays), then materialize, then render_plan."""
    register_configs()
    composed, validated, planned, total, cpu = [], [], [], [], []
    for _ in range(reps):
        GlobalHydra.instance().clear()
        c0 = time.process_time()
        t0 = time.perf_counter()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        t1 = time.perf_counter()
        run = materialize(cfg)
        t2 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        render_plan(run)
        t3 = time.perf_counter()
        composed.append(t1 - t0)
        validated.append(t2 - t1)
        planned.append(t3 - t2)
        total.append(t2 - t0)
    GlobalHydra.instance().clear()
    return [
        _stats("compose", composed),
        _stats("validate (materialize)", validated),
        _stats("compose + validate", total),
        _stats("compose + validate (CPU)", cpu),
        _stats("render_plan", planned),
    ]


def bench_cli(overrides: list[str], reps: int) -> str:
    walls, cpus = [], []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "launch.py", *overrides, "mode=plan"],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=120,
        )
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return "\n".join(
        [
            _stats("python launch.py mode=plan (wall)", walls),
            _stats("python launch.py mode=plan (CPU)", cpus),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50, help="in-process repetitions")
    parser.add_argument("--cli-reps", type=int, default=5, help="launch.py repetitions")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default config if none)")
    args = parser.parse_args()
    label = " ".join(args.overrides) or "(default config)"
    print(f"config: {label}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for line in bench_in_process(args.overrides, args.reps):
        print(line)
    print(bench_cli(args.overrides, args.cli_reps))


if __name__ == "__main__":
    main()
