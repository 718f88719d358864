"""`python launch.py` as a user runs it: plan, check and refused configs leave no run directory
(Hydra makes one before the task runs; the app removes it); a real run keeps its directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.tiny import TINY_BARE_RUN

REPO = Path(__file__).resolve().parents[2]


def launch(*overrides: str, output_root: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "launch.py", *overrides, f"output_root={output_root}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def left_behind(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize(
    ("overrides", "rc", "says"),
    [
        (["mode=plan"], 0, "# ---- plan ----"),
        (["mode=check"], 0, "nothing to check beyond validation"),
        (["rollout.global_batch_size=7"], 2, "invalid config: rollout.global_batch_size=7"),
    ],
    ids=["plan", "check", "refused"],
)
def test_plan_check_and_refusal_leave_no_run_dir(
    tmp_path: Path, overrides: list[str], rc: int, says: str
) -> None:
    out = tmp_path / "runs"
    proc = launch(*overrides, output_root=out)
    assert proc.returncode == rc, proc.stderr
    assert says in proc.stdout + proc.stderr
    assert left_behind(out) == []


def test_plan_keeps_other_runs_next_to_it(tmp_path: Path) -> None:
    """Only the plan's own directory goes: a sibling run directory stays, with its parent."""
    out = tmp_path / "runs"
    other = out / "default" / "2026-01-01_00-00-00"
    other.mkdir(parents=True)
    (other / "metrics.jsonl").write_text("{}\n")
    assert launch("mode=plan", output_root=out).returncode == 0
    kept = f"default/{other.name}"
    assert left_behind(out) == ["default", kept, f"{kept}/metrics.jsonl"]


@pytest.mark.slow
def test_a_real_run_keeps_its_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = launch(*TINY_BARE_RUN, "rollout.num_rollout=1", output_root=out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (out / "default").iterdir()
    names = {p.name for p in run_dir.rglob("*")}
    assert {".hydra", "launch.log", "metrics.jsonl"} <= names
    # the quiet console (logging.verbose=false): actor output in files, not on the console
    console = proc.stdout + proc.stderr
    assert "pid=" not in console and "Writing model shards" not in console, console[-2000:]
    (logs,) = run_dir.glob("*/logs")
    trainer = (logs / "trainer.log").read_text()
    assert trainer.startswith("==== trainer actor "), trainer[:500]
    assert "Writing model shards" not in trainer  # HF progress bars off, not only moved
    assert (logs / "engine_0.log").read_text().startswith("==== engine_0 actor ")
