"""Sweeps on the real single-node Slurm: a grid as ONE job array, an Optuna search, the report.

Skipped with a reason when no Slurm node is idle here (``bash scripts/slurm_single_node.sh up``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.slurmenv import NO_SLURM, wait_for_state

from miles_hydra.sweep.report import report

REPO = Path(__file__).resolve().parents[2]
TINY = [  # the default task and algorithm on a smaller, faster model: seconds per variant
    "model.hidden_size=32",
    "model.ffn_hidden_size=64",
    "model.num_attention_heads=2",
    "model.num_query_groups=1",
    "model.kv_channels=16",
    "rollout.num_rollout=2",
    "rollout.rollout_batch_size=4",
    "rollout.n_samples_per_prompt=2",
    "rollout.rollout_max_response_len=6",
    "rollout.eval_interval=null",
    "data.warmup_sft_steps=0",
    "backend.device=cpu",
    "logging.progress_bar=false",
    "objective_metric=rollout/raw_reward",
]
SLURM = [
    "cluster=slurm",
    "cluster.cpus_per_task=1",
    "cluster.mem_gb=4",
    "cluster.array_parallelism=2",
    "cluster.ray_startup_timeout_s=120",
]
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(bool(NO_SLURM), reason=NO_SLURM),
]


def _launch(tmp_path: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch.py"),
            "-m",
            *args,
            *TINY,
            *SLURM,
            f"output_root={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.timeout(600)
def test_grid_goes_out_as_one_array_and_the_report_ranks_it(tmp_path):
    _launch(
        tmp_path,
        "algorithm/correction=tis",
        "algorithm.lr=5e-4,2e-3",
        "algorithm.correction.upper=1.5,3",
        timeout=560,
    )
    (manifest_path,) = tmp_path.rglob("sweep.json")
    sweep_dir = manifest_path.parent
    manifest = json.loads(manifest_path.read_text())
    assert manifest["scheduler"] == "slurm"
    array_id = manifest["array_job_id"]
    assert array_id and array_id.isdigit()
    for num in range(4):  # one sbatch: every variant is a task of the same array
        assert wait_for_state(f"{array_id}_{num}", "COMPLETED", timeout_s=60)
        run_dir = sweep_dir / str(num)
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "completed"
        assert status["slurm_array_job_id"] == array_id
        assert (run_dir / "metrics.jsonl").exists()
    summary = report(sweep_dir, metric="rollout/raw_reward")
    assert summary["states"] == {"completed": 4}
    assert summary["best"] is not None
    assert set(summary["best"]["params"]) == {"algorithm.lr", "algorithm.correction.upper"}
    assert (sweep_dir / "report" / "summary.csv").read_text().count("\n") == 5


@pytest.mark.timeout(600)
def test_optuna_sweep_runs_trials_as_arrays_and_records_the_best(tmp_path):
    proc = _launch(
        tmp_path,
        "+sweep=optuna_lr_tis",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        timeout=560,
    )
    (manifest_path,) = tmp_path.rglob("sweep.json")
    manifest = json.loads(manifest_path.read_text())
    assert [v["num"] for v in manifest["variants"]] == [0, 1]
    (optimization,) = tmp_path.rglob("optimization_results.yaml")
    text = optimization.read_text()
    assert "best_params" in text and "algorithm.lr" in text
    assert "best_value" in text
    assert "Best value" in proc.stdout + proc.stderr or "best_value" in text


def test_one_invalid_variant_submits_nothing_to_slurm(tmp_path):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch.py"),
            "-m",
            "algorithm.lr=1e-3,0",
            *TINY,
            *SLURM,
            f"output_root={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "variant #1" in proc.stderr and "algorithm.lr=0.0 must be > 0" in proc.stderr
    assert not list(tmp_path.rglob(".submitit"))
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert set(after.split()) <= set(before.split())
