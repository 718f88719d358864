"""HF -> Megatron torch_dist conversion as a managed step of a backend=miles job.

Megatron loads ``--ref-load`` in torch_dist format; miles ships the converter
(``tools/convert_hf_to_torch_dist.py``, run under torchrun with the model's flags, as in every
official recipe's prepare step). When ``model.torch_dist_checkpoint`` is not given (or
``model.convert=always``), the job runs it first, in its allocation, into a content-addressed
directory: ``<model.convert_dir or <hf_checkpoint>_torch_dist>/<name>-<key>``, key = sha256 of
the HF checkpoint path, the model config and the converter flags. A later run or a requeue with
the same key finds the converter's completion marker (``latest_checkpointed_iteration.txt``,
written last, after a barrier) and reuses the directory; a half-written one (a crash, a
preemption) is converted again. The converter writes into ``<dir>.partial`` and the directory is
renamed into place only when complete, so concurrent jobs never read a partial conversion.

``compile_miles`` points ``--ref-load`` at the directory (pure: no I/O); ``prepare_commands``
gives the runner what to execute before submitting; the plan shows the same commands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from miles_hydra.backends.miles.model_args import model_args, num
from miles_hydra.config.model import ConvertMode
from miles_hydra.config.run import RunConfig
from miles_hydra.errors import TrainingError

log = logging.getLogger(__name__)

CONVERTER = "tools/convert_hf_to_torch_dist.py"  # under backend.miles_root
DONE_MARKER = "latest_checkpointed_iteration.txt"  # the converter's last write


@dataclass(frozen=True)
class PrepareCommand:
    """One step the job runs before `ray job submit`, skipped when `creates` is complete."""

    name: str  # short label for logs and the plan, e.g. "convert_hf_to_torch_dist"
    argv: list[str]  # the command (torchrun ...), writing into `partial`
    env: dict[str, str] = field(default_factory=dict)  # added to the job's environment
    creates: str = ""  # final directory; complete when creates/DONE_MARKER exists
    partial: str = ""  # where argv writes; renamed to `creates` on success

    def shell(self) -> str:
        """The whole step as one POSIX shell line: reuse, or convert then rename into place."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        done = shlex.quote(f"{self.creates}/{DONE_MARKER}")
        part, final = shlex.quote(self.partial), shlex.quote(self.creates)
        run = f"{env} {shlex.join(self.argv)}".strip()
        return (
            f"if [ -f {done} ]; then echo 'reusing {self.creates}'; else "
            f"rm -rf {part} && {run} && test -f {part}/{DONE_MARKER} && "
            f"rm -rf {final} && mv {part} {final}; fi"
        )


def needs_conversion(cfg: RunConfig) -> bool:
    """The job converts when no torch_dist weights are given (or convert=always); an explicit
    checkpoint.ref_load always wins."""
    m = cfg.model
    if cfg.checkpoint.ref_load or m.convert is ConvertMode.never:
        return False
    return m.convert is ConvertMode.always or not m.torch_dist_checkpoint


def converter_flags(cfg: RunConfig) -> list[str]:
    """The model's Megatron flags as the converter takes them (MTP layers included: the
    checkpoint's MTP weights are converted with the rest)."""
    m = cfg.model
    flags = model_args(m)
    if m.mtp_num_layers:
        flags += ["--mtp-num-layers", num(m.mtp_num_layers)]
    return flags


def cache_key(cfg: RunConfig) -> str:
    """sha256 over the HF checkpoint path, the model config and the converter flags (16 hex)."""
    m = cfg.model
    model = {k: _plain(v) for k, v in dataclasses.asdict(m).items() if k not in _NOT_WEIGHTS}
    payload = {
        "hf_checkpoint": str(m.hf_checkpoint).rstrip("/"),
        "model": model,
        "flags": converter_flags(cfg),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# Fields that do not change the converted weights (where they live, how they are used).
_NOT_WEIGHTS = ("name", "torch_dist_checkpoint", "convert", "convert_dir", "suggested_lr")


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def torch_dist_dir(cfg: RunConfig) -> Optional[str]:
    """Where Megatron's torch_dist weights are: the managed conversion's directory, the given
    model.torch_dist_checkpoint, or None."""
    m = cfg.model
    if not needs_conversion(cfg):
        return m.torch_dist_checkpoint
    root = (m.convert_dir or f"{str(m.hf_checkpoint).rstrip('/')}_torch_dist").rstrip("/")
    return f"{root}/{m.name}-{cache_key(cfg)}"


def conversion_command(cfg: RunConfig, save: str) -> list[str]:
    """`torchrun --nproc-per-node N <miles>/tools/convert_hf_to_torch_dist.py <model flags>
    --hf-checkpoint H --save D`, as miles' recipes run it (one node, all its GPUs)."""
    b, m = cfg.backend, cfg.model
    gpus = cfg.cluster.gpus_per_node or cfg.parallelism.actor_num_gpus_per_node
    return [
        "torchrun",
        "--nproc-per-node",
        num(gpus),
        f"{b.miles_root.rstrip('/')}/{CONVERTER}",
        *converter_flags(cfg),
        "--hf-checkpoint",
        str(m.hf_checkpoint),
        "--save",
        save,
    ]


def conversion_env(cfg: RunConfig) -> dict[str, str]:
    b = cfg.backend
    return {"PYTHONPATH": f"{b.miles_root}:{b.megatron_path}", "CUDA_DEVICE_MAX_CONNECTIONS": "1"}


def prepare_commands(cfg: RunConfig, run_dir: Optional[str] = None) -> list[PrepareCommand]:
    """What the job runs before submitting miles (empty when nothing needs preparing).
    `run_dir` is accepted for symmetry with compile_miles; the cache lives outside it."""
    del run_dir
    if not needs_conversion(cfg):
        return []
    final = torch_dist_dir(cfg)
    assert final is not None
    partial = f"{final}.partial"
    return [
        PrepareCommand(
            name="convert_hf_to_torch_dist",
            argv=conversion_command(cfg, partial),
            env=conversion_env(cfg),
            creates=final,
            partial=partial,
        )
    ]


def plan_lines(cfg: RunConfig) -> list[str]:
    """The prepare steps as the plan prints them (like miles' prepare.txt)."""
    lines = []
    for i, step in enumerate(prepare_commands(cfg)):
        lines.append(f"### prepare {i}: {step.name} (skipped when {step.creates} is complete)")
        env = " ".join(f"{k}={v}" for k, v in sorted(step.env.items()))
        lines.append(f"{env} {shlex.join(step.argv)}")
    return lines


def run_prepare(cfg: RunConfig, run_dir: Path, timeout_s: Optional[float] = None) -> list[str]:
    """Run the prepare steps in the job's allocation (before `ray job submit`), appending their
    output to <run_dir>/prepare.log; raise TrainingError if one fails. Returns the step names
    that ran or were reused."""
    steps = prepare_commands(cfg, str(run_dir))
    if not steps:
        return []
    log_path = Path(run_dir) / "prepare.log"
    env = {**os.environ, **{k: str(v) for k, v in cfg.backend.env.items()}}
    done = []
    with open(log_path, "a") as log_file:
        for step in steps:
            log.info("prepare %s -> %s (log: %s)", step.name, step.creates, log_path)
            start = time.monotonic()
            proc = subprocess.run(
                ["bash", "-c", step.shell()],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout_s,
            )
            if proc.returncode != 0:
                raise TrainingError(
                    f"prepare step {step.name} exited with {proc.returncode}; log: {log_path}"
                )
            log.info("prepare %s done in %.0f s", step.name, time.monotonic() - start)
            done.append(step.name)
    return done
