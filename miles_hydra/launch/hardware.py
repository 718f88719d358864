"""The device a local run will use, as the plan reports it: the CPU, or the GPU torch sees here.

Only ``backend=local`` on ``cluster=local`` runs on this machine; for any other run the plan
keeps its cluster view (``detect_hardware`` returns None).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from miles_hydra.config import RunConfig
from miles_hydra.config.backend import BackendKind, Device
from miles_hydra.config.cluster import ClusterKind

GIB = 1024**3
# Present wherever a GPU driver is loaded (NVIDIA, or AMD for ROCm torch); without them torch
# cannot see a GPU, and the plan answers "CPU" without importing torch (seconds).
_GPU_DRIVER_PATHS = ("/proc/driver/nvidia/gpus", "/dev/kfd")


@dataclass(frozen=True)
class Hardware:
    """The one device of a local run."""

    device: Device  # Device.cpu or Device.cuda: what backend.device resolves to here
    name: str  # "CPU", or the GPU's name (torch.cuda.get_device_properties)
    mem_gb: float | None  # the GPU's memory in GiB; None on the CPU or when no GPU is visible
    note: str = ""  # how it was chosen, e.g. "backend.device=auto, no CUDA device visible"

    @property
    def is_cpu(self) -> bool:
        return self.device is Device.cpu


CPU = Hardware(Device.cpu, "CPU", None)


def detect_hardware(run: RunConfig) -> Hardware | None:
    """The device ``run`` will use when it runs on this machine, resolved as the local trainer
    resolves ``backend.device`` (auto = CUDA when torch sees a GPU, else CPU); None when the run
    goes to a cluster or to miles."""
    if run.backend.kind is not BackendKind.local or run.cluster.kind is not ClusterKind.local:
        return None
    wanted = run.backend.device
    if wanted is Device.cpu:
        return Hardware(Device.cpu, "CPU", None, "backend.device=cpu")
    gpu = _visible_gpu()
    if gpu is not None:
        return Hardware(Device.cuda, gpu[0], gpu[1], f"backend.device={wanted.value}")
    if wanted is Device.auto:
        return Hardware(Device.cpu, "CPU", None, "backend.device=auto, no CUDA device visible")
    return Hardware(Device.cuda, "CUDA GPU", None, "backend.device=cuda, none visible here")


def _visible_gpu() -> tuple[str, float] | None:
    """(name, GiB) of the first GPU torch sees, or None."""
    if not any(Path(p).exists() for p in _GPU_DRIVER_PATHS):
        return None
    import torch  # only where a GPU driver is present

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / GIB
