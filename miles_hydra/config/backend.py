"""`backend` group: which engine runs the job."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from miles_hydra.errors import ConfigError


class BackendKind(enum.Enum):
    local = "local"  # the embedded engine: small models, one machine, CPU or GPU
    miles = "miles"  # miles train.py on the job's Ray cluster


class Device(enum.Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class BackendConfig:
    kind: BackendKind = BackendKind.local  # engine
    # --- local ---
    device: Device = Device.auto  # where the local engine runs
    num_engines: int = 1  # local rollout engines (Ray actors)
    num_threads: Optional[int] = None  # torch threads per local actor; None = torch's default
    # Decoding (local engine). The batched loop runs all slots through one fixed-shape step
    # (rollout/decode.py); R3 recording always uses the per-slot loop. Compiling costs ~20-30 s
    # once per slot count, then 1.6-2.8x faster steps.
    rollout_batched: Optional[bool] = None  # batched loop, not per-slot; None = on CUDA only
    rollout_cuda_graphs: bool = True  # replay the batched step as CUDA graphs (CUDA only)
    rollout_compile: bool = False  # torch.compile the whole batched step before capture
    rollout_attn_kernel: bool = True  # Triton decode attention (CUDA); false = SDPA, kv buckets
    # --- miles ---
    miles_root: str = "/root/miles"  # miles checkout inside the image (train.py lives here)
    # None = <miles_root>/train.py (train_async.py with rollout.async_training); tests point it
    # at a stand-in. A relative path is relative to the directory the job starts in.
    miles_entry: Optional[str] = None  # entry script `ray job submit` runs with miles' argv
    megatron_path: str = "/root/Megatron-LM"  # Megatron-LM fork inside the image (PYTHONPATH)
    ray_address: Optional[str] = None  # Ray dashboard address; None = the job's own cluster
    extra_args: list[str] = field(default_factory=list)  # appended to train.py argv verbatim
    env: dict[str, str] = field(default_factory=dict)  # extra job env vars

    def validate(self) -> None:
        if self.num_engines < 1:
            raise ConfigError("backend.num_engines", self.num_engines, "must be >= 1")
        for arg in self.extra_args:
            if "WANDB_API_KEY" in arg:
                raise ConfigError(
                    "backend.extra_args",
                    "<redacted>",
                    "must not carry secrets",
                    "export WANDB_API_KEY in your environment; it reaches the job env only",
                )

    def __post_init__(self) -> None:
        self.validate()
