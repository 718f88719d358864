"""Atomic run checkpoints of the local engine.

Layout under the checkpoint root (``checkpoint.save``, default ``<run_dir>/checkpoints``)::

    step_000010/            one checkpoint, named by the number of finished rollouts
        model/              loadable HF checkpoint dir (models.save_checkpoint_dir) + draft
        trainer.pt          optimizer, LR schedule, critic, reference weights, trainer RNG
        driver.pt           step, data-source position, driver RNG, wandb run id
        meta.json           step and wall-clock time, human-readable
    latest                  text file with the name of the newest complete checkpoint

A checkpoint is written into a hidden ``.tmp-step_*`` directory and renamed into place only
once every part is on disk, and ``latest`` is replaced atomically after that, so a crash
(or a preemption) mid-save never leaves a half-written checkpoint behind ``latest``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"
MODEL_DIR = "model"
TRAINER_FILE = "trainer.pt"
DRIVER_FILE = "driver.pt"
META_FILE = "meta.json"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


def step_dir_name(step: int) -> str:
    """Directory name of the checkpoint taken after ``step`` finished rollouts."""
    return f"{_PREFIX}{step:06d}"


def rng_state() -> dict[str, Any]:
    """RNG states of this process: torch (CPU and CUDA), python ``random`` and numpy."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    root: Path,
    step: int,
    driver_state: dict[str, Any],
    write_trainer_part: Callable[[Path], None],
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; return its directory.

    ``write_trainer_part(tmp_dir)`` writes ``model/`` and ``trainer.pt`` into the temporary
    directory (the trainer actor does it, it holds the weights). The driver's state is
    written here. Then the directory is renamed into place, ``latest`` is updated and all but
    the newest ``keep_last`` checkpoints are deleted.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_trainer_part(tmp)
    torch.save({"step": step, **driver_state}, tmp / DRIVER_FILE)
    (tmp / META_FILE).write_text(json.dumps({"step": step, "time": time.time()}) + "\n")
    _check_complete(tmp)
    if final.exists():  # a checkpoint of the same step from a run that crashed before `latest`
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_latest(root, final.name)
    _prune(root, keep_last)
    return final


def _check_complete(path: Path) -> None:
    missing = [
        name for name in (MODEL_DIR, TRAINER_FILE, DRIVER_FILE) if not (path / name).exists()
    ]
    assert not missing, f"checkpoint {path} is missing {missing}"


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f"{_TMP_PREFIX}{LATEST}-{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / LATEST)


def _prune(root: Path, keep_last: int) -> None:
    for path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    for stale in root.glob(f"{_TMP_PREFIX}{_PREFIX}*"):  # left by a run killed mid-save
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(_PREFIX) and (p / DRIVER_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def find_latest(path: Path) -> Path | None:
    """The checkpoint to resume from: ``path`` itself if it is one, else the one its
    ``latest`` names, else its newest complete ``step_*`` directory, else None."""
    path = Path(path)
    if (path / DRIVER_FILE).is_file():
        return path
    pointer = path / LATEST
    if pointer.is_file():
        candidate = path / pointer.read_text().strip()
        if (candidate / DRIVER_FILE).is_file():
            return candidate
    found = list_checkpoints(path)
    return found[-1] if found else None


def load_driver_state(ckpt: Path) -> dict[str, Any]:
    """The driver part of a checkpoint (``step``, data position, RNG, wandb id, ...)."""
    return torch.load(Path(ckpt) / DRIVER_FILE, weights_only=False)


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The trainer part of a checkpoint (optimizer, schedule, critic, reference, RNG)."""
    return torch.load(Path(ckpt) / TRAINER_FILE, weights_only=False)
