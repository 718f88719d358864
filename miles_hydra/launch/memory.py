"""Per-GPU memory estimate of a run: training state under its sharding, rollout weights and KV.

What is counted (and what is not) is stated in ``COUNTED``; the plan prints it. The numbers are
a first-order estimate for spotting layouts that cannot fit, not a profiler.
"""

from __future__ import annotations

from dataclasses import dataclass

from miles_hydra.config import RunConfig
from miles_hydra.config.algorithm import Optimizer
from miles_hydra.config.backend import BackendKind
from miles_hydra.config.layout import pipeline_stage_layers
from miles_hydra.config.precision import DType, PrecisionMode

GIB = 1024**3
DEFAULT_CARD_GB = 80.0  # NVIDIA H100 80GB (80 GiB HBM3), assumed when the cluster does not say
DEFAULT_MEM_FRACTION = 0.7  # miles recipes' --sglang-mem-fraction-static, assumed when unset
TRAIN_MARGIN_GB = 1.0  # miles --train-memory-margin-bytes default (1 GiB)

COUNTED = (
    "training: weights, gradients and optimizer state (fp32 master + Adam moments, sharded by "
    "the distributed optimizer over DP); dense weights split by TP x PP, routed experts by "
    "EP x ETP x PP (uneven stages: the largest stage's share of the layers); embeddings spread "
    "evenly over PP stages. rollout: engine weights split by "
    "the engine TP, KV cache = mem_fraction_static x card - weights. NOT counted: activations, "
    "MTP layers, CUDA graphs, NCCL buffers, fragmentation."
)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU, split by what holds them."""

    card_gb: float  # memory of one GPU
    card_assumed: bool  # True when card_gb is the 80 GB H100 default, not from the cluster
    dense_params: int  # parameters outside routed experts (attention, dense MLPs, embeddings)
    expert_params: int  # parameters of all routed experts
    weights_gb: float  # training weights per GPU
    grads_gb: float  # gradients per GPU
    optimizer_gb: float  # master weights + optimizer moments per GPU
    rollout_weights_gb: float  # one engine's weights per GPU
    mem_fraction: float  # SGLang mem_fraction_static used for the KV budget
    mem_fraction_assumed: bool  # True when rollout.sglang_mem_fraction_static was unset
    kv_budget_gb: float  # KV cache per rollout GPU
    kv_bytes_per_token: float  # KV bytes per token per rollout GPU
    colocated: bool  # trainer and engines take turns on the same GPUs

    @property
    def train_gb(self) -> float:
        return self.weights_gb + self.grads_gb + self.optimizer_gb

    @property
    def kv_tokens(self) -> int:
        if self.kv_bytes_per_token <= 0:
            return 0
        return max(0, int(self.kv_budget_gb * GIB / self.kv_bytes_per_token))

    def warnings(self) -> list[str]:
        out = []
        usable = self.card_gb - TRAIN_MARGIN_GB
        if self.train_gb > usable:
            out.append(
                f"training state {self.train_gb:.1f} GiB/GPU exceeds the {self.card_gb:.0f} GiB card "
                f"(minus a {TRAIN_MARGIN_GB:.0f} GiB margin) before activations; raise TP/PP/EP or "
                "add GPUs"
            )
        if self.kv_budget_gb <= 0:
            out.append(
                f"rollout weights {self.rollout_weights_gb:.1f} GiB/GPU leave no KV cache inside "
                f"mem_fraction_static={self.mem_fraction} x {self.card_gb:.0f} GiB; raise "
                "parallelism.rollout_num_gpus_per_engine or rollout.sglang_mem_fraction_static"
            )
        return out


def expert_param_count(run: RunConfig) -> int:
    """Parameters of all routed experts (0 for a dense model)."""
    m = run.model
    if not m.is_moe:
        return 0
    mult = 3 if m.swiglu else 2
    per_expert = mult * m.hidden_size * (m.moe_ffn_hidden_size or m.ffn_hidden_size)
    return sum(m.moe_layer_pattern()) * m.num_experts * per_expert


def card_memory_gb(run: RunConfig) -> tuple[float, bool]:
    """(GB of one GPU, assumed?) from ``cluster.gpu_mem_gb`` when the schema has it."""
    gb = getattr(run.cluster, "gpu_mem_gb", None)
    if gb:
        return float(gb), False
    return DEFAULT_CARD_GB, True


def _train_bytes(run: RunConfig) -> tuple[float, float, float]:
    """Bytes per parameter: (weights, gradients, master + optimizer state)."""
    mode = run.precision.mode
    if mode is PrecisionMode.fp32:
        weights, grads, master = 4.0, 4.0, 0.0
    else:  # bf16 params (fp8/int4 QAT quantize on the fly), bf16 grads, fp32 master
        weights, grads, master = 2.0, 2.0, 4.0
    moments = 8.0 if run.algorithm.optimizer is Optimizer.adam else 4.0
    return weights, grads, master + moments


def _rollout_bytes(run: RunConfig) -> tuple[float, float]:
    """Bytes per parameter of the engine: (dense, routed experts)."""
    mode = run.precision.mode
    if mode is PrecisionMode.fp8:
        return 1.0, 1.0
    if mode is PrecisionMode.int4_qat:
        return 2.0, 0.5  # W4A16 routed experts
    if run.backend.kind is BackendKind.local:
        return (4.0, 4.0) if run.precision.rollout_dtype is DType.float32 else (2.0, 2.0)
    return 2.0, 2.0


def kv_bytes_per_token(run: RunConfig) -> float:
    """KV-cache bytes per token on one rollout GPU (bf16 cache, or fp32 on the local engine)."""
    m = run.model
    elem = 4.0 if _rollout_bytes(run)[0] == 4.0 else 2.0
    engine_tp = run.parallelism.rollout_num_gpus_per_engine
    if m.multi_latent_attention:  # compressed latent + rope key, replicated over TP
        return m.num_layers * (m.kv_lora_rank + m.qk_pos_emb_head_dim) * elem
    kv_heads = max(1, m.query_groups // engine_tp)
    return m.num_layers * 2 * kv_heads * m.head_dim * elem


def estimate(run: RunConfig, card_gb: float | None = None) -> MemoryEstimate:
    """The per-GPU estimate for ``run`` (see ``COUNTED``); ``card_gb``: the memory of the GPU a
    local run will use, when detected (else ``card_memory_gb``)."""
    p = run.parallelism
    total = run.model.param_count()
    experts = expert_param_count(run)
    dense = total - experts
    tp, pp = p.tensor_model_parallel_size, p.pipeline_model_parallel_size
    # the heaviest pipeline stage's share of the layers (1 / PP for an even split)
    stage = max(pipeline_stage_layers(run)) / run.model.num_layers
    expert_shards = p.expert_model_parallel_size * p.etp * pp
    params_gpu = dense * stage / tp + experts * stage * pp / expert_shards
    w, g, opt = _train_bytes(run)
    distributed = (
        run.algorithm.optimizer is Optimizer.adam and run.backend.kind is BackendKind.miles
    )
    dp = p.data_parallel_size if distributed else 1
    expert_dp = max(1, p.actor_world_size // expert_shards) if distributed else 1
    opt_params = dense * stage / tp / dp + experts * stage * pp / expert_shards / expert_dp
    card, card_assumed = (card_gb, False) if card_gb else card_memory_gb(run)
    rd, re = _rollout_bytes(run)
    engine_tp = p.rollout_num_gpus_per_engine
    rollout_w = (dense * rd + experts * re) / engine_tp / GIB
    frac = run.rollout.sglang_mem_fraction_static
    return MemoryEstimate(
        card_gb=card,
        card_assumed=card_assumed,
        dense_params=dense,
        expert_params=experts,
        weights_gb=params_gpu * w / GIB,
        grads_gb=params_gpu * g / GIB,
        optimizer_gb=opt_params * opt / GIB,
        rollout_weights_gb=rollout_w,
        mem_fraction=frac if frac is not None else DEFAULT_MEM_FRACTION,
        mem_fraction_assumed=frac is None,
        kv_budget_gb=(frac if frac is not None else DEFAULT_MEM_FRACTION) * card - rollout_w,
        kv_bytes_per_token=kv_bytes_per_token(run),
        colocated=p.colocate,
    )
