"""Atomic run checkpoints of the local engine.

Layout under the checkpoint root (``checkpoint.save``, default ``<run_dir>/checkpoints``)::

    step_000010/            one checkpoint, named by the number of finished rollouts
        model/              loadable HF checkpoint dir (models.save_checkpoint_dir) + draft
        trainer.pt          optimizer, LR schedule, critic, reference weights, trainer RNG
        driver.pt           step, data-source position, driver RNG, wandb run id
        meta.json           step and wall-clock time, human-readable
        manifest.json       every other file with its size and sha256, written last
    latest                  text file with the name of the newest complete checkpoint

A checkpoint is written into a hidden ``.tmp-step_*`` directory and renamed into place only
once every part is on disk, and ``latest`` is replaced atomically after that, so a crash
(or a preemption) mid-save never leaves a half-written checkpoint behind ``latest``.

On resume, ``find_latest`` verifies each candidate, newest first, against its manifest (or,
for checkpoints written before manifests existed, checks that every part is present and that
each ``.pt`` zip and ``.safetensors`` header is whole) and falls back to the newest intact
one, logging which it skipped and why. Every load error names the checkpoint and the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miles_hydra.errors import MilesHydraError

log = logging.getLogger(__name__)

LATEST = "latest"
MODEL_DIR = "model"
TRAINER_FILE = "trainer.pt"
DRIVER_FILE = "driver.pt"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"
_HASH_CHUNK = 1 << 24


class CheckpointError(MilesHydraError):
    """A checkpoint is damaged or cannot be read. The message names its directory and file."""


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
    write_manifest(tmp)
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


def write_manifest(ckpt: Path) -> None:
    """Record every file of ``ckpt`` with its size and sha256 in ``manifest.json`` (last)."""
    ckpt = Path(ckpt)
    files = {
        rel: {"size": (ckpt / rel).stat().st_size, "sha256": _sha256(ckpt / rel)}
        for rel in _files(ckpt)
    }
    tmp = ckpt / f"{_TMP_PREFIX}{MANIFEST_FILE}"
    tmp.write_text(json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, ckpt / MANIFEST_FILE)


def _files(ckpt: Path) -> list[str]:
    return sorted(
        p.relative_to(ckpt).as_posix()
        for p in ckpt.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(_TMP_PREFIX)
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(ckpt: Path, checksums: bool = True) -> None:
    """Raise CheckpointError naming ``ckpt`` and the file if the checkpoint is not intact.

    With a manifest: every listed file exists with its size (and, with ``checksums``, its
    sha256). Without one (written before manifests): every part is present, each ``.pt`` is
    a whole zip archive and each ``.safetensors`` header fits the file.
    """
    ckpt = Path(ckpt)
    manifest = ckpt / MANIFEST_FILE
    if manifest.is_file():
        _verify_manifest(ckpt, manifest, checksums)
        return
    for name in (MODEL_DIR, TRAINER_FILE, DRIVER_FILE):
        if not (ckpt / name).exists():
            raise CheckpointError(f"checkpoint {ckpt}: {name} is missing")
    for path in sorted(ckpt.rglob("*.pt")):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"checkpoint {ckpt}: {path.relative_to(ckpt)} is truncated")
    for path in sorted(ckpt.rglob("*.safetensors")):
        _verify_safetensors(ckpt, path)


def _verify_manifest(ckpt: Path, manifest: Path, checksums: bool) -> None:
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt}: {MANIFEST_FILE} is unreadable ({exc})") from exc
    for rel, want in files.items():
        path = ckpt / rel
        if not path.is_file():
            raise CheckpointError(f"checkpoint {ckpt}: {rel} is missing")
        size = path.stat().st_size
        if size != want["size"]:
            raise CheckpointError(
                f"checkpoint {ckpt}: {rel} has {size} bytes, the manifest says {want['size']}"
            )
        if checksums and _sha256(path) != want["sha256"]:
            raise CheckpointError(f"checkpoint {ckpt}: {rel} does not match its sha256")


def _verify_safetensors(ckpt: Path, path: Path) -> None:
    """The 8-byte header length, the JSON header and the last tensor's end fit the file."""
    size = path.stat().st_size
    where = f"checkpoint {ckpt}: {path.relative_to(ckpt)}"
    try:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if 8 + header_len > size:
                raise CheckpointError(f"{where} is truncated (header past the end of the file)")
            header = json.loads(fh.read(header_len))
    except (struct.error, ValueError) as exc:
        raise CheckpointError(f"{where} has no valid safetensors header ({exc})") from exc
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    if 8 + header_len + max(ends, default=0) > size:
        raise CheckpointError(f"{where} is truncated ({size} bytes, tensors need more)")


def find_latest(path: Path, checksums: bool = True) -> Path | None:
    """The checkpoint to resume from: ``path`` itself if it is one, else the newest intact
    checkpoint under it (the one ``latest`` names first, then the others newest first).

    A checkpoint that fails :func:`verify` is skipped with a warning naming it and the file;
    if ``path`` is itself a damaged checkpoint, or every checkpoint under it is damaged,
    CheckpointError says so. None when ``path`` holds no checkpoint at all.
    """
    path = Path(path)
    if (path / DRIVER_FILE).is_file():
        verify(path, checksums)
        return path
    found = list_checkpoints(path)
    pointer = path / LATEST
    if pointer.is_file():
        named = path / pointer.read_text().strip()
        if named in found:  # try what `latest` names first; it is normally the newest
            found = [*(p for p in found if p != named), named]
    skipped = []
    for candidate in reversed(found):
        try:
            verify(candidate, checksums)
        except CheckpointError as exc:
            log.warning("skipping damaged checkpoint: %s", exc)
            skipped.append(str(exc))
            continue
        if skipped:
            log.warning("resuming from the newest intact checkpoint %s", candidate)
        return candidate
    if skipped:
        raise CheckpointError(
            f"every checkpoint under {path} is damaged: "
            + "; ".join(skipped)
            + "; delete them to start over or point checkpoint.load at an intact one"
        )
    return None


def load_driver_state(ckpt: Path) -> dict[str, Any]:
    """The driver part of a checkpoint (``step``, data position, RNG, wandb id, ...)."""
    return _torch_load(Path(ckpt), DRIVER_FILE)


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The trainer part of a checkpoint (optimizer, schedule, critic, reference, RNG)."""
    return _torch_load(Path(ckpt), TRAINER_FILE)


def _torch_load(ckpt: Path, name: str) -> dict[str, Any]:
    try:
        return torch.load(ckpt / name, weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, pickle errors, OSError ...
        raise CheckpointError(
            f"checkpoint {ckpt}: cannot load {name} ({type(exc).__name__}: {exc})"
        ) from exc
