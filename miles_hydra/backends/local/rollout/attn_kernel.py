"""Decode/verify attention over the static KV cache, as a Triton kernel with a torch reference.

A query ``(b, t)`` at position ``p = positions[b, t]`` attends indices ``0..p`` of cache slot
``rows[b]`` (the caller has already written the current tokens' keys/values there)::

    out[b, t, h] = softmax_n(scale * q[b, t, h] . K[rows[b], h // G, n]) @ V[rows[b], h // G, n],
    n = 0..p,  G = H // KVH (grouped-query attention)

The kernel runs one program per (batch row, kv head): the ``T * G`` query rows sharing a kv head
are one padded block of at least 16 rows, and an online (flash-attention) softmax walks the
slot's keys/values in blocks of ``BLOCK_N`` up to ``max(positions[b]) + 1`` -- a bound computed
inside the kernel, so a row reads only the cache it needs, the grid depends only on shapes and
nothing syncs with the host (CUDA graphs). `decode_attention` is a torch custom op, opaque to
torch.compile; it uses the kernel on CUDA for supported shapes and the reference otherwise.
Triton is imported lazily, so this module imports without it.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import torch
import torch.nn.functional as F

BLOCK_N = 64  # keys/values per inner-loop step
MAX_QUERY_ROWS = 64  # T * G above this falls back to the reference (register pressure)
NUM_WARPS = 4
_LOG2E = 1.4426950408889634


def reference_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    rows: Optional[torch.Tensor],
    scale: float,
) -> torch.Tensor:
    """Pure-torch decode attention (SDPA over the whole slot with a position mask).

    q [B, T, H, D], k_cache/v_cache [S, KVH, L, D], positions [B, T], rows [B] or None
    (= slots 0..B-1). Returns a contiguous [B, T, H, D] in q.dtype.
    """
    b, _, h, _ = q.shape
    length, kv_heads = k_cache.shape[2], k_cache.shape[1]
    if rows is None:
        keys, values = k_cache[:b], v_cache[:b]
    else:
        keys, values = k_cache[rows], v_cache[rows]
    mask = torch.arange(length, device=q.device)[None, None, :] <= positions[:, :, None]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        keys,
        values,
        attn_mask=mask[:, None],  # [B, 1, T, L]
        scale=scale,
        enable_gqa=h != kv_heads,
    )
    return out.transpose(1, 2).contiguous()


def supported(q: torch.Tensor, k_cache: torch.Tensor) -> bool:
    """Whether the Triton kernel handles these shapes (the device is not checked; v_cache is
    taken to match k_cache)."""
    _, t, h, d = q.shape
    kv_heads = k_cache.shape[1]
    return (
        triton_available()
        and h % kv_heads == 0
        and 16 <= d <= 256
        and d & (d - 1) == 0
        and t * (h // kv_heads) <= MAX_QUERY_ROWS
        and q.dtype == k_cache.dtype
        and k_cache.stride(-1) == 1
    )


def triton_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    rows: Optional[torch.Tensor],
    scale: float,
) -> torch.Tensor:
    """Decode attention with the Triton kernel, always. CPU tensors need Triton's interpreter:
    ``TRITON_INTERPRET=1`` set before triton is first imported (its tl.max etc. are jitted then).
    """
    import triton

    b, t, h, d = q.shape
    kv_heads, length = k_cache.shape[1], k_cache.shape[2]
    group = h // kv_heads
    if q.stride(-1) != 1:
        q = q.contiguous()
    out = torch.empty((b, t, h, d), dtype=q.dtype, device=q.device)
    if b == 0 or t == 0:
        return out
    interpret = bool(triton.knobs.runtime.interpret)
    kernel = _kernel(interpret)
    kernel[(b, kv_heads)](
        q,
        k_cache,
        v_cache,
        positions,
        positions if rows is None else rows,  # unused when HAS_ROWS is False
        out,
        scale * _LOG2E,
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        positions.stride(0),
        positions.stride(1),
        length,
        T=t,
        G=group,
        H=h,
        D=d,
        BLOCK_M=max(16, triton.next_power_of_2(t * group)),
        BLOCK_N=BLOCK_N,
        HAS_ROWS=rows is not None,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        INTERPRET=interpret,
        INTERPRET_LEN=length if interpret else 0,
        num_warps=NUM_WARPS,
    )
    return out


@torch.library.custom_op("miles_hydra::decode_attention", mutates_args=())
def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    rows: Optional[torch.Tensor],
    scale: float,
) -> torch.Tensor:
    """Decode attention: q [B, T, H, D] (last dim contiguous), k_cache/v_cache [S, KVH, L, D],
    positions [B, T] int64; query (b, t) attends slot rows[b] (None = slot b) at positions
    0..positions[b, t] with softmax(q.k * scale), query head h using kv head h // (H // KVH).
    Returns a contiguous [B, T, H, D] in q.dtype. Triton kernel on CUDA for `supported` shapes,
    `reference_decode_attention` otherwise.
    """
    if q.is_cuda and supported(q, k_cache):
        return triton_decode_attention(q, k_cache, v_cache, positions, rows, scale)
    return reference_decode_attention(q, k_cache, v_cache, positions, rows, scale)


@decode_attention.register_fake
def _(q, k_cache, v_cache, positions, rows, scale):
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)


@functools.cache
def triton_available() -> bool:
    """Whether Triton imports here (cached; the rollout step's kernels all need it)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernel(interpret: bool) -> Any:
    """Build the jitted kernel; keyed on interpreter mode, which triton reads at decoration."""
    del interpret  # only the cache key
    import triton
    import triton.language as tl

    @triton.jit
    def decode_kernel(
        Q,
        K,
        V,
        POS,
        ROWS,
        OUT,
        scale_log2,  # softmax scale * log2(e): the kernel uses exp2
        stride_qb,
        stride_qt,
        stride_qh,
        stride_ks,
        stride_kh,
        stride_kl,
        stride_vs,
        stride_vh,
        stride_vl,
        stride_pb,
        stride_pt,
        length,  # L: cache positions per slot
        T: tl.constexpr,
        G: tl.constexpr,
        H: tl.constexpr,
        D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        HAS_ROWS: tl.constexpr,
        PRECISION: tl.constexpr,
        INTERPRET: tl.constexpr,
        INTERPRET_LEN: tl.constexpr,  # L under the interpreter, else unused (0)
    ):
        b = tl.program_id(0).to(tl.int64)
        kv_head = tl.program_id(1)
        m = tl.arange(0, BLOCK_M)  # query row m = (t, g): token m // G, head kv_head * G + m % G
        row_ok = m < T * G
        t = m // G
        head = kv_head * G + m % G
        d = tl.arange(0, D)
        q_ptrs = Q + b * stride_qb + t[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :]
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
        # The interpreter's tl.dot misreads 16-bit floats (numpy has no bfloat16): there the
        # products run in fp32 on the same (rounded) values; on a GPU these casts are no-ops.
        q = q.to(tl.float32 if INTERPRET else q.dtype)
        # Padded rows get position 0: they attend one key, so they never produce NaN.
        pos = tl.load(POS + b * stride_pb + t * stride_pt, mask=row_ok, other=0).to(tl.int32)
        if HAS_ROWS:
            slot = tl.load(ROWS + b).to(tl.int64)
        else:
            slot = b
        k_base = K + slot * stride_ks + kv_head * stride_kh
        v_base = V + slot * stride_vs + kv_head * stride_vh
        hi = tl.minimum(tl.max(pos, axis=0) + 1, length)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
        # The interpreter can't take a tensor loop bound (numpy >= 2.3 refuses int() of its
        # 1-element scalars), so there it walks all L positions; blocks past `hi` are all masked.
        # (An assignment would turn a constexpr into a tensor there, hence the inline `if`.)
        n_off = tl.arange(0, BLOCK_N)
        for start in range(0, INTERPRET_LEN if INTERPRET else hi, BLOCK_N):
            n = start + n_off
            n_ok = n < hi
            k = tl.load(k_base + n[:, None] * stride_kl + d[None, :], mask=n_ok[:, None], other=0.0)
            k = k.to(tl.float32 if INTERPRET else k.dtype)
            qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
            qk = tl.where(n[None, :] <= pos[:, None], qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, axis=1))  # finite: key 0 is in the first block
            p = tl.math.exp2(qk - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_base + n[:, None] * stride_vl + d[None, :], mask=n_ok[:, None], other=0.0)
            v = v.to(tl.float32 if INTERPRET else v.dtype)
            p = p.to(V.dtype.element_ty).to(v.dtype)
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
            m_i = m_new
        acc = acc / l_i[:, None]
        out_ptrs = OUT + ((b * T + t[:, None]) * H + head[:, None]) * D + d[None, :]
        tl.store(out_ptrs, acc.to(OUT.dtype.element_ty), mask=row_ok[:, None])

    return decode_kernel
