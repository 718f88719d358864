"""`python launch.py resume=<run_dir>`: a run continues in its own directory, metrics.jsonl
continuous with no repeated rollout, and a changed config is refused with the differences."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.tiny import TINY_RUN

from miles_hydra.backends.local import checkpoint
from miles_hydra.errors import ConfigError
from miles_hydra.launch import resume

REPO = Path(__file__).resolve().parents[2]


def _launch(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.slow
def test_resume_continues_in_place_and_refuses_a_changed_config(tmp_path: Path) -> None:
    first = _launch(
        *TINY_RUN,
        "rollout.num_rollout=2",
        "rollout.eval_interval=2",
        "data.warmup_sft_steps=4",
        "checkpoint.save_interval=1",
        f"output_root={tmp_path}",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = [p.parent for p in tmp_path.rglob("metrics.jsonl")]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert ckpts == ["step_000001", "step_000002"]  # keep_last=2; step_000000 was the warm-start
    before = _records(run_dir)

    refused = _launch(f"resume={run_dir}", "rollout.num_rollout=4", "algorithm.lr=0.5")
    assert refused.returncode == 2
    assert "algorithm.lr: 5e-05 -> 0.5" in refused.stderr  # resolved: the preset's suggested_lr
    assert "resume_allow_changes=true" in refused.stderr
    assert _records(run_dir) == before  # nothing ran
    saved = (run_dir.parent / ".hydra" / "overrides.yaml").read_text()
    assert "algorithm.lr" not in saved  # the saved .hydra files were put back

    second = _launch(f"resume={run_dir}", "rollout.num_rollout=4")
    assert second.returncode == 0, second.stderr[-3000:]
    assert [p.parent for p in tmp_path.rglob("metrics.jsonl")] == [run_dir]  # no new directory
    records = _records(run_dir)
    assert records[: len(before)] == before  # appended, not rewritten
    steps = [r["step"] for r in records if "step" in r]
    assert steps == [0, 1, 2, 3]  # continuous, no repeated rollout
    evals = [r["eval/step"] for r in records if "eval/step" in r]
    assert evals == [-1, 0, 2, 4]  # one warm-start, one pre-RL eval, then every 2 rollouts
    assert sum("warmup/steps" in r for r in records) == 1  # the warm-start ran once
    assert checkpoint.find_latest(run_dir / "checkpoints").name == "step_000004"


def test_rewrite_argv_merges_the_saved_overrides_with_the_new_ones(tmp_path: Path) -> None:
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "overrides.yaml").write_text("- rollout.num_rollout=2\n- seed=3\n")
    (hydra_dir / "config.yaml").write_text("seed: 3\n")
    argv = resume.rewrite_argv([f"resume={tmp_path}", "rollout.num_rollout=5"])
    assert argv == [
        "seed=3",
        "rollout.num_rollout=5",
        "checkpoint.resume=true",
        f"hydra.run.dir={tmp_path.resolve()}",
    ]
    assert resume.job_dir() is None  # the launch ran no job: a resumed run starts one
    assert resume.rewrite_argv(["seed=1"]) == ["seed=1"]  # no resume= : untouched


def test_resume_finds_the_job_dir_from_either_dir(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("[]\n")
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 3\n")
    job = tmp_path / "local-7"
    job.mkdir()
    (job / "status.json").write_text("{}")
    for named in (tmp_path, job):
        argv = resume.rewrite_argv([f"resume={named}"])
        assert argv[-1] == f"hydra.run.dir={tmp_path.resolve()}"
        assert resume.job_dir() == job.resolve()
    (tmp_path / "local-8").mkdir()
    (tmp_path / "local-8" / "status.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds 2 runs"):
        resume.rewrite_argv([f"resume={tmp_path}"])


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["resume={dir}/nowhere"], "is not a run directory"),
        (["-m", "resume={dir}", "seed=1,2"], "resumes one run, not a sweep"),
    ],
)
def test_rewrite_argv_refuses(tmp_path: Path, argv: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        resume.rewrite_argv([arg.format(dir=tmp_path) for arg in argv])


def test_differences_names_every_changed_leaf() -> None:
    old = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    new = {"a": {"b": 2, "c": [1, 2]}, "d": "x", "e": True}
    assert resume.differences(old, new) == [("a.b", 1, 2), ("e", None, True)]
