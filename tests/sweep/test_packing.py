"""Trial packing (``cluster.trials_per_job``): how a job's CPUs and GPUs are dealt to its trials,
the config rules, and 4 trials in ONE job on the real single-node Slurm, each with its own Ray
cluster, ports, temp dir and CPU subset."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.slurmenv import NO_SLURM, wait_for_state
from support.tiny import TINY_BARE_RUN

from miles_hydra.cluster import cleanup, secrets
from miles_hydra.config.cluster import ClusterConfig, ClusterKind
from miles_hydra.errors import ConfigError
from miles_hydra.sweep.packing import PackedTask, Slot, slots

REPO = Path(__file__).resolve().parents[2]


def test_eight_gpus_and_sixteen_cores_dealt_to_four_trials():
    dealt = slots(4, list(range(16)), [str(g) for g in range(8)])
    assert [s.gpus for s in dealt] == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    assert dealt[1].cpus == (1, 5, 9, 13)
    assert sorted(c for s in dealt for c in s.cpus) == list(range(16))  # each core once
    assert dealt[3].overrides() == [
        "cluster.cpus_per_task=4",
        "cluster.gpus_per_node=2",
        "cluster.trials_per_job=1",
    ]


def test_fewer_cores_than_trials_are_shared_round_robin():
    assert [s.cpus for s in slots(4, [0, 1], [])] == [(0,), (1,), (0,), (1,)]
    assert slots(1, [3], ["5"]) == [Slot(0, (3,), ("5",))]


def test_gpus_must_split_evenly():
    with pytest.raises(ValueError, match="3 GPUs cannot be shared equally by 2 trials"):
        slots(2, [0, 1], ["0", "1", "2"])
    with pytest.raises(ConfigError, match=r"cluster.trials_per_job=3 must divide cluster.gpus"):
        ClusterConfig(kind=ClusterKind.slurm, gpus_per_node=8, trials_per_job=3)
    with pytest.raises(ConfigError, match=r"cluster.trials_per_job=2 packs trials on one node"):
        ClusterConfig(kind=ClusterKind.slurm, nodes=2, trials_per_job=2)


def test_packed_trials_ray_dirs_are_cleaned_like_any_other(tmp_path, monkeypatch):
    names = {  # mh_ray_<job>_<attempt>p<slot>_<rank> (allocation.PACK_SLOT_ENV)
        "mh_ray_90_1p0_0": False,  # a sibling trial of the current attempt
        "mh_ray_90_0p3_0": True,  # a trial of an earlier attempt (requeued)
        "mh_ray_91_0p1_0": True,  # a packed job no longer queued
        "mh_ray_92_4_0p2_0": False,  # a trial of a queued array task
        "mh_ray_93_2_0p0_0": True,  # of an array task that is gone
    }
    for name in names:
        (tmp_path / name).mkdir()
    monkeypatch.setattr(cleanup, "queued_job_ids", lambda user=None: {"92", "92_4"})
    assert cleanup.clean_dead_ray_dirs("90", 1, tmp_path) == 3
    assert {p.name for p in tmp_path.iterdir()} == {n for n, dead in names.items() if not dead}


def test_the_shared_secrets_file_outlives_every_packed_trial(tmp_path, monkeypatch):
    path = secrets.write_secrets_file(tmp_path / "secrets", {"WANDB_API_KEY": "wk-1"})
    monkeypatch.setenv(secrets.SECRETS_FILE_ENV, str(path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def trial(overrides):  # what run_allocation_task does with the secrets
        secrets.load_secrets()
        seen = (os.environ.get("WANDB_API_KEY"), path.exists())
        secrets.delete_secrets()
        return seen

    # trial 1 starts only after trial 0 ended (no status.json: the task waits for the process)
    results = PackedTask(trial, 0, 60.0)([([],), ([],)], [str(tmp_path / "0"), str(tmp_path / "1")])
    assert results == [(("wk-1", True), None), (("wk-1", True), None)]
    assert not path.exists()  # deleted by the task once the last trial ended


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(bool(NO_SLURM), reason=NO_SLURM)
@pytest.mark.timeout(600)
def test_four_trials_run_in_one_slurm_job(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch.py"),
            "-m",
            "algorithm.lr=1e-3,2e-3",
            "seed=1,2",
            *TINY_BARE_RUN,
            "rollout.num_rollout=2",
            "objective_metric=rollout/raw_reward",
            "cluster=slurm",
            "cluster.trials_per_job=4",
            "cluster.cpus_per_task=2",
            "cluster.mem_gb=8",
            "cluster.ray_startup_timeout_s=300",
            f"output_root={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (manifest_path,) = tmp_path.rglob("sweep.json")
    sweep_dir = manifest_path.parent
    job_id = json.loads(manifest_path.read_text())["array_job_id"]  # one task: a plain job
    jobs = [p.name for p in (sweep_dir / ".submitit").iterdir() if not p.name.startswith(".")]
    assert jobs == [job_id]  # (submitit keeps its .submission_file_*.sh beside the job dirs)
    assert wait_for_state(job_id, "COMPLETED", timeout_s=60)
    ports, cpus = set(), []
    for num in range(4):
        run_dir = sweep_dir / str(num)
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "completed" and status["slurm_job_id"] == job_id
        log = (run_dir / "logs" / "job.log").read_text()
        assert f"job {job_id} attempt 0" in log
        ports.add(re.search(r"Ray head at [\d.]+:(\d+)", log).group(1))  # its own Ray cluster
        cpus.append(re.search(r"node \(.*\): CPU (\d+)", log).group(1))
    assert len(ports) == 4
    assert cpus == ["1"] * 4  # 2 cores dealt to 4 trials: each Ray node registers its one
