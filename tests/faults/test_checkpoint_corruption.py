"""A damaged newest checkpoint, through the real local loop (real Ray actors): the run resumes
from the older intact checkpoint, logs which one it skipped and why, and finishes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import compose_config, materialize
from support import ray_local
from support.tiny import TINY_BARE_RUN

from miles_hydra.backends.local import checkpoint, loop
from miles_hydra.backends.local.metrics import read_records

ray_instance = pytest.fixture(scope="module", autouse=True)(ray_local.ray_instance)


@pytest.mark.fault("truncated or deleted checkpoint file")
def test_truncated_newest_checkpoint_resumes_from_the_older(tmp_path: Path, caplog) -> None:
    """The issue's case; other files and manifest-less checkpoints: tests/local/test_checkpoint.py."""
    rel = "model/model.safetensors"
    overrides = [*TINY_BARE_RUN, "rollout.num_rollout=4", "checkpoint.save_interval=2"]
    cfg = materialize(compose_config(overrides, tmp_path / "out"))
    run_dir = tmp_path / "run"
    loop.train(cfg, run_dir)
    root = run_dir / "checkpoints"
    old, new = checkpoint.list_checkpoints(root)
    assert (old.name, new.name) == ("step_000002", "step_000004")
    with open(new / rel, "r+b") as fh:
        fh.truncate(1000)

    with caplog.at_level(logging.INFO):
        final = loop.train(cfg, run_dir)
    assert f"skipping damaged checkpoint: checkpoint {new}: {rel} has 1000 bytes" in caplog.text
    assert f"resuming from {old} at rollout 2" in caplog.text
    assert final["step"] == 3
    steps = [r["step"] for r in read_records(run_dir / "metrics.jsonl") if "step" in r]
    assert steps == [0, 1, 2, 3]  # rollouts 2-3 redone from the older one, logged once
    checkpoint.verify(checkpoint.find_latest(root))  # the rewritten step 4 is intact
