"""Atomic checkpoints: layout, `latest`, keep_last, crash mid-save, RNG round trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from miles_hydra.backends.local import checkpoint


def _trainer_part(tag: str):
    def write(tmp: Path) -> None:
        (tmp / checkpoint.MODEL_DIR).mkdir()
        (tmp / checkpoint.MODEL_DIR / "config.json").write_text("{}")
        torch.save({"tag": tag}, tmp / checkpoint.TRAINER_FILE)

    return write


def test_save_writes_layout_and_latest(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path, 3, {"data": {"offset": 24}}, _trainer_part("a"), keep_last=2)
    assert path == tmp_path / "step_000003"
    assert (tmp_path / checkpoint.LATEST).read_text().strip() == "step_000003"
    assert checkpoint.find_latest(tmp_path) == path
    assert checkpoint.find_latest(path) == path  # a checkpoint dir names itself
    assert checkpoint.load_driver_state(path) == {"step": 3, "data": {"offset": 24}}
    assert checkpoint.load_trainer_state(path) == {"tag": "a"}
    assert not list(tmp_path.glob(".tmp-*"))


def test_keep_last_prunes_oldest(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, {}, _trainer_part(str(step)), keep_last=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_000003", "step_000004"]
    assert checkpoint.find_latest(tmp_path).name == "step_000004"


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    good = checkpoint.save(tmp_path, 1, {"data": 1}, _trainer_part("good"), keep_last=3)

    def crash(tmp: Path) -> None:
        (tmp / checkpoint.MODEL_DIR).mkdir()
        raise RuntimeError("killed while writing the model")

    with pytest.raises(RuntimeError, match="killed"):
        checkpoint.save(tmp_path, 2, {"data": 2}, crash, keep_last=3)
    assert checkpoint.find_latest(tmp_path) == good
    assert checkpoint.list_checkpoints(tmp_path) == [good]
    # the next successful save cleans the half-written temp dir up
    checkpoint.save(tmp_path, 2, {"data": 2}, _trainer_part("next"), keep_last=3)
    assert not list(tmp_path.glob(".tmp-*"))


def test_find_latest_without_pointer_and_empty(tmp_path: Path) -> None:
    assert checkpoint.find_latest(tmp_path) is None
    assert checkpoint.find_latest(tmp_path / "missing") is None
    checkpoint.save(tmp_path, 5, {}, _trainer_part("x"), keep_last=2)
    (tmp_path / checkpoint.LATEST).unlink()
    assert checkpoint.find_latest(tmp_path).name == "step_000005"


def test_rng_state_round_trip() -> None:
    state = checkpoint.rng_state()
    first = (torch.rand(3), random.random(), np.random.rand())
    checkpoint.set_rng_state(state)
    second = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], second[0])
    assert first[1:] == second[1:]
