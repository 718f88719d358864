"""Static KV cache and the cached forward of HF decoder models (Qwen3, Qwen3-MoE, Llama).

The cache is one preallocated tensor pair per layer, ``[slots, kv_heads, max_len, head_dim]``.
Each slot holds one sequence; a token at position ``p`` writes its keys/values at index ``p``
and a query at position ``p`` attends to indices ``0..p`` of its slot. So positions past a
sequence's accepted length are stale but never read before being overwritten: rolling back
rejected speculative tokens is just not advancing the sequence length.

`cached_forward` reuses the HF modules' weights (projections, q/k norms, rotary table, MLP or
MoE block, final norm, LM head) and replaces only the attention's cache handling, so it matches
the HF full forward exactly (tested) and the same code serves prefill, decode and verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from miles_hydra.backends.local.rollout.attn_kernel import decode_attention


class StaticKVCache:
    """Preallocated keys/values for `slots` sequences of up to `max_len` positions."""

    def __init__(
        self,
        lm: PreTrainedModel,
        slots: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        cfg = lm.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        shape = (slots, cfg.num_key_value_heads, max_len, head_dim)
        self.keys = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)
        ]
        self.values = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)
        ]
        self.slots = slots
        self.max_len = max_len

    def fits(self, slots: int, max_len: int, dtype: torch.dtype) -> bool:
        return slots <= self.slots and max_len <= self.max_len and self.keys[0].dtype == dtype


@dataclass
class ForwardOut:
    logits: torch.Tensor  # [B, T, V] (or [B, V] rows picked by `logits_at`)
    hidden: torch.Tensor  # [B, T, H] final-norm hidden states (or picked rows)


def _attention(
    attn: torch.nn.Module,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    rows: Optional[torch.Tensor],
    pos: torch.Tensor,
    kv_len: Optional[int],
    mask: Optional[torch.Tensor],
) -> torch.Tensor:
    b, t, _ = x.shape
    head_dim = attn.head_dim
    q = attn.q_proj(x).view(b, t, -1, head_dim)
    k = attn.k_proj(x).view(b, t, -1, head_dim)
    v = attn.v_proj(x).view(b, t, -1, head_dim)
    if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over the head dim before RoPE
        q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    index = torch.arange(b, device=x.device) if rows is None else rows
    cache_k[index[:, None], :, pos] = k  # advanced indices first: [b, t, kv_heads, head_dim]
    cache_v[index[:, None], :, pos] = v
    if mask is None:  # decode/verify kernel: each query reads its slot's positions 0..pos
        out = decode_attention(q, cache_k, cache_v, pos, index, attn.scaling)
        return attn.o_proj(out.reshape(b, t, -1))
    if rows is None:
        keys, values = cache_k[:b, :, :kv_len], cache_v[:b, :, :kv_len]
    else:
        keys, values = cache_k[rows, :, :kv_len], cache_v[rows, :, :kv_len]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), keys, values, attn_mask=mask, scale=attn.scaling, enable_gqa=True
    )
    return attn.o_proj(out.transpose(1, 2).reshape(b, t, -1))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def cached_forward(
    lm: PreTrainedModel,
    cache: StaticKVCache,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    rows: Optional[torch.Tensor] = None,
    logits_at: Optional[torch.Tensor] = None,
    kv_len: Optional[int] = None,
    decode_kernel: bool = False,
) -> ForwardOut:
    """Run `input_ids` [B, T] at `positions` [B, T] through the model, writing the cache.

    rows: cache slot of each batch row (None = rows 0..B-1). logits_at: [B] index into T of the
    one position per row whose logits/hidden are wanted (None = all positions). kv_len: cache
    positions attended (masked by position); None = max(positions) + 1, a host sync. A fixed
    kv_len makes the forward free of host syncs and data-dependent shapes (CUDA graphs).
    decode_kernel: attention through `attn_kernel.decode_attention` (each query reads exactly
    its slot's positions 0..p; a Triton kernel on CUDA; no mask, kv_len unused) instead of SDPA
    over kv_len positions with a mask. For decode and verify steps (a few queries per row).
    """
    model = lm.model
    mask: Optional[torch.Tensor] = None
    if not decode_kernel:
        if kv_len is None:
            kv_len = int(positions.max()) + 1
        mask = torch.arange(kv_len, device=positions.device)[None, None, :] <= positions[:, :, None]
        mask = mask[:, None]  # [B, 1, T, kv_len]
    h = model.embed_tokens(input_ids)
    cos, sin = model.rotary_emb(h, positions)
    for i, layer in enumerate(model.layers):
        x = layer.input_layernorm(h)
        h = h + _attention(
            layer.self_attn,
            x,
            cos,
            sin,
            cache.keys[i],
            cache.values[i],
            rows,
            positions,
            kv_len,
            mask,
        )
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    if logits_at is not None:
        h = h[torch.arange(h.shape[0], device=h.device), logits_at]
    h = model.norm(h)
    return ForwardOut(logits=lm.lm_head(h), hidden=h)
