"""backend=miles end to end on the real single-node Slurm, with a stand-in for miles' train.py.

``python launch.py backend=miles ... cluster=slurm``: submitit -> sbatch -> the allocation task
starts a Ray head with the job API -> the runner's ``ray job submit`` sends
``tests/miles/standin/train.py`` (``backend.miles_entry``) with the compiled argv to it -> the
stand-in runs miles' REAL ``parse_args`` and logs rollouts through miles' REAL TensorBoard
tracking backend (oracle venv: miles-rl 0.0.2) -> the runner streams the driver log into the
run dir and follows the events into metrics.jsonl -> result.json, exit status, sweep report.
Only the training itself is a stand-in (no GPU here). Skipped with a reason without an idle
Slurm node or the oracle venv (scripts/setup_miles_oracle.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.slurmenv import NO_SLURM
from support.tiny import TINY_MODEL

from miles_hydra.backends.miles.check.oracle import DEFAULT_VENV, SETUP_HINT
from miles_hydra.sweep.report import report

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "miles" / "standin" / "train.py"
VENV = Path(os.environ.get("MILES_ORACLE_VENV", DEFAULT_VENV))
HAS_STANDIN_VENV = bool(list(VENV.glob("lib/python3*/site-packages/tensorboard"))) and bool(
    list(VENV.glob("lib/python3*/site-packages/miles"))
)

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.oracle,
    pytest.mark.skipif(bool(NO_SLURM), reason=NO_SLURM),
    pytest.mark.skipif(not HAS_STANDIN_VENV, reason=f"no miles + tensorboard venv; {SETUP_HINT}"),
]

NUM_ROLLOUT = 3


def _overrides(tmp_path: Path) -> list[str]:
    """A tiny miles run: paths miles would read exist only as names (the stand-in's parser
    makes its own stand-ins), the Ray job's python3 is the oracle venv's."""
    return [
        "backend=miles",
        f"backend.miles_entry={STANDIN}",
        f"+backend.env.PATH='{VENV / 'bin'}:{os.environ['PATH']}'",
        *TINY_MODEL,
        "precision=bf16",
        f"model.hf_checkpoint={tmp_path / 'hf'}",
        f"checkpoint.ref_load={tmp_path / 'ref'}",
        "rollout.rollout_batch_size=4",
        "rollout.n_samples_per_prompt=2",
        "rollout.rollout_max_response_len=6",
        f"rollout.num_rollout={NUM_ROLLOUT}",
        "rollout.eval_interval=1",
        "data.num_eval_prompts=4",
        "algorithm/correction=tis",
        "logging.progress_bar=false",
        "cluster=slurm",
        "cluster.gpus_per_node=1",  # what miles' layout needs; Ray counts it, Slurm is not asked
        "cluster.request_gpus=false",
        f"cluster.python={sys.executable}",  # no miles image: the job runs in this environment
        "cluster.cpus_per_task=1",
        "cluster.mem_gb=4",
        "cluster.timeout_min=15",
        "cluster.array_parallelism=2",
        "cluster.ray_startup_timeout_s=120",
        "cluster.check_paths=false",
        f"output_root={tmp_path}",
    ]


def _launch(tmp_path: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args, *_overrides(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(420)
def test_miles_run_on_slurm_streams_logs_fills_metrics_and_fails_with_the_log_path(tmp_path):
    """The stand-in logs every rollout, then exits with 3: the job fails, its message names the
    driver log, and the metrics of the rollouts it logged are in metrics.jsonl."""
    proc = _launch(
        tmp_path,
        "algorithm.lr=1e-6",
        "algorithm.correction.upper=2",
        "+backend.env.MILES_STANDIN_EXIT_CODE=3",
        timeout=400,
    )
    assert proc.returncode != 0
    (log_path,) = tmp_path.rglob("miles_job.log")
    run_dir = log_path.parent
    output = proc.stdout + proc.stderr
    assert "exited with 3" in output and str(log_path) in output, output[-4000:]
    driver_log = log_path.read_text()
    assert "stand-in: miles parsed" in driver_log and "lr=1e-06" in driver_log
    assert "Initialising tracking backend: tensorboard" in driver_log  # miles' own backend
    assert "stand-in: exiting with 3" in driver_log
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    records = _records(run_dir)
    rollouts = [r for r in records if "step" in r]
    evals = [r for r in records if "eval/step" in r]
    assert [r["step"] for r in rollouts] == list(range(NUM_ROLLOUT))
    assert [r["eval/step"] for r in evals] == list(range(NUM_ROLLOUT + 1))  # rollouts done
    # the local engine's names: eval/<task>, rollout/*, train/*, perf/*
    assert {"rollout/raw_reward", "train/loss", "perf/rollout_time"} <= set(rollouts[0])
    assert set(evals[0]) == {"eval/step", "eval/arithmetic", "eval/arithmetic-truncated_ratio"}
    q = 1 / (1 + 1 + 0)  # the stand-in's quality at lr=1e-6 (log10 + 5 = -1), tis_clip=2
    assert [r["rollout/raw_reward"] for r in rollouts] == pytest.approx([q / 3, 2 * q / 3, q])
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and str(log_path) in status["error"]


@pytest.mark.timeout(600)
def test_miles_sweep_on_slurm_is_one_array_and_the_report_ranks_it(tmp_path):
    proc = _launch(
        tmp_path,
        "-m",
        "algorithm.lr=1e-5,1e-4",  # two variants: one wave of the array (2 at a time)
        "algorithm.correction.upper=3",
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (manifest_path,) = tmp_path.rglob("sweep.json")
    sweep_dir = manifest_path.parent
    assert json.loads(manifest_path.read_text())["array_job_id"].isdigit()
    summary = report(sweep_dir)  # default metric: the first eval/* metric
    assert summary["metric"] == "eval/arithmetic"
    assert summary["states"] == {"completed": 2}
    # q = 1 / (1 + (log10(lr) + 5)^2 + (upper - 2)^2): 1/2, 1/3
    assert summary["best"]["params"]["algorithm.lr"] == "1e-05"
    values = [g["value"] for g in summary["groups"]]  # ranked, best first
    assert values == pytest.approx([1 / 2, 1 / 3])
    rows = (sweep_dir / "report" / "summary.csv").read_text().splitlines()
    assert len(rows) == 3
    for num in range(2):  # result.json: the final metrics, as a local run's
        result = json.loads((sweep_dir / str(num) / "result.json").read_text())
        assert result["exit_code"] == 0 and result["step"] == NUM_ROLLOUT - 1
        assert result["eval/step"] == NUM_ROLLOUT and "rollout/raw_reward" in result
    cli = subprocess.run(
        [sys.executable, "-m", "miles_hydra.sweep.report", str(sweep_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
