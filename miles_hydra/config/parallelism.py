"""`parallelism` group: how training and rollout are laid out over GPUs (Megatron + SGLang)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from miles_hydra.errors import ConfigError


@dataclass
class ParallelismConfig:
    tensor_model_parallel_size: int = 1  # Megatron TP
    pipeline_model_parallel_size: int = 1  # Megatron PP
    # uneven pipeline: decoder layers on the first / last PP stage (None = an even split); the
    # middle stages share the rest evenly (Megatron --decoder-first/last-pipeline-num-layers)
    decoder_first_pipeline_num_layers: Optional[int] = None  # layers on PP stage 0
    decoder_last_pipeline_num_layers: Optional[int] = None  # layers on the last PP stage
    context_parallel_size: int = 1  # Megatron CP
    expert_model_parallel_size: int = 1  # Megatron EP (MoE only)
    expert_tensor_parallel_size: Optional[int] = None  # Megatron ETP; None = same as TP
    sequence_parallel: bool = False  # Megatron sequence parallelism (needs TP > 1)
    actor_num_nodes: int = 1  # nodes of training actors
    actor_num_gpus_per_node: int = 1  # training GPUs per node (one rank each)
    rollout_num_gpus: Optional[int] = None  # rollout GPUs; None = actor GPUs when colocated
    rollout_num_gpus_per_engine: int = 1  # GPUs (SGLang TP) per rollout engine
    colocate: bool = True  # training and rollout share the same GPUs (offloading in turn)
    micro_batch_size: int = 1  # samples per micro-batch (ignored with dynamic batch size)
    use_dynamic_batch_size: bool = False  # pack micro-batches by token count
    max_tokens_per_gpu: Optional[int] = None  # token budget per micro-batch (dynamic batch size)

    @property
    def actor_world_size(self) -> int:
        return self.actor_num_nodes * self.actor_num_gpus_per_node

    @property
    def model_parallel_size(self) -> int:
        return (
            self.tensor_model_parallel_size
            * self.pipeline_model_parallel_size
            * self.context_parallel_size
        )

    @property
    def data_parallel_size(self) -> int:
        return self.actor_world_size // self.model_parallel_size

    @property
    def etp(self) -> int:
        return self.expert_tensor_parallel_size or self.tensor_model_parallel_size

    @property
    def total_rollout_gpus(self) -> int:
        """Rollout GPUs before any critic (see miles_hydra.config.layout for the job's total)."""
        if self.colocate:
            return self.actor_world_size
        return self.rollout_num_gpus or 0

    def validate(self) -> None:
        for key in (
            "tensor_model_parallel_size",
            "pipeline_model_parallel_size",
            "context_parallel_size",
            "expert_model_parallel_size",
            "actor_num_nodes",
            "actor_num_gpus_per_node",
            "rollout_num_gpus_per_engine",
            "micro_batch_size",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"parallelism.{key}", getattr(self, key), "must be >= 1")
        if self.actor_world_size % self.model_parallel_size:
            raise ConfigError(
                "parallelism.tensor_model_parallel_size",
                self.tensor_model_parallel_size,
                f"TP*PP*CP={self.model_parallel_size} does not divide the {self.actor_world_size} "
                f"actor GPUs (actor_num_nodes={self.actor_num_nodes} x "
                f"actor_num_gpus_per_node={self.actor_num_gpus_per_node})",
                "make actor GPUs a multiple of TP*PP*CP or lower TP/PP/CP",
            )
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ConfigError(
                "parallelism.sequence_parallel",
                True,
                "needs tensor_model_parallel_size > 1",
                "set parallelism.sequence_parallel=false or raise TP",
            )
        if self.colocate:
            if self.rollout_num_gpus not in (None, self.actor_world_size):
                raise ConfigError(
                    "parallelism.rollout_num_gpus",
                    self.rollout_num_gpus,
                    f"must equal the {self.actor_world_size} actor GPUs when colocate=true",
                    "leave it null or set parallelism.colocate=false",
                )
        elif not self.rollout_num_gpus:
            raise ConfigError(
                "parallelism.rollout_num_gpus",
                self.rollout_num_gpus,
                "is required when colocate=false (rollout engines need their own GPUs)",
                "set parallelism.rollout_num_gpus=<n> or parallelism.colocate=true",
            )
        if self.total_rollout_gpus % self.rollout_num_gpus_per_engine:
            raise ConfigError(
                "parallelism.rollout_num_gpus_per_engine",
                self.rollout_num_gpus_per_engine,
                f"does not divide the {self.total_rollout_gpus} rollout GPUs",
                f"use one of {[d for d in range(1, self.total_rollout_gpus + 1) if self.total_rollout_gpus % d == 0]}",
            )
        ep, etp, pp = self.expert_model_parallel_size, self.etp, self.pipeline_model_parallel_size
        if self.actor_world_size % (ep * etp * pp):
            # name the knob that breaks it: EP when EP*PP alone does not fit, else ETP
            # (which defaults to TP when unset)
            ep_breaks = self.actor_world_size % (ep * pp) != 0
            key = "expert_model_parallel_size" if ep_breaks else "expert_tensor_parallel_size"
            fits = [d for d in range(1, self.actor_world_size + 1)
                    if self.actor_world_size % (d * pp * (etp if ep_breaks else ep)) == 0]  # fmt: skip
            raise ConfigError(
                f"parallelism.{key}",
                ep if ep_breaks else etp,
                f"EP*ETP*PP={ep}*{etp}*{pp}={ep * etp * pp} does not divide the "
                f"{self.actor_world_size} actor GPUs",
                f"use {'EP' if ep_breaks else 'ETP'} in {fits} or add actor GPUs",
            )
        if self.use_dynamic_batch_size and not self.max_tokens_per_gpu:
            raise ConfigError(
                "parallelism.max_tokens_per_gpu",
                self.max_tokens_per_gpu,
                "is required when use_dynamic_batch_size=true",
                "set parallelism.max_tokens_per_gpu=<tokens>, e.g. 8192",
            )

    def __post_init__(self) -> None:
        self.validate()
