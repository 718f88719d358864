"""The model section of the miles argv: Megatron architecture flags, as miles' scripts/models give them.

Token order follows the upstream files so a diff against ``scripts/models/<type>.py`` stays
readable: the Qwen3 dense layout (qwen3-0.6B/4B/8B; also Qwen2.5, Llama, MiMo), the Qwen3-MoE
layout (qwen3-30B-A3B/235B-A22B), DeepSeek-V3 (MLA + sigmoid router) and GLM-4.5. The values come
from the model config, so a preset that edits a field changes its flag. MTP flags are not part of
this section: the speculative section owns ``--mtp-num-layers`` (miles only builds MTP layers when
they are trained online).
"""

from __future__ import annotations

from miles_hydra.config.model import ModelConfig, ModelFamily

Argv = list[str]


def num(value: float | int) -> str:
    """A number as a flag value: ints plain, floats shortest round-trip (1e-06, 0.28, 2.5)."""
    if isinstance(value, bool):
        raise TypeError("booleans are switches, not values")
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def model_args(m: ModelConfig) -> Argv:
    """Megatron model flags for `m` in the layout of its family's upstream model file."""
    spec = ["--spec", *m.spec] if m.spec else []  # a custom layer spec leads, as upstream
    if m.multi_latent_attention:
        return spec + _deepseek_args(m)
    if m.family is ModelFamily.glm4_moe:
        return spec + _glm_moe_args(m)
    if m.is_moe:
        return spec + _qwen3_moe_args(m)
    return spec + _dense_args(m)


def _gqa(m: ModelConfig) -> Argv:
    if m.num_query_groups is None or m.num_query_groups == m.num_attention_heads:
        return []
    return ["--group-query-attention", "--num-query-groups", num(m.num_query_groups)]


def _switch(flag: str, on: bool) -> Argv:
    return [flag] if on else []


def _opt(flag: str, value: float | int | str | None) -> Argv:
    if value is None:
        return []
    return [flag, value if isinstance(value, str) else num(value)]


def _dense_args(m: ModelConfig) -> Argv:
    """qwen3-0.6B: --swiglu --num-layers 28 ... --vocab-size 151936 --kv-channels 128 --qk-layernorm."""
    long_context = m.family in (ModelFamily.llama, ModelFamily.mimo)
    args = [
        *_switch("--swiglu", m.swiglu),
        "--num-layers",
        num(m.num_layers),
        "--hidden-size",
        num(m.hidden_size),
        "--ffn-hidden-size",
        num(m.ffn_hidden_size),
        "--num-attention-heads",
        num(m.num_attention_heads),
        *_gqa(m),
        *(["--max-position-embeddings", num(m.max_position_embeddings)] if long_context else []),
        "--use-rotary-position-embeddings",
        "--disable-bias-linear",
        *_switch("--add-qkv-bias", m.add_qkv_bias),
        "--normalization",
        m.normalization.value,
        "--norm-epsilon",
        num(m.norm_epsilon),
        "--rotary-base",
        num(m.rotary_base),
        "--vocab-size",
        num(m.vocab_size),
        *_opt("--kv-channels", m.kv_channels),
    ]
    if m.rotary_scaling_factor is not None:  # Llama-3.x rope scaling
        args += ["--use-rope-scaling", "--rotary-scaling-factor", num(m.rotary_scaling_factor)]
    if m.rotary_percent != 1.0:
        args += ["--rotary-percent", num(m.rotary_percent)]
    args += _switch("--qk-layernorm", m.qk_layernorm)
    args += _switch("--untie-embeddings-and-output-weights", m.untie_embeddings_and_output_weights)
    return args


def moe_layer_freq(m: ModelConfig) -> str:
    """Megatron's --moe-layer-freq as a compact list expression, e.g. "[0]*3+[1]*58"."""
    pattern = m.moe_layer_pattern()
    runs: list[tuple[int, int]] = []
    for bit in pattern:
        if runs and runs[-1][0] == bit:
            runs[-1] = (bit, runs[-1][1] + 1)
        else:
            runs.append((bit, 1))
    return "+".join(f"[{bit}]*{count}" for bit, count in runs)


