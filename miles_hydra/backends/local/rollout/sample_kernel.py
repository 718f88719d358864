"""Fused sampling kernels of the rollout engine (Triton), with pure-torch references.

`gumbel_sample` draws one token per row of logits [N, V] by the Gumbel-max trick and returns
its log-prob and the row's logsumexp in one pass over the vocabulary:

    z = logits.float() / T
    token = argmax_{v != exclude[n]} (z_v + g_v),  g_v = -log(-log(u_v)),  u_v ~ U(0, 1)
    log_prob = z[token] - logsumexp(z)   (full distribution: the exclusion is ignored here)

T <= 0 is greedy (token = argmax z, no noise; log-probs with T = 1). Excluding token d samples
from softmax(z) with d removed and renormalized: the speculative-sampling residual of a greedy
(point-mass) draft. `uniform` draws float32 uniforms in (0, 1).

Noise: u = philox(seed[0] + salt, offset) (Triton's `tl.rand`), offset = n * V + v for
`gumbel_sample` and the flat index for `uniform`, in int64. `seed` is a 1-element int64 device
tensor read inside the kernel, so a captured CUDA graph replays with fresh noise once the caller
increments it in place; `salt` separates streams drawn in one step. No host syncs; the grid
depends only on shapes.

On CUDA with Triton installed the public functions run the kernels; elsewhere they run the
`reference_*` functions: same semantics, noise from a torch.Generator seeded with
seed[0] + salt (a host sync; not the same numbers as the kernel). `triton_*` always run the
kernels, on CPU tensors too when TRITON_INTERPRET=1 was set before triton was imported (Triton
reads it when a function is decorated, and `tl.rand` is decorated at its import). Both are
also the custom ops torch.ops.miles_hydra.gumbel_sample / .uniform (opaque to torch.compile).
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch references still work
    triton = None
    tl = None

BLOCK_V = 4096  # vocabulary tile of `gumbel_sample` (a program loops over its chunk's tiles)
NUM_WARPS_SAMPLE = 8  # warps per (row, chunk) program
PROGRAMS_PER_SM = 4  # `gumbel_sample` splits rows into chunks until N * splits >= this * SMs
BLOCK_UNIFORM = 1024  # elements per program of `uniform`
_U_MIN = 1.1754943508222875e-38  # smallest normal float32: u is clamped into [_U_MIN, _U_MAX]
_U_MAX = 0.99999994  # 1 - 2**-24, the largest float32 below 1


def _use_triton(t: torch.Tensor) -> bool:
    return t.is_cuda and triton is not None


# Kernel bodies, jitted on first use by `_kernels` (so importing this module compiles nothing);
# module-level with no nested helpers: the interpreter resolves names in module globals only.


def _gumbel_sample_kernel(
    logits_ptr,
    row_stride,
    seed_ptr,
    salt,
    exclude_ptr,
    lse_part_ptr,
    best_part_ptr,
    idx_part_ptr,
    temperature,
    V: tl.constexpr,
    CHUNK: tl.constexpr,
    GREEDY: tl.constexpr,
    HAS_EXCLUDE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Program (row, split) scans v in [split * CHUNK, (split + 1) * CHUNK) and writes the
    chunk's logsumexp of z and its best (z + g, index) to the [N, SPLITS] partials."""
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    part = row * tl.num_programs(1) + split
    row_ptr = logits_ptr + row * row_stride
    seed = tl.load(seed_ptr) + salt
    excl = -1
    if HAS_EXCLUDE:
        excl = tl.load(exclude_ptr + row)
    lanes = tl.arange(0, BLOCK)
    # per-lane running max / sum-exp (online logsumexp) and best (score, index) of z + g;
    # lane j sees its indices in increasing order, so a strict > keeps the smallest index
    # among ties, and the reduction below takes the smallest index too.
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK], tl.int64)
    for start in range(0, CHUNK, BLOCK):
        v = split * CHUNK + start + lanes
        mask = v < V
        z = tl.load(row_ptr + v, mask=mask, other=float("-inf")).to(tl.float32) / temperature
        m_new = tl.maximum(m, z)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_safe) + tl.exp(z - m_safe)
        m = m_new
        if GREEDY:
            score = z
        else:
            u = tl.rand(seed, row * V + v)  # int64 offsets: N * V may pass 2**31
            u = tl.minimum(tl.maximum(u, 1.1754943508222875e-38), 0.99999994)
            score = z - tl.log(-tl.log(u))  # z + Gumbel(0, 1)
        keep = mask
        if HAS_EXCLUDE:
            keep = keep & (v != excl)
        score = tl.where(keep, score, float("-inf"))
        better = score > best
        best = tl.where(better, score, best)
        best_idx = tl.where(better, v.to(tl.int64), best_idx)
    chunk_max = tl.max(m, axis=0)
    chunk_max_safe = tl.where(chunk_max == float("-inf"), 0.0, chunk_max)
    lse = chunk_max_safe + tl.log(tl.sum(s * tl.exp(m - chunk_max_safe), axis=0))
    top = tl.max(best, axis=0)
    token = tl.min(tl.where(best == top, best_idx, V), axis=0)
    tl.store(lse_part_ptr + part, lse)
    tl.store(best_part_ptr + part, top)
    tl.store(idx_part_ptr + part, tl.minimum(token, V - 1))  # all -inf: any valid index


