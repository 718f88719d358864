"""Fast tests of the cluster pieces that need no scheduler: run dir, redaction, sbatch, schema."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import compose_config, materialize

from miles_hydra.cluster import cleanup, preemption, rundir, secrets, watch
from miles_hydra.cluster.submit import make_executor, sbatch_script, slurm_parameters
from miles_hydra.config.cluster import ClusterConfig, ClusterKind
from miles_hydra.errors import ConfigError
from miles_hydra.sweep.manifest import read_status, write_status

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("MH_REGEN_GOLDEN") == "1"
REGEN_CMD = "MH_REGEN_GOLDEN=1 python -m pytest tests/cluster/test_cluster_units.py"

PRESETS = {
    "slurm_default": ["cluster=slurm"],
    "slurm_site": [
        "cluster=slurm",
        "cluster.partition=gpu",
        "cluster.account=rl",
        "cluster.qos=high",
        "cluster.nodes=4",
        "cluster.gpus_per_node=8",
        "cluster.cpus_per_task=64",
        "cluster.mem_gb=900",
        "cluster.timeout_min=240",
        "cluster.constraint=h100",
        "cluster.exclusive=true",
        "cluster.container_image=radixark/miles:latest",
        "cluster.container_mounts=/data:/data",
        "+cluster.sbatch_args.reservation=rl_week",
        "cluster.setup=[source /opt/env.sh]",
        "cluster.signal_delay_s=300",
    ],
}

# the launcher's environment the goldens are made with (no secret: nothing to write)
GOLDEN_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/u",
    "PYTHONPATH": "/src",
    "WANDB_MODE": "offline",
    "HF_HOME": "/cache/hf",
    "DISPLAY": ":0",
    "SSH_AUTH_SOCK": "/tmp/ssh",
}


def test_redact_env_hides_secrets_by_name_and_in_urls() -> None:
    env = {
        "WANDB_API_KEY": "abc123",
        "HF_TOKEN": "hf_x",
        "AWS_SECRET_ACCESS_KEY": "s",
        "DB_PASSWORD": "p",
        "my_private_key": "k",
        "PATH": "/usr/bin",
        "HTTPS_PROXY": "http://user:hunter2@proxy:3128",
        "SLURM_JOB_ID": "42",
    }
    out = rundir.redact_env(env)
    for name in ("WANDB_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD"):
        assert out[name] == rundir.REDACTED
    assert out["my_private_key"] == rundir.REDACTED
    assert out["PATH"] == "/usr/bin" and out["SLURM_JOB_ID"] == "42"
    assert out["HTTPS_PROXY"] == f"http://{rundir.REDACTED}@proxy:3128"
    assert "hunter2" not in json.dumps(out) and "abc123" not in json.dumps(out)


def test_run_record_holds_config_env_and_git(tmp_path: Path) -> None:
    cfg = materialize(compose_config(["cluster=slurm"], output_root=tmp_path))
    group = rundir.group_dir(tmp_path, "exp", "2026-01-01_00-00-00")
    run_dir = rundir.job_run_dir(group, "123_4")
    assert run_dir == tmp_path / "exp" / "2026-01-01_00-00-00" / "123_4"
    rundir.write_run_record(run_dir, cfg, env={"WANDB_API_KEY": "secret!", "HOME": "/root"})
    assert "kind: slurm" in (run_dir / "config.yaml").read_text()
    env = json.loads((run_dir / "env.json").read_text())
    assert env == {"HOME": "/root", "WANDB_API_KEY": rundir.REDACTED}
    git = json.loads((run_dir / "git.json").read_text())
    assert git["repo"] == str(rundir.REPO_ROOT) and "dirty_files" in git
    assert (run_dir / "git.diff").exists() and (run_dir / "logs").is_dir()
    rundir.write_result(run_dir, {"step": 3, "path": tmp_path})
    assert rundir.read_result(run_dir) == {"step": 3, "path": str(tmp_path)}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_sbatch_script_matches_golden(preset: str, tmp_path: Path) -> None:
    cluster = materialize(compose_config(PRESETS[preset], output_root=tmp_path)).cluster
    cluster = dataclasses.replace(cluster, python="python3")  # not this machine's interpreter
    executor = make_executor(cluster, Path("/RUNS/exp/time/.submitit/%j"), "mh_exp", GOLDEN_ENV)
    got = sbatch_script(executor)
    golden = GOLDEN / f"sbatch_{preset}.txt"
    if REGEN:
        golden.write_text(got)
    assert got == golden.read_text(), f"sbatch script changed; regenerate with: {REGEN_CMD}"


def test_slurm_parameters_map_every_field() -> None:
    cluster = ClusterConfig(
        kind=ClusterKind.slurm, partition="p", gpus_per_node=8, mem_gb=100, container_image="img"
    )
    params = slurm_parameters(cluster, "job")
    assert params["partition"] == "p" and params["gpus_per_node"] == 8 and params["mem"] == "100GB"
    assert "--container-image=img" in params["srun_args"]
    assert "--kill-on-bad-exit=1" in params["srun_args"]
    assert params["additional_parameters"]["requeue"] is True
    assert params["time"] == 60 and params["ntasks_per_node"] == 1
    assert params["array_parallelism"] == cluster.array_parallelism


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"kind": ClusterKind.local, "partition": "gpu"}, "cluster.partition"),
        ({"kind": ClusterKind.local, "nodes": 2}, "cluster.nodes"),
        ({"kind": ClusterKind.slurm, "nodes": 2, "start_ray": False}, "cluster.start_ray"),
        (
            {"kind": ClusterKind.slurm, "timeout_min": 1, "signal_delay_s": 90},
            "cluster.signal_delay_s",
        ),
        ({"kind": ClusterKind.slurm, "container_mounts": "/a:/a"}, "cluster.container_mounts"),
        ({"kind": ClusterKind.slurm, "cpus_per_task": 0}, "cluster.cpus_per_task"),
    ],
)
def test_cluster_config_rejects_bad_combinations(fields: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClusterConfig(**fields)
    assert info.value.key == key


def test_preemption_flag_is_set_by_the_warning_signal() -> None:
    import signal

    calls = []
    previous = signal.signal(preemption.WARNING_SIGNAL, lambda signum, frame: calls.append(signum))
    try:
        preemption.install()
        assert not preemption.requested() and preemption.can_requeue()
        os.kill(os.getpid(), preemption.WARNING_SIGNAL)
        assert preemption.requested() and calls == []  # flag only; no requeue yet
        preemption.requeue_and_exit()  # calls the handler that was there before
        assert calls == [int(preemption.WARNING_SIGNAL)]
    finally:
        preemption.uninstall()
        preemption.clear()
        signal.signal(preemption.WARNING_SIGNAL, previous)


def test_ray_head_serves_the_job_api_only_when_miles_needs_it(tmp_path: Path) -> None:
    from miles_hydra.cluster.ray_cluster import RaySpec, start_command

    spec = RaySpec(1, 2, 0, 30.0, tmp_path, "1_0")
    plain = start_command(spec, tmp_path, "127.0.0.1", 6380, None)
    assert "--include-dashboard=false" in plain
    assert not any(arg.startswith("--dashboard-port") for arg in plain)
    miles = RaySpec(1, 2, 0, 30.0, tmp_path, "1_0", dashboard_port=8266)
    cmd = start_command(miles, tmp_path, "127.0.0.1", 6380, None)
    assert "--include-dashboard=true" in cmd and "--dashboard-port=8266" in cmd
    worker = start_command(miles, tmp_path, "127.0.0.1", None, "10.0.0.1:6380")
    assert "--address=10.0.0.1:6380" in worker and not any("dashboard-port=" in a for a in worker)


# ---------------------------------------------------------------- secrets out of the job record
SECRET_ENV = {**GOLDEN_ENV, "WANDB_API_KEY": "wk-123", "MLFLOW_TRACKING_TOKEN": "ml-456"}


def test_export_is_an_allowlist_without_secrets() -> None:
    env = {**SECRET_ENV, "AWS_SECRET_ACCESS_KEY": "aws", "MY_VAR": "1", "OTHER": "2"}
    cluster = ClusterConfig(kind=ClusterKind.slurm, export_env=["MY_VAR", "AWS_SECRET_ACCESS_KEY"])
    export = slurm_parameters(cluster, "job", env)["additional_parameters"]["export"]
    names = export.split(",")
    assert names == ["HF_HOME", "HOME", "MY_VAR", "PATH", "PYTHONPATH", "WANDB_MODE"]
    assert secrets.secrets_of(env, cluster.export_env) == {
        "AWS_SECRET_ACCESS_KEY": "aws",
        "MLFLOW_TRACKING_TOKEN": "ml-456",
        "WANDB_API_KEY": "wk-123",
    }
    everything = dataclasses.replace(cluster, export_env=["ALL"])
    assert slurm_parameters(everything, "job", env)["additional_parameters"]["export"] == "ALL"


def test_secrets_travel_in_a_user_only_file_the_job_reads_and_deletes(tmp_path: Path) -> None:
    cluster = ClusterConfig(kind=ClusterKind.slurm)
    executor = make_executor(cluster, tmp_path / ".submitit" / "%j", "mh_exp", SECRET_ENV)
    script = sbatch_script(executor)
    assert "wk-123" not in script and "ml-456" not in script and "WANDB_API_KEY" not in script
    (path,) = (tmp_path / ".submitit" / "secrets").iterdir()
    assert f"{secrets.SECRETS_FILE_ENV}={path}" in script  # only the path is exported
    assert path.stat().st_mode & 0o777 == 0o600
    job_env = {secrets.SECRETS_FILE_ENV: str(path), "WANDB_API_KEY": "already-set"}
    assert secrets.load_secrets(job_env) == ["MLFLOW_TRACKING_TOKEN", "WANDB_API_KEY"]
    assert (
        job_env["MLFLOW_TRACKING_TOKEN"] == "ml-456" and job_env["WANDB_API_KEY"] == "already-set"
    )
    assert path.exists()  # kept for a requeued attempt
    secrets.delete_secrets(job_env)
    assert not path.exists()


# ---------------------------------------------------------------- dead jobs' Ray temp dirs
def test_cleanup_removes_only_provably_dead_dirs_of_this_user(tmp_path: Path, monkeypatch) -> None:
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    names = {
        f"mh_ray_local-{dead_pid.pid}_0_0": True,  # a local run whose process is gone
        f"mh_ray_local-{os.getpid()}_0_0": False,  # alive (this process)
        "mh_ray_77_0_0": True,  # an earlier attempt of the current job (requeued)
        "mh_ray_77_1_0": False,  # the current attempt
        "mh_ray_55_0_0": True,  # no longer queued
        "mh_ray_66_2_1": False,  # queued
        "mh_ray_88_3_0_0": True,  # array task 88_3, gone
        "mh_ray_notours": False,  # not our naming
    }
    for name in names:
        (tmp_path / name).mkdir()
    kept = {"mh_ray_33_0_0"}
    if os.getuid() == 0:  # another user's dir (only root can make one): never touched
        (tmp_path / "mh_ray_44_0_0").mkdir()
        os.chown(tmp_path / "mh_ray_44_0_0", 65534, 65534)
        kept.add("mh_ray_44_0_0")
    (tmp_path / "mh_ray_33_0_0").symlink_to(tmp_path / "mh_ray_notours")
    monkeypatch.setattr(cleanup, "queued_job_ids", lambda user=None: {"66", "66_1"})
    assert cleanup.clean_dead_ray_dirs("77", 1, tmp_path) == 4
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {n for n, dead in names.items() if not dead} | kept
    (tmp_path / "mh_ray_55_0_0").mkdir()
    monkeypatch.setattr(cleanup, "queued_job_ids", lambda user=None: None)  # queue unreadable
    assert cleanup.clean_dead_ray_dirs("77", 1, tmp_path) == 0


# ---------------------------------------------------------------- status of a dead job
def test_dead_job_status_is_corrected_once(tmp_path: Path) -> None:
    write_status(tmp_path, "running")
    assert watch.mark_dead(tmp_path, "NODE_FAIL")
    status = read_status(tmp_path)
    assert status["state"] == "failed" and status["slurm_state"] == "NODE_FAIL"
    write_status(tmp_path, "interrupted")
    assert not watch.mark_dead(tmp_path, "CANCELLED")  # the job's own final word stays
    assert read_status(tmp_path)["state"] == "interrupted"


# ---------------------------------------------------------------- SIGINT / SIGTERM
def test_stop_signals_checkpoint_first_then_interrupt(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.RunInterrupted) as info:
        with preemption.stop_on_signals(grace_s=60) as stop:
            signal.raise_signal(signal.SIGTERM)
            assert stop.signal_name == "SIGTERM" and preemption.requested()  # checkpoint, stop
            signal.raise_signal(signal.SIGINT)  # a second signal: stop at once
    assert info.value.signal_name == "SIGTERM" and info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before
    preemption.clear()
    started = time.monotonic()
    with pytest.raises(preemption.RunInterrupted):  # no step boundary in time: the grace ends it
        with preemption.stop_on_signals(grace_s=0.2):
            signal.raise_signal(signal.SIGINT)
            while time.monotonic() - started < 10:
                time.sleep(0.01)
    assert time.monotonic() - started < 5
    preemption.clear()
