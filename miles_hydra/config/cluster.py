"""`cluster` group: where the job runs (this machine, or Slurm through submitit).

First draft by the lead; owned by the Slurm/Ray work from here on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.errors import ConfigError


class ClusterKind(enum.Enum):
    local = "local"  # run on this machine (in-process)
    slurm = "slurm"  # submit to Slurm through submitit


@dataclass
class ClusterConfig:
    name: str = "local"  # preset name
    kind: ClusterKind = ClusterKind.local  # scheduler
    partition: Optional[str] = None  # Slurm partition
    account: Optional[str] = None  # Slurm account
    qos: Optional[str] = None  # Slurm QOS
    nodes: int = 1  # nodes per job
    gpus_per_node: int = 0  # GPUs per node (0 on CPU-only clusters)
    cpus_per_task: int = 2  # CPUs per node task
    mem_gb: Optional[int] = None  # memory per node; None = the partition's default
    timeout_min: int = 60  # wall-clock limit of one job attempt
    constraint: Optional[str] = None  # Slurm --constraint (e.g. "h100")
    gpu_compute_capability: Optional[float] = None  # e.g. 9.0 for H100; checks fp8 before submit
    container_image: Optional[str] = None  # pyxis/enroot image (srun --container-image)
    container_mounts: Optional[str] = None  # pyxis mounts "src:dst,src:dst"
    sbatch_args: dict[str, Any] = field(default_factory=dict)  # extra sbatch options
    setup: list[str] = field(default_factory=list)  # shell lines run before the job
    max_num_requeue: int = 3  # requeues allowed on preemption / time limit
    array_parallelism: int = 16  # max concurrent tasks of a sweep array

    def validate(self) -> None:
        if self.nodes < 1:
            raise ConfigError("cluster.nodes", self.nodes, "must be >= 1")
        if self.gpus_per_node < 0:
            raise ConfigError("cluster.gpus_per_node", self.gpus_per_node, "must be >= 0")
        if self.timeout_min < 1:
            raise ConfigError("cluster.timeout_min", self.timeout_min, "must be >= 1")

    def __post_init__(self) -> None:
        self.validate()
