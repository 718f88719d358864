"""Faults of a run of the real local engine (real Ray actors, tiny model): SIGKILL of the trainer
or of a rollout engine actor mid-run, each file of a checkpoint truncated or deleted, SIGTERM
while a checkpoint is being written. Survived means the run either resumes with every step
exactly once, or fails fast with a message naming what broke."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import compose_config, materialize
from support import ray_local
from support.tiny import TINY_BARE_RUN

from miles_hydra.backends.local import checkpoint, loop
from miles_hydra.backends.local.metrics import read_records
from miles_hydra.cluster import preemption

NUM = 24  # rollouts of each run here


ray_instance = pytest.fixture(scope="module", autouse=True)(ray_local.ray_instance)


def _cfg(tmp_path: Path, *overrides: str):
    base = [*TINY_BARE_RUN, f"rollout.num_rollout={NUM}", "checkpoint.save_interval=2"]
    return materialize(compose_config([*base, *overrides], tmp_path / "out"))


def _steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [r["step"] for r in read_records(path) if "step" in r] if path.exists() else []


def _actor_pids(name: str) -> list[int]:
    """This test process's Ray actors of class ``name`` (its descendants, by /proc)."""
    parent, title = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        title[int(entry)] = argv0.decode(errors="replace")
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - mine
        mine |= frontier
    return [pid for pid in mine if title.get(pid, "").startswith(f"ray::{name}")]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.fault("kill -9 of an actor mid-run")
@pytest.mark.parametrize("actor", ["TrainerActor", "RolloutEngine"])
def test_killed_actor_fails_fast_then_the_run_resumes_exactly(tmp_path: Path, actor: str) -> None:
    cfg = _cfg(tmp_path)
    run_dir = tmp_path / "run"
    killed: list[float] = []

    stale = set(_actor_pids(actor))  # an earlier test's actor process may not be reaped yet

    def kill_at_rollout_2() -> None:
        deadline = time.monotonic() + 400
        pids: list[int] = []
        while time.monotonic() < deadline and not pids:  # this run's actor, before it steps
            pids = [pid for pid in _actor_pids(actor) if pid not in stale]
            time.sleep(0.1)
        while time.monotonic() < deadline and not killed:
            if any(step >= 2 for step in _steps(run_dir)):
                os.kill(pids[0], signal.SIGKILL)
                killed.append(time.monotonic())
            time.sleep(0.01)

    killer = threading.Thread(target=kill_at_rollout_2, daemon=True)
    killer.start()
    with pytest.raises(Exception) as info:
        loop.train(cfg, run_dir)
    killer.join(timeout=5)
    assert killed, "the run finished before the kill"
    assert time.monotonic() - killed[0] < 60  # failed fast, no hang
    assert "died" in str(info.value) or "Actor" in type(info.value).__name__, info.value
    final = loop.train(cfg, run_dir)  # the next attempt resumes from the last checkpoint
    assert final["step"] == NUM - 1
    assert _steps(run_dir) == list(range(NUM))  # none lost, none repeated


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = materialize(
        compose_config(
            [*TINY_BARE_RUN, "rollout.num_rollout=4", "checkpoint.save_interval=2"], tmp / "out"
        )
    )
    loop.train(cfg, tmp / "run")
    return tmp / "run" / "checkpoints"


def _checkpoint_files() -> list[str]:
    """What a local checkpoint holds (its manifest lists the rest)."""
    return [
        checkpoint.MANIFEST_FILE,
        checkpoint.DRIVER_FILE,
        checkpoint.TRAINER_FILE,
        checkpoint.META_FILE,
        "model/model.safetensors",
        "model/config.json",
    ]


@pytest.mark.fault("truncated or deleted checkpoint file")
@pytest.mark.parametrize("damage", ["truncate", "delete"])
@pytest.mark.parametrize("name", _checkpoint_files())
def test_damaged_checkpoint_file_falls_back_to_the_older_checkpoint(
    two_checkpoints: Path, tmp_path: Path, name: str, damage: str, caplog
) -> None:
    root = tmp_path / "checkpoints"
    shutil.copytree(two_checkpoints, root)
    old, new = checkpoint.list_checkpoints(root)
    target = new / name
    assert target.is_file(), sorted(str(p.relative_to(new)) for p in new.rglob("*"))
    if damage == "delete":
        target.unlink()
    else:
        with open(target, "r+b") as fh:
            fh.truncate(max(0, target.stat().st_size // 3))
    with caplog.at_level(logging.WARNING):
        found = checkpoint.find_latest(root)
    if found == new:  # only a file the data does not need (the manifest): still intact
        assert name == checkpoint.MANIFEST_FILE and damage == "delete"
        checkpoint.load_driver_state(found)
        return
    assert found == old
    if name == checkpoint.DRIVER_FILE and damage == "delete":
        return  # a step dir without driver.pt is not listed as a checkpoint at all
    assert f"skipping damaged checkpoint: checkpoint {new}" in caplog.text
    assert name.split("/")[-1] in caplog.text or checkpoint.MANIFEST_FILE in caplog.text


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.fault("SIGTERM during checkpoint writing")
def test_sigterm_while_a_checkpoint_is_written(tmp_path: Path, monkeypatch) -> None:
    """One SIGTERM mid-write: the checkpoint completes and the run stops after it. Two: the run
    stops at once, the half-written checkpoint never becomes one. Either way the next attempt
    resumes with every step exactly once."""
    cfg = _cfg(tmp_path)
    run_dir = tmp_path / "run"
    write_manifest = checkpoint.write_manifest
    plan = {2: 1}  # at the 2nd checkpoint written, send SIGTERM once
    writes = []

    def signalled_write(ckpt: Path) -> None:
        writes.append(ckpt)
        for _ in range(plan.get(len(writes), 0)):
            signal.raise_signal(signal.SIGTERM)
        write_manifest(ckpt)

    monkeypatch.setattr(checkpoint, "write_manifest", signalled_write)
    with preemption.stop_on_signals(grace_s=120) as stop:
        result = loop.train(cfg, run_dir)
    assert stop.signal_name == "SIGTERM" and result[preemption.PREEMPTED_KEY]
    root = run_dir / "checkpoints"
    stopped = checkpoint.step_dir_name(result["step"] + 1)  # the step after the signal
    assert result["step"] + 1 in (4, 5)
    assert checkpoint.find_latest(root).name == stopped
    preemption.clear()

    writes.clear()
    plan.clear()
    plan[1] = 2  # the next attempt: twice during its first checkpoint
    with pytest.raises(preemption.RunInterrupted):
        with preemption.stop_on_signals(grace_s=120):
            loop.train(cfg, run_dir)
    preemption.clear()
    assert checkpoint.find_latest(root).name == stopped  # not the torn one
    assert (root / checkpoint.LATEST).read_text().strip() == stopped

    monkeypatch.setattr(checkpoint, "write_manifest", write_manifest)
    final = loop.train(cfg, run_dir)
    assert final["step"] == NUM - 1
    assert _steps(run_dir) == list(range(NUM))