def _router_args(m: ModelConfig) -> Argv:
    """Sigmoid (DeepSeek/GLM) router flags shared by the DeepSeek and GLM layouts."""
    return [
        *_switch("--moe-router-pre-softmax", m.moe_router_pre_softmax),
        "--moe-router-score-function",
        m.moe_router_score_function.value,
        *_switch("--moe-router-enable-expert-bias", m.moe_router_enable_expert_bias),
        "--moe-router-load-balancing-type",
        m.moe_router_load_balancing_type.value,
    ]


def _qwen3_moe_args(m: ModelConfig) -> Argv:
    """qwen3-30B-A3B: --disable-bias-linear --qk-layernorm ... --moe-aux-loss-coeff 0 (and
    qwen3.5-35B-A3B: the same plus 1p norms and the attention / shared-expert gates)."""
    return [
        "--disable-bias-linear",
        *_switch("--qk-layernorm", m.qk_layernorm),
        *_gqa(m)[:1],
        "--num-attention-heads",
        num(m.num_attention_heads),
        *_gqa(m)[1:],
        *_opt("--kv-channels", m.kv_channels),
        "--num-layers",
        num(m.num_layers),
        "--hidden-size",
        num(m.hidden_size),
        "--ffn-hidden-size",
        num(m.ffn_hidden_size),
        "--normalization",
        m.normalization.value,
        *_switch("--apply-layernorm-1p", m.apply_layernorm_1p),
        "--position-embedding-type",
        "rope",
        "--norm-epsilon",
        num(m.norm_epsilon),
        "--rotary-percent",
        num(m.rotary_percent),
        *_switch("--swiglu", m.swiglu),
        *_switch("--untie-embeddings-and-output-weights", m.untie_embeddings_and_output_weights),
        "--vocab-size",
        num(m.vocab_size),
        "--rotary-base",
        num(m.rotary_base),
        *_opt("--moe-ffn-hidden-size", m.moe_ffn_hidden_size),
        *_opt("--moe-shared-expert-intermediate-size", m.moe_shared_expert_intermediate_size),
        "--moe-router-score-function",
        m.moe_router_score_function.value,
        "--moe-token-dispatcher-type",
        "alltoall",
        "--moe-router-topk",
        num(m.moe_router_topk),
        "--moe-layer-freq",
        moe_layer_freq(m),
        "--num-experts",
        num(m.num_experts),
        "--moe-grouped-gemm",
        "--moe-token-drop-policy",
        "probs",
        "--moe-router-dtype",
        "fp32",
        "--moe-permute-fusion",
        "--moe-aux-loss-coeff",
        num(m.moe_aux_loss_coeff) if m.moe_aux_loss_coeff else "0",
        *_switch("--attention-output-gate", m.attention_output_gate),
        *_switch("--moe-shared-expert-gate", m.moe_shared_expert_gate),
    ]