def _uniform_kernel(out_ptr, seed_ptr, salt, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    u = tl.rand(tl.load(seed_ptr) + salt, offs)
    u = tl.minimum(tl.maximum(u, 1.1754943508222875e-38), 0.99999994)
    tl.store(out_ptr + offs, u, mask=offs < numel)


@functools.cache
def _kernels() -> dict[str, Any]:
    return {
        "gumbel_sample": triton.jit(do_not_specialize=["salt", "temperature"])(
            _gumbel_sample_kernel
        ),
        "uniform": triton.jit(do_not_specialize=["salt"])(_uniform_kernel),
    }


def _check_seed(seed: torch.Tensor) -> None:
    assert seed.dtype == torch.int64 and seed.numel() == 1, "seed: a 1-element int64 tensor"


def _num_splits(n: int, v: int, block_v: int, device: torch.device) -> int:
    """Programs per row: enough for about PROGRAMS_PER_SM programs per SM in all (a few rows
    alone would leave most of the GPU idle), at least one tile each. Shapes only."""
    sms = _sm_count(device.index) if device.type == "cuda" else 132
    return max(1, min(_cdiv(v, block_v), _cdiv(PROGRAMS_PER_SM * sms, n)))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.cache
def _sm_count(index: Optional[int]) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def triton_gumbel_sample(
    logits: torch.Tensor,
    temperature: float,
    seed: torch.Tensor,
    salt: int,
    exclude: Optional[torch.Tensor] = None,
    block_v: int = BLOCK_V,
    splits: Optional[int] = None,
    noise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`gumbel_sample` by the Triton kernel, always: grid (N, splits), each program a chunk
    of whole BLOCK_V tiles of one row (splits from `_num_splits` unless given), then a
    logsumexp / argmax over the [N, splits] partials in torch (first max: smallest index).
    noise=False: no Gumbel noise at temperature T (token = argmax z; `triton_logsumexp`)."""
    assert logits.dim() == 2 and logits.stride(-1) == 1, "logits: [N, V], last dim contiguous"
    _check_seed(seed)
    n, v = logits.shape
    greedy = temperature <= 0.0 or not noise
    temperature = 1.0 if temperature <= 0.0 else float(temperature)
    if exclude is not None:
        assert exclude.shape == (n,) and exclude.dtype == torch.int64, "exclude: [N] int64"
        exclude = exclude.contiguous()
    splits = splits or _num_splits(max(n, 1), v, block_v, logits.device)
    chunk = _cdiv(_cdiv(v, splits), block_v) * block_v  # v / splits in whole tiles
    splits = _cdiv(v, chunk)  # no empty chunks
    lse_part = torch.empty(n, splits, dtype=torch.float32, device=logits.device)
    best_part = torch.empty_like(lse_part)
    idx_part = torch.empty(n, splits, dtype=torch.int64, device=logits.device)
    if n > 0:
        kernel = _kernels()["gumbel_sample"]
        kernel[(n, splits)](
            logits,
            logits.stride(0),
            seed,
            salt,
            exclude if exclude is not None else idx_part,  # never read without HAS_EXCLUDE
            lse_part,
            best_part,
            idx_part,
            temperature,
            V=v,
            CHUNK=chunk,
            GREEDY=greedy,
            HAS_EXCLUDE=exclude is not None,
            BLOCK=block_v,
            num_warps=NUM_WARPS_SAMPLE,
        )
    lse = torch.logsumexp(lse_part, dim=-1)
    token = idx_part.gather(-1, best_part.argmax(-1, keepdim=True)).squeeze(-1)
    log_prob = logits.gather(-1, token.unsqueeze(-1)).squeeze(-1).float() / temperature - lse
    return token, log_prob, lse


def triton_logsumexp(
    logits: torch.Tensor, temperature: float, block_v: int = BLOCK_V, splits: Optional[int] = None
) -> torch.Tensor:
    """logsumexp(logits.float() / T) per row [N] float32 (T <= 0: T = 1) by the sampling
    kernel without its noise (a fifth of its cost at N = 1024 on an H200)."""
    unused_seed = torch.zeros(1, dtype=torch.int64, device=logits.device)
    return triton_gumbel_sample(logits, temperature, unused_seed, 0, None, block_v, splits,
                                noise=False)[2]  # fmt: skip


def logsumexp(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logsumexp(logits.float() / T) per row of logits [N, V] (T <= 0: T = 1), float32; Triton
    on CUDA (no host sync, CUDA-graph safe), torch elsewhere. Runs as the custom op
    torch.ops.miles_hydra.logsumexp (opaque to torch.compile, like the other two)."""
    return _logsumexp_op(logits, float(temperature))


@torch.library.custom_op("miles_hydra::logsumexp", mutates_args=())
def _logsumexp_op(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if _use_triton(logits):
        return triton_logsumexp(logits, temperature)
    return torch.logsumexp(logits.float() / (temperature if temperature > 0 else 1.0), -1)


@_logsumexp_op.register_fake
def _(logits, temperature):
    return logits.new_empty(logits.shape[0], dtype=torch.float32)


def triton_uniform(
    shape: tuple[int, ...], seed: torch.Tensor, salt: int, device: Any
) -> torch.Tensor:
    """`uniform` by the Triton kernel, always (grid (cdiv(numel, BLOCK_UNIFORM),))."""
    _check_seed(seed)
    out = torch.empty(shape, dtype=torch.float32, device=device)
    numel = out.numel()
    if numel == 0:
        return out
    kernel = _kernels()["uniform"]
    grid = (_cdiv(numel, BLOCK_UNIFORM),)
    kernel[grid](out, seed, salt, numel, BLOCK=BLOCK_UNIFORM, num_warps=4)
    return out


def _generator(seed: torch.Tensor, salt: int, device: Any) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed.reshape(-1)[0]) + salt)


def reference_uniform(
    shape: tuple[int, ...], seed: torch.Tensor, salt: int, device: Any
) -> torch.Tensor:
    """`uniform` in torch: torch.rand from a Generator seeded with seed[0] + salt (syncs)."""
    _check_seed(seed)
    u = torch.rand(shape, generator=_generator(seed, salt, device), device=device)
    return u.clamp_(_U_MIN, _U_MAX)


def reference_gumbel_sample(
    logits: torch.Tensor,
    temperature: float,
    seed: torch.Tensor,
    salt: int,
    exclude: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`gumbel_sample` in torch, noise from a Generator seeded with seed[0] + salt (syncs)."""
    greedy = temperature <= 0.0
    z = logits.float() / (1.0 if greedy else temperature)
    lse = torch.logsumexp(z, dim=-1)
    if greedy:
        score = z.clone()
    else:
        u = reference_uniform(tuple(z.shape), seed, salt, z.device)
        score = z - torch.log(-torch.log(u))
    if exclude is not None:
        hit = torch.arange(z.shape[-1], device=z.device) == exclude.unsqueeze(-1)
        score.masked_fill_(hit, float("-inf"))
    token = score.argmax(-1)
    log_prob = z.gather(-1, token.unsqueeze(-1)).squeeze(-1) - lse
    return token, log_prob, lse


@torch.library.custom_op("miles_hydra::gumbel_sample", mutates_args=())
def _gumbel_sample_op(
    logits: torch.Tensor,
    temperature: float,
    seed: torch.Tensor,
    salt: int,
    exclude: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if _use_triton(logits):
        return triton_gumbel_sample(logits, temperature, seed, salt, exclude)
    return reference_gumbel_sample(logits, temperature, seed, salt, exclude)


@_gumbel_sample_op.register_fake
def _(logits, temperature, seed, salt, exclude):
    n = logits.shape[0]
    return (
        logits.new_empty(n, dtype=torch.int64),
        logits.new_empty(n, dtype=torch.float32),
        logits.new_empty(n, dtype=torch.float32),
    )


@torch.library.custom_op("miles_hydra::uniform", mutates_args=())
def _uniform_op(shape: list[int], seed: torch.Tensor, salt: int) -> torch.Tensor:
    if _use_triton(seed):
        return triton_uniform(tuple(shape), seed, salt, seed.device)
    return reference_uniform(tuple(shape), seed, salt, seed.device)


@_uniform_op.register_fake
def _(shape, seed, salt):
    return seed.new_empty(shape, dtype=torch.float32)


def gumbel_sample(
    logits: torch.Tensor,
    temperature: float,
    seed: torch.Tensor,
    salt: int,
    exclude: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Gumbel-max draw per row of logits [N, V] (bf16/fp16/fp32, last dim contiguous).

    Returns (token [N] int64, log_prob [N] float32, lse [N] float32), z = logits.float() / T:
    token = argmax_{v != exclude[n]} (z_v + g_v) with g iid Gumbel(0, 1) from
    philox(seed[0] + salt, n * V + v); log_prob = z[token] - logsumexp(z) (exclusion ignored);
    lse = logsumexp(z). T <= 0: token = argmax z (exclusion applies), T = 1 for the log-probs.
    exclude [N] int64, -1 = none. seed: 1-element int64 tensor on the logits' device, read on
    device (CUDA-graph safe). Triton on CUDA, else `reference_gumbel_sample` (other noise).
    Runs as the custom op torch.ops.miles_hydra.gumbel_sample (opaque to torch.compile).
    """
    return _gumbel_sample_op(logits, float(temperature), seed, int(salt), exclude)


def uniform(shape: tuple[int, ...], seed: torch.Tensor, salt: int, device: Any) -> torch.Tensor:
    """float32 uniforms in (0, 1) of `shape` from philox(seed[0] + salt, flat index); seed as
    in `gumbel_sample` (on `device`). Triton on CUDA, else `reference_uniform` (other noise)."""
    seed = seed.to(device)  # a no-op when it is already there (the CUDA-graph case)
    return _uniform_op(list(shape), seed, int(salt))
