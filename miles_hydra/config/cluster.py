"""`cluster` group: where the job runs (this process, a local subprocess, Slurm) and with what.

First draft by the lead; extended by the Slurm/Ray work (miles_hydra/cluster/).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.errors import ConfigError


class ClusterKind(enum.Enum):
    local = "local"  # run the job body in the launching process (debugging, fast tests)
    submitit_local = "submitit_local"  # submitit LocalExecutor: a subprocess here, with a timeout
    slurm = "slurm"  # submitit SlurmExecutor: sbatch, one task per node, requeue on preemption


@dataclass
class ClusterConfig:
    kind: ClusterKind = ClusterKind.local  # where the job body runs
    partition: Optional[str] = None  # sbatch --partition; None = the cluster's default partition
    account: Optional[str] = None  # sbatch --account
    qos: Optional[str] = None  # sbatch --qos
    nodes: int = 1  # sbatch --nodes; one task (one Ray node) per node
    gpus_per_node: int = 0  # sbatch --gpus-per-node; also the GPUs each Ray node registers
    # False where GPUs are no Slurm GRES (whole-node partitions, or the GPU-less CI node that
    # runs backend=miles with a stand-in entry): Ray still registers gpus_per_node.
    request_gpus: bool = True  # ask Slurm for gpus_per_node (sbatch --gpus-per-node)
    cpus_per_task: int = 2  # sbatch --cpus-per-task (one task per node); CPUs per Ray node
    mem_gb: Optional[int] = None  # sbatch --mem per node in GB; None = the partition default
    timeout_min: int = 60  # sbatch --time in minutes (also the local executor's timeout)
    constraint: Optional[str] = None  # sbatch --constraint, e.g. "h100"
    gpu_compute_capability: Optional[float] = None  # e.g. 9.0 for H100; checks fp8 before submit
    gpu_mem_gb: Optional[float] = None  # memory of one GPU; None = assume an 80 GB H100
    exclusive: bool = False  # sbatch --exclusive: no other job shares the nodes
    container_image: Optional[str] = None  # pyxis/enroot image (srun --container-image)
    container_mounts: Optional[str] = None  # pyxis mounts "src:dst,src:dst"
    sbatch_args: dict[str, Any] = field(default_factory=dict)  # more sbatch flags: {reservation: x}
    setup: list[str] = field(default_factory=list)  # shell lines run first (module load ...)
    export_env: list[str] = field(default_factory=list)  # more env vars for the job (see README)
    python: Optional[str] = None  # interpreter on the nodes; None = the launcher's sys.executable
    signal_delay_s: int = 90  # Slurm sends USR2 this long before the time limit (checkpoint window)
    max_num_requeue: int = 3  # requeues allowed after the time limit or a lost node
    array_parallelism: int = 16  # most tasks of a sweep array running at once
    trials_per_job: int = 1  # sweep variants packed side by side into one job (array task)
    wait: bool = True  # the launcher waits for the job and prints its result
    check_paths: bool = True  # check input paths before submit; false for paths only nodes see
    start_ray: bool = True  # bring up a Ray cluster over the allocation before the job runs
    ray_startup_timeout_s: float = 180.0  # fail if Ray is not up on every node within this time

    @property
    def is_slurm(self) -> bool:
        return self.kind is ClusterKind.slurm

    def validate(self) -> None:
        for key in ("nodes", "cpus_per_task", "timeout_min", "array_parallelism", "trials_per_job"):
            if getattr(self, key) < 1:
                raise ConfigError(f"cluster.{key}", getattr(self, key), "must be >= 1")
        if self.trials_per_job > 1:
            self._validate_packing()
        if self.gpus_per_node < 0:
            raise ConfigError("cluster.gpus_per_node", self.gpus_per_node, "must be >= 0")
        if self.mem_gb is not None and self.mem_gb < 1:
            raise ConfigError(
                "cluster.mem_gb", self.mem_gb, "must be >= 1", "or null for the partition default"
            )
        if self.max_num_requeue < 0:
            raise ConfigError("cluster.max_num_requeue", self.max_num_requeue, "must be >= 0")
        if self.ray_startup_timeout_s <= 0:
            raise ConfigError(
                "cluster.ray_startup_timeout_s",
                self.ray_startup_timeout_s,
                "must be > 0",
                "e.g. 180",
            )
        if self.signal_delay_s < 0 or self.signal_delay_s >= self.timeout_min * 60:
            raise ConfigError(
                "cluster.signal_delay_s",
                self.signal_delay_s,
                f"must be in [0, cluster.timeout_min*60={self.timeout_min * 60})",
                "the warning signal must come before the time limit, e.g. 90",
            )
        if not self.is_slurm:
            self._validate_not_slurm()
        if self.nodes > 1 and not self.start_ray:
            raise ConfigError(
                "cluster.start_ray",
                False,
                f"with cluster.nodes={self.nodes}: only Ray spans nodes",
                "set cluster.start_ray=true or cluster.nodes=1",
            )
        if self.container_mounts and not self.container_image:
            raise ConfigError(
                "cluster.container_mounts",
                self.container_mounts,
                "needs cluster.container_image",
                "set cluster.container_image=<image> or drop the mounts",
            )

    def _validate_packing(self) -> None:
        """Packed trials share one node: equal whole-GPU shares."""
        n = self.trials_per_job
        if self.nodes != 1:
            raise ConfigError(
                "cluster.trials_per_job",
                n,
                f"packs trials on one node (cluster.nodes={self.nodes})",
                "set cluster.nodes=1 or cluster.trials_per_job=1",
            )
        if self.gpus_per_node % n:
            raise ConfigError(
                "cluster.trials_per_job",
                n,
                f"must divide cluster.gpus_per_node={self.gpus_per_node} (equal GPU shares)",
                "e.g. 8 one-GPU trials: cluster.gpus_per_node=8 cluster.trials_per_job=8",
            )

    def _validate_not_slurm(self) -> None:
        if self.nodes != 1:
            raise ConfigError(
                "cluster.nodes",
                self.nodes,
                f"needs cluster.kind=slurm (got {self.kind.value})",
                "use cluster=slurm or cluster.nodes=1",
            )
        slurm_only = ("partition", "account", "qos", "constraint", "container_image")
        for key in slurm_only:  # silently ignored otherwise: refuse instead
            if getattr(self, key):
                raise ConfigError(
                    f"cluster.{key}",
                    getattr(self, key),
                    f"only applies to cluster.kind=slurm (got {self.kind.value})",
                    "use cluster=slurm or drop the key",
                )

    def __post_init__(self) -> None:
        self.validate()
