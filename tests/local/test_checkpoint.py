"""Atomic checkpoints: layout, `latest`, keep_last, crash mid-save, RNG round trip, and the
manifest: a damaged newest checkpoint is skipped (named, with the file) for the older one."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from miles_hydra.backends.local import checkpoint
from miles_hydra.backends.local.checkpoint import CheckpointError


def _trainer_part(tag: str):
    def write(tmp: Path) -> None:
        (tmp / checkpoint.MODEL_DIR).mkdir()
        (tmp / checkpoint.MODEL_DIR / "config.json").write_text("{}")
        save_file({"w": torch.ones(64, 64)}, str(tmp / checkpoint.MODEL_DIR / "model.safetensors"))
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


def _truncate(path: Path, size: int = 1000) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _two_checkpoints(root: Path) -> tuple[Path, Path]:
    old = checkpoint.save(root, 1, {"data": 1}, _trainer_part("old"), keep_last=3)
    new = checkpoint.save(root, 2, {"data": 2}, _trainer_part("new"), keep_last=3)
    return old, new


def test_manifest_lists_every_file_and_verifies(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path, 1, {}, _trainer_part("a"), keep_last=2)
    files = json.loads((path / checkpoint.MANIFEST_FILE).read_text())["files"]
    assert sorted(files) == [
        "driver.pt",
        "meta.json",
        "model/config.json",
        "model/model.safetensors",
        "trainer.pt",
    ]
    assert files["trainer.pt"]["size"] == (path / "trainer.pt").stat().st_size
    checkpoint.verify(path)


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("model/model.safetensors", r"model/model.safetensors has 1000 bytes, the manifest says"),
        ("driver.pt", r"driver.pt has 1000 bytes"),
        ("trainer.pt", r"trainer.pt has 1000 bytes"),
    ],
)
def test_truncated_newest_falls_back_to_older(tmp_path: Path, rel: str, why: str, caplog) -> None:
    old, new = _two_checkpoints(tmp_path)
    _truncate(new / rel)
    with pytest.raises(CheckpointError, match=f"checkpoint {new}: {why}"):
        checkpoint.verify(new)
    with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
        assert checkpoint.find_latest(tmp_path) == old
    assert f"skipping damaged checkpoint: checkpoint {new}: {rel}" in caplog.text
    assert f"newest intact checkpoint {old}" in caplog.text


def test_flipped_byte_is_caught_by_the_checksum(tmp_path: Path) -> None:
    old, new = _two_checkpoints(tmp_path)
    target = new / checkpoint.MODEL_DIR / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model/model.safetensors does not match its sha256"):
        checkpoint.verify(new)
    checkpoint.verify(new, checksums=False)  # sizes only: the quick pre-submission check
    assert checkpoint.find_latest(tmp_path) == old


def test_deleted_file_and_all_damaged(tmp_path: Path) -> None:
    old, new = _two_checkpoints(tmp_path)
    (new / checkpoint.TRAINER_FILE).unlink()
    assert checkpoint.find_latest(tmp_path) == old
    _truncate(old / checkpoint.DRIVER_FILE, 10)
    with pytest.raises(CheckpointError, match=f"every checkpoint under {tmp_path} is damaged"):
        checkpoint.find_latest(tmp_path)
    with pytest.raises(CheckpointError, match=f"checkpoint {old}: driver.pt"):
        checkpoint.find_latest(old)  # a checkpoint named directly is never swapped for another


def test_checkpoint_without_manifest_still_loads(tmp_path: Path) -> None:
    """Written before manifests existed: structural checks (parts, zip, safetensors header)."""
    old, new = _two_checkpoints(tmp_path)
    for path in (old, new):
        (path / checkpoint.MANIFEST_FILE).unlink()
    assert checkpoint.find_latest(tmp_path) == new
    assert checkpoint.load_trainer_state(new) == {"tag": "new"}
    _truncate(new / checkpoint.MODEL_DIR / "model.safetensors")
    with pytest.raises(CheckpointError, match="model/model.safetensors is truncated"):
        checkpoint.verify(new)
    assert checkpoint.find_latest(tmp_path) == old
    _truncate(old / checkpoint.DRIVER_FILE)
    with pytest.raises(CheckpointError, match=f"checkpoint {old}: driver.pt is truncated"):
        checkpoint.verify(old)


def test_load_errors_name_checkpoint_and_file(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path, 1, {}, _trainer_part("a"), keep_last=2)
    _truncate(path / checkpoint.DRIVER_FILE)
    with pytest.raises(CheckpointError, match=f"checkpoint {path}: cannot load driver.pt"):
        checkpoint.load_driver_state(path)
    _truncate(path / checkpoint.TRAINER_FILE)
    with pytest.raises(CheckpointError, match=f"checkpoint {path}: cannot load trainer.pt"):
        checkpoint.load_trainer_state(path)
