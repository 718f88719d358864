"""Sweeps on the real single-node Slurm: a grid as ONE job array (with the configured requeue
limit and python), an Optuna search, the report.

Skipped with a reason when no Slurm node is idle here (``bash scripts/slurm_single_node.sh up``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
from support.slurmenv import NO_SLURM, wait_for_state
from support.tiny import TINY_BARE_RUN

from miles_hydra.sweep.report import report

REPO = Path(__file__).resolve().parents[2]
TINY = [*TINY_BARE_RUN, "rollout.num_rollout=2", "objective_metric=rollout/raw_reward"]
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
    python = tmp_path / "bin" / "python-sweep"  # the configured interpreter: this one, renamed
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    _launch(
        tmp_path,
        "algorithm/correction=tis",
        "algorithm.lr=5e-4,2e-3",
        "algorithm.correction.upper=1.5,3",
        "cluster.max_num_requeue=2",
        f"cluster.python={python}",
        timeout=560,
    )
    (manifest_path,) = tmp_path.rglob("sweep.json")
    sweep_dir = manifest_path.parent
    manifest = json.loads(manifest_path.read_text())
    assert manifest["scheduler"] == "slurm"
    array_id = manifest["array_job_id"]
    assert array_id and array_id.isdigit()
    submitit_dir = sweep_dir / ".submitit"
    script = (submitit_dir / array_id / f"{array_id}_submission.sh").read_text()
    assert f" {python} -u -m submitit.core._submit " in script  # cluster.python
    for num in range(4):  # cluster.max_num_requeue: the requeues each variant may take
        pickled = submitit_dir / f"{array_id}_{num}" / f"{array_id}_{num}_submitted.pkl"
        assert submitit.helpers.DelayedSubmission.load(pickled)._timeout_countdown == 2
    for num in range(4):  # one sbatch: every variant is a task of the same array
        assert wait_for_state(f"{array_id}_{num}", "COMPLETED", timeout_s=60)
        run_dir = sweep_dir / str(num)
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "completed"
        assert status["slurm_array_job_id"] == array_id
        assert (run_dir / "metrics.jsonl").exists()
    summary = report(sweep_dir, metric="rollout/raw_reward")
    assert summary["states"] == {"completed": 4}
    assert len(summary["groups"]) == 4  # ranked; the best is named only beyond noise, else ties
    named = summary["best"] or summary["ties"][0]
    assert set(named["params"]) == {"algorithm.lr", "algorithm.correction.upper"}
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
