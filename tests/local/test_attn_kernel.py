"""Decode attention: the torch reference against a naive loop, the Triton kernel against the
reference in Triton's CPU interpreter (``TRITON_INTERPRET=1``), the custom op's CPU fallback and
torch.compile, and -- where a GPU is present -- the compiled kernel, CUDA graphs and inductor."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from miles_hydra.backends.local.rollout import attn_kernel
from miles_hydra.backends.local.rollout.attn_kernel import (
    decode_attention,
    reference_decode_attention,
    supported,
    triton_decode_attention,
)


@dataclass(frozen=True)
class Case:
    batch: int
    tokens: int  # T: 1 = decode, > 1 = verify window p, p+1, ...
    heads: int
    kv_heads: int
    head_dim: int
    slots: int
    length: int  # L
    permuted_rows: bool


CASES = [
    Case(batch=3, tokens=1, heads=4, kv_heads=2, head_dim=32, slots=5, length=150, permuted_rows=True),
    Case(batch=4, tokens=3, heads=2, kv_heads=2, head_dim=32, slots=4, length=160, permuted_rows=False),
    Case(batch=2, tokens=3, heads=4, kv_heads=2, head_dim=128, slots=6, length=130, permuted_rows=True),
    Case(batch=3, tokens=1, heads=2, kv_heads=2, head_dim=128, slots=3, length=70, permuted_rows=False),
]  # fmt: skip


def make_inputs(
    case: Case, dtype: torch.dtype, device: str = "cpu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], float]:
    """Random q and cache; window starts cover 0 and L - T (the last window ends at L - 1)."""
    gen = torch.Generator().manual_seed(seed)
    b, t, d, length = case.batch, case.tokens, case.head_dim, case.length
    # q as a [B, H, T, D] tensor transposed: last dim contiguous, other strides not.
    q = torch.randn(b, case.heads, t, d, generator=gen).transpose(1, 2)
    cache = (case.slots, case.kv_heads, length, d)
    k, v = torch.randn(cache, generator=gen), torch.randn(cache, generator=gen)
    starts = torch.randint(0, length - t + 1, (b,), generator=gen)
    starts[0], starts[-1] = 0, length - t
    positions = starts[:, None] + torch.arange(t)
    rows = torch.randperm(case.slots, generator=gen)[:b] if case.permuted_rows else None
    to = dict(dtype=dtype, device=device)
    rows = None if rows is None else rows.to(device)
    return q.to(**to), k.to(**to), v.to(**to), positions.to(device), rows, 1 / math.sqrt(d)


def naive_attention(q, k_cache, v_cache, positions, rows, scale) -> torch.Tensor:
    """Per row, per head, explicit softmax in float64."""
    b, t, h, _ = q.shape
    group = h // k_cache.shape[1]
    out = torch.empty(q.shape, dtype=torch.float64)
    for i in range(b):
        slot = i if rows is None else int(rows[i])
        for j in range(t):
            p = int(positions[i, j])
            for head in range(h):
                keys = k_cache[slot, head // group, : p + 1].double()
                values = v_cache[slot, head // group, : p + 1].double()
                logits = keys @ q[i, j, head].double() * scale
                weights = torch.exp(logits - logits.max())
                out[i, j, head] = (weights / weights.sum()) @ values
    return out


def fp32_reference(q, k_cache, v_cache, positions, rows, scale) -> torch.Tensor:
    """The reference on the same (possibly bf16-rounded) values, computed in fp32."""
    q, k_cache, v_cache = q.float(), k_cache.float(), v_cache.float()
    return reference_decode_attention(q, k_cache, v_cache, positions, rows, scale)


# Triton's interpreter must be on when triton is first imported (its standard library, tl.max
# and friends, is jitted then), so the interpreter cases run in a child pytest with
# TRITON_INTERPRET=1, started by `test_triton_kernel_in_the_interpreter`.
IN_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
in_interpreter = pytest.mark.skipif(
    not IN_INTERPRETER, reason="runs in the child started by test_triton_kernel_in_the_interpreter"
)


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_naive_loop(case: Case) -> None:
    inputs = make_inputs(case, torch.float32)
    out = reference_decode_attention(*inputs)
    assert out.shape == inputs[0].shape and out.is_contiguous()
    torch.testing.assert_close(out.double(), naive_attention(*inputs), atol=1e-5, rtol=1e-5)


def test_reference_bfloat16_runs_on_cpu() -> None:
    inputs = make_inputs(CASES[0], torch.bfloat16)
    out = reference_decode_attention(*inputs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), naive_attention(*inputs), atol=2e-2, rtol=2e-2)


def test_triton_kernel_in_the_interpreter() -> None:
    pytest.importorskip("triton")
    if IN_INTERPRETER:
        pytest.skip("already the child")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    argv += ["-k", "interpreted_kernel"]
    child = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stdout + child.stderr
    assert f"{2 * len(CASES)} passed" in child.stdout, child.stdout


@in_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_interpreted_kernel_matches_reference(case: Case, dtype: torch.dtype) -> None:
    import triton

    assert triton.knobs.runtime.interpret
    inputs = make_inputs(case, dtype)
    out = triton_decode_attention(*inputs)
    assert type(attn_kernel._kernel(True)).__name__ == "InterpretedFunction"
    assert out.shape == inputs[0].shape and out.dtype == dtype and out.is_contiguous()
    expected = fp32_reference(*inputs)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)


def test_supported_shapes() -> None:
    pytest.importorskip("triton")
    q = torch.empty(2, 3, 8, 128)
    assert supported(q, torch.empty(4, 2, 16, 128))
    assert not supported(torch.empty(2, 3, 8, 96), torch.empty(4, 2, 16, 96))  # not a power of 2
    assert not supported(torch.empty(2, 3, 8, 8), torch.empty(4, 2, 16, 8))  # D < 16
    assert not supported(torch.empty(2, 9, 8, 128), torch.empty(4, 1, 16, 128))  # T * G = 72
    assert not supported(q, torch.empty(4, 2, 16, 128, dtype=torch.bfloat16))  # mixed dtypes


def test_decode_attention_on_cpu_is_the_reference() -> None:
    inputs = make_inputs(CASES[2], torch.float32)
    torch.testing.assert_close(decode_attention(*inputs), reference_decode_attention(*inputs))


def test_decode_attention_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    attn_kernel.triton_available.cache_clear()
    try:
        inputs = make_inputs(CASES[0], torch.float32)
        assert not supported(inputs[0], inputs[1])
        torch.testing.assert_close(decode_attention(*inputs), reference_decode_attention(*inputs))
    finally:
        attn_kernel.triton_available.cache_clear()


def test_custom_op_is_opaque_to_torch_compile() -> None:
    torch._dynamo.reset()
    inputs = make_inputs(CASES[0], torch.float32)
    fn = torch.compile(lambda *a: decode_attention(*a) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(*inputs), 2 * reference_decode_attention(*inputs))
    torch.library.opcheck(torch.ops.miles_hydra.decode_attention.default, inputs)


# --- on a GPU: the compiled kernel (CI has none; these run on a device machine) ---------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_cuda_kernel_matches_reference(case: Case, dtype: torch.dtype) -> None:
    inputs = make_inputs(case, dtype, device="cuda")
    out = decode_attention(*inputs)
    expected = fp32_reference(*inputs)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)


@cuda
@pytest.mark.parametrize("tokens", [1, 4])
def test_cuda_kernel_large_batch_bfloat16(tokens: int) -> None:
    case = Case(256, tokens, 32, 8, 128, slots=300, length=2048, permuted_rows=True)
    inputs = make_inputs(case, torch.bfloat16, device="cuda")
    expected = reference_decode_attention(*inputs)
    torch.testing.assert_close(decode_attention(*inputs), expected, atol=2e-2, rtol=2e-2)


@cuda
def test_cuda_graph_replay_follows_new_positions() -> None:
    case = Case(8, 2, 16, 4, 128, slots=8, length=1024, permuted_rows=True)
    q, k, v, positions, rows, scale = make_inputs(case, torch.bfloat16, device="cuda")
    decode_attention(q, k, v, positions, rows, scale)  # compile the kernel outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = decode_attention(q, k, v, positions, rows, scale)
    for seed in (1, 2):
        new = make_inputs(case, torch.bfloat16, device="cuda", seed=seed)
        q.copy_(new[0]), positions.copy_(new[3]), rows.copy_(new[4])
        graph.replay()
        expected = reference_decode_attention(q, k, v, positions, rows, scale)
        torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)


@cuda
def test_cuda_kernel_under_inductor() -> None:
    torch._dynamo.reset()
    inputs = make_inputs(CASES[2], torch.bfloat16, device="cuda")
    fn = torch.compile(lambda *a: decode_attention(*a) + 1, fullgraph=True)
    expected = reference_decode_attention(*inputs) + 1
    torch.testing.assert_close(fn(*inputs), expected, atol=2e-2, rtol=2e-2)
