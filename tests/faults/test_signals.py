"""Fault: SIGINT / SIGTERM of a run in the launcher's process (``python launch.py``, the real
local engine). The run stops cleanly: a checkpoint if one comes within the grace period, state
``interrupted``, one line on stderr and no traceback, exit code 128 + the signal, and every
process the run started (Ray's included) gone within 10 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.tiny import TINY_BARE_RUN

REPO = Path(__file__).resolve().parents[2]
GONE_S = 10.0  # every process of the run is gone this long after the signal


def _descendants(root: int) -> set[int]:
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.fault("SIGTERM of a local run (launch.py)")
def test_sigterm_stops_the_run_cleanly(tmp_path: Path) -> None:
    """SIGTERM, as `kill` or a process manager sends it (SIGINT takes the same path; its
    handling in-process: tests/cluster/test_cluster_units.py)."""
    sig = signal.SIGTERM
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline"}
    argv = [sys.executable, str(REPO / "launch.py"), *TINY_BARE_RUN, "rollout.num_rollout=5000"]
    argv += ["checkpoint.save_interval=1000", f"output_root={tmp_path}"]
    out, err_file = open(tmp_path / "stdout", "wb"), open(tmp_path / "stderr", "w+b")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=err_file)
    try:
        deadline = time.monotonic() + 300
        while not [p for p in tmp_path.rglob("metrics.jsonl") if p.stat().st_size > 0]:
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never logged a rollout"
            time.sleep(0.2)
        family = _descendants(proc.pid)
        assert family, "the run started no process (Ray)"
        sent = time.monotonic()
        proc.send_signal(sig)
        while [p for p in family if _alive(p)] and time.monotonic() - sent < 30:
            time.sleep(0.1)
        gone_s = time.monotonic() - sent
        left = [p for p in family if _alive(p)]
        proc.wait(timeout=60)  # the interpreter's own exit may take longer
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "stderr").read_bytes()
    assert not left and gone_s < GONE_S, f"{len(left)} processes left after {gone_s:.1f} s"
    assert proc.returncode == 128 + sig, err.decode()[-3000:]
    lines = [line for line in err.decode().splitlines() if line.startswith("miles_hydra:")]
    assert len(lines) == 1 and lines[0].startswith(f"miles_hydra: interrupted by {sig.name}")
    assert "Traceback" not in err.decode()
    (status_file,) = tmp_path.rglob("status.json")
    status = json.loads(status_file.read_text())
    assert status["state"] == "interrupted" and status["signal"] == sig.name
    if status["checkpointed"]:  # the step ended within the grace period: resumable from it
        assert f"checkpointed after rollout {status['step']}" in lines[0]
        assert (status_file.parent / "checkpoints" / "latest").exists()