def _deepseek_args(m: ModelConfig) -> Argv:
    """deepseek-v3: MLA attention, sigmoid router with expert bias and group-limited routing."""
    return [
        "--disable-bias-linear",
        "--num-layers",
        num(m.num_layers),
        "--hidden-size",
        num(m.hidden_size),
        "--ffn-hidden-size",
        num(m.ffn_hidden_size),
        "--num-attention-heads",
        num(m.num_attention_heads),
        *_opt("--kv-channels", m.kv_channels),
        "--normalization",
        m.normalization.value,
        "--position-embedding-type",
        "rope",
        "--norm-epsilon",
        num(m.norm_epsilon),
        *_switch("--swiglu", m.swiglu),
        *_switch("--untie-embeddings-and-output-weights", m.untie_embeddings_and_output_weights),
        "--vocab-size",
        num(m.vocab_size),
        "--multi-latent-attention",
        *_opt("--q-lora-rank", m.q_lora_rank),
        "--kv-lora-rank",
        num(m.kv_lora_rank),
        "--qk-head-dim",
        num(m.qk_head_dim),
        "--qk-pos-emb-head-dim",
        num(m.qk_pos_emb_head_dim),
        "--v-head-dim",
        num(m.v_head_dim),
        *_switch("--qk-layernorm", m.qk_layernorm),
        *_opt("--rotary-scaling-factor", m.rotary_scaling_factor),
        "--rotary-base",
        num(m.rotary_base),
        "--mscale",
        num(m.mscale),
        "--mscale-all-dim",
        num(m.mscale_all_dim),
        "--attention-softmax-in-fp32",
        "--no-rope-fusion",
        "--num-experts",
        num(m.num_experts),
        "--moe-layer-freq",
        moe_layer_freq(m),
        *_opt("--moe-ffn-hidden-size", m.moe_ffn_hidden_size),
        "--moe-router-topk",
        num(m.moe_router_topk),
        *_opt("--moe-shared-expert-intermediate-size", m.moe_shared_expert_intermediate_size),
        *_router_args(m),
        "--moe-token-dispatcher-type",
        "alltoall",
        "--moe-aux-loss-coeff",
        num(m.moe_aux_loss_coeff) if m.moe_aux_loss_coeff else "0",
        "--moe-router-bias-update-rate",
        "0",
        *_opt("--moe-router-group-topk", m.moe_router_group_topk),
        *_opt("--moe-router-num-groups", m.moe_router_num_groups),
        "--moe-grouped-gemm",
        *_opt("--moe-router-topk-scaling-factor", m.moe_router_topk_scaling_factor),
        "--moe-router-dtype",
        "fp32",
        "--moe-permute-fusion",
    ]


def _glm_moe_args(m: ModelConfig) -> Argv:
    """glm4.5-355B-A32B: GQA with QKV bias, partial RoPE, sigmoid router, dense prefix."""
    args = [
        "--disable-bias-linear",
        *_switch("--qk-layernorm", m.qk_layernorm),
        *_gqa(m)[:1],
        "--num-attention-heads",
        num(m.num_attention_heads),
        *_gqa(m)[1:],
        *_opt("--kv-channels", m.kv_channels),
        "--num-layers",
        num(m.num_layers),
        "--hidden-size",
        num(m.hidden_size),
        "--ffn-hidden-size",
        num(m.ffn_hidden_size),
        *_switch("--add-qkv-bias", m.add_qkv_bias),
        "--normalization",
        m.normalization.value,
        "--position-embedding-type",
        "rope",
        "--rotary-percent",
        num(m.rotary_percent),
        *_switch("--swiglu", m.swiglu),
        *_switch("--untie-embeddings-and-output-weights", m.untie_embeddings_and_output_weights),
        "--vocab-size",
        num(m.vocab_size),
        "--rotary-base",
        num(m.rotary_base),
        *_opt("--moe-ffn-hidden-size", m.moe_ffn_hidden_size),
        *_opt("--moe-shared-expert-intermediate-size", m.moe_shared_expert_intermediate_size),
        *_switch("--moe-router-pre-softmax", m.moe_router_pre_softmax),
        "--moe-router-score-function",
        m.moe_router_score_function.value,
        *_switch("--moe-router-enable-expert-bias", m.moe_router_enable_expert_bias),
        "--moe-router-bias-update-rate",
        "0",
        "--moe-router-load-balancing-type",
        m.moe_router_load_balancing_type.value,
        "--moe-token-dispatcher-type",
        "alltoall",
        "--moe-router-topk",
        num(m.moe_router_topk),
        *_opt("--moe-router-topk-scaling-factor", m.moe_router_topk_scaling_factor),
        "--moe-layer-freq",
        moe_layer_freq(m),
        "--num-experts",
        num(m.num_experts),
        "--moe-grouped-gemm",
        "--moe-router-dtype",
        "fp32",
        "--moe-permute-fusion",
        "--moe-aux-loss-coeff",
        num(m.moe_aux_loss_coeff) if m.moe_aux_loss_coeff else "0",
    ]
    if m.norm_epsilon != 1e-5:  # the upstream file relies on Megatron's default 1e-5
        args[args.index("--position-embedding-type") : args.index("--position-embedding-type")] = [
            "--norm-epsilon",
            num(m.norm_epsilon),
        ]
    return args
