"""Fused sampling kernels (miles_hydra.backends.local.rollout.sample_kernel), run on CPU tensors in
Triton's interpreter, and the pure-torch references behind `gumbel_sample` / `uniform` off CUDA.

Triton reads TRITON_INTERPRET when a function is decorated, and its own `tl.rand` family is
decorated when triton is imported, so the interpreter must be on before that import: the kernel
tests (`needs_interpreter`) run only in such a process, which
`test_kernels_under_triton_interpreter` starts (this file again, TRITON_INTERPRET=1)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

import torch  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from miles_hydra.backends.local.rollout import sample_kernel as sk  # noqa: E402

V = 5000  # not a multiple of the test tile: several tiles and a masked tail
BLOCK = 1024
INTERPRETING = isinstance(triton.language.rand, InterpretedFunction)
needs_interpreter = pytest.mark.skipif(
    not INTERPRETING, reason="run by test_kernels_under_triton_interpreter in a subprocess"
)


@pytest.mark.skipif(INTERPRETING, reason="this process already runs them")
def test_kernels_under_triton_interpreter():
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", __file__]
    cmd += ["-k", "not test_kernels_under_triton_interpreter"]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "skipped" not in run.stdout.splitlines()[-1], report


def _seed(value: int) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.int64)


def _logits(n: int, dtype: torch.dtype, width: int = V) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(n, width + 120, generator=g) * 4.0
    return wide.to(dtype)[:, :width]  # row stride != V: the kernel takes it as an argument


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
# splits=1: 5 tiles (the last partial) in one chunk; splits=2: chunks of 3 and 2 tiles
@pytest.mark.parametrize("temperature,splits", [(1.0, 2), (0.7, 1), (0.7, 2), (0.0, 1)])
def test_log_prob_and_lse_match_torch(dtype, temperature, splits):
    x = _logits(3, dtype)
    token, log_prob, lse = sk.triton_gumbel_sample(
        x, temperature, _seed(5), 1, block_v=BLOCK, splits=splits
    )
    z = x.float() / (temperature if temperature > 0 else 1.0)
    assert token.dtype == torch.int64 and log_prob.dtype == lse.dtype == torch.float32
    assert ((token >= 0) & (token < V)).all()
    torch.testing.assert_close(lse, torch.logsumexp(z, -1), rtol=1e-5, atol=1e-5)
    ref = torch.log_softmax(z, -1).gather(-1, token[:, None])[:, 0]
    torch.testing.assert_close(log_prob, ref, rtol=1e-5, atol=1e-5)


@needs_interpreter
@pytest.mark.parametrize("temperature,splits", [(1.0, 2), (0.7, 1), (0.0, 2)])
def test_logsumexp_without_noise_matches_torch(temperature, splits):
    x = _logits(3, torch.bfloat16)
    lse = sk.triton_logsumexp(x, temperature, block_v=BLOCK, splits=splits)
    z = x.float() / (temperature if temperature > 0 else 1.0)
    torch.testing.assert_close(lse, torch.logsumexp(z, -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sk.logsumexp(x, temperature), torch.logsumexp(z, -1))  # CPU path


@needs_interpreter
def test_greedy_is_argmax_and_respects_exclude():
    x = _logits(4, torch.float32)
    top2 = x.topk(2, dim=-1).indices
    token, _, _ = sk.triton_gumbel_sample(x, 0.0, _seed(1), 0, block_v=BLOCK)
    assert torch.equal(token, x.argmax(-1))
    exclude = torch.tensor([top2[0, 0], -1, top2[2, 0], top2[3, 1]])
    token, log_prob, _ = sk.triton_gumbel_sample(x, 0.0, _seed(1), 0, exclude, block_v=BLOCK)
    assert torch.equal(token, torch.stack([top2[0, 1], top2[1, 0], top2[2, 1], top2[3, 0]]))
    # the log-prob is still under the full distribution
    ref = torch.log_softmax(x, -1).gather(-1, token[:, None])[:, 0]
    torch.testing.assert_close(log_prob, ref, rtol=1e-5, atol=1e-5)


@needs_interpreter
def test_exclude_never_drawn_when_it_dominates():
    x = torch.zeros(16, 2000)
    x[:, 1321] = 30.0  # p(1321) ~ 1 - 2e-10: drawn every time unless excluded
    exclude = torch.full((16,), 1321, dtype=torch.int64)
    exclude[::2] = -1
    token, _, _ = sk.triton_gumbel_sample(x, 1.0, _seed(3), 0, exclude, block_v=BLOCK)
    assert (token[::2] == 1321).all()
    assert (token[1::2] != 1321).all()


PROBS8 = torch.tensor([0.30, 0.20, 0.15, 0.12, 0.09, 0.07, 0.04, 0.03])
DRAWS = 400  # one interpreted program per draw (~10 ms each)


def _chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    stats = pytest.importorskip("scipy.stats")
    expected = probs / probs.sum() * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0
    return float(stats.chisquare(counts[keep].numpy(), expected[keep].numpy()).pvalue)


@needs_interpreter
def test_distribution_matches_softmax():
    x = (PROBS8.log() * 0.7).expand(DRAWS, 8)  # softmax(x / 0.7) = PROBS8
    token, _, _ = sk.triton_gumbel_sample(x, 0.7, _seed(11), 2, block_v=8)
    counts = torch.bincount(token, minlength=8).double()
    assert _chi2_pvalue(counts, PROBS8.double()) > 0.01


@needs_interpreter
def test_distribution_with_exclusion_is_the_residual():
    x = PROBS8.log().expand(DRAWS, 8)
    exclude = torch.full((DRAWS,), 0, dtype=torch.int64)  # the mode: p with it removed
    token, _, _ = sk.triton_gumbel_sample(x, 1.0, _seed(12), 0, exclude, block_v=8)
    counts = torch.bincount(token, minlength=8).double()
    residual = PROBS8.double().clone()
    residual[0] = 0.0
    assert _chi2_pvalue(counts, residual) > 0.01


@needs_interpreter
def test_noise_follows_seed_and_salt():
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    draw = lambda seed, salt: sk.triton_gumbel_sample(x, 1.0, seed, salt, block_v=64)[0]  # noqa: E731
    assert torch.equal(draw(_seed(7), 0), draw(_seed(7), 0))
    assert not torch.equal(draw(_seed(7), 0), draw(_seed(8), 0))
    assert not torch.equal(draw(_seed(7), 0), draw(_seed(7), 1))
    seed = _seed(7)
    first = draw(seed, 0)
    seed.add_(1)  # in place, as a CUDA-graph caller does: the kernel reads it on device
    assert torch.equal(draw(seed, 0), draw(_seed(8), 0))
    assert not torch.equal(first, draw(seed, 0))


@needs_interpreter
def test_uniform_range_mean_and_determinism():
    u = sk.triton_uniform((50, 100), _seed(3), 4, "cpu")
    assert u.shape == (50, 100) and u.dtype == torch.float32
    assert ((u > 0) & (u < 1)).all()
    assert abs(u.mean().item() - 0.5) < 0.02
    assert abs(u.var().item() - 1 / 12) < 0.005
    assert torch.equal(u, sk.triton_uniform((50, 100), _seed(3), 4, "cpu"))
    assert not torch.equal(u, sk.triton_uniform((50, 100), _seed(3), 5, "cpu"))
    assert not torch.equal(u, sk.triton_uniform((50, 100), _seed(4), 4, "cpu"))


def test_cpu_dispatch_uses_the_torch_reference():
    x = _logits(4, torch.bfloat16)
    exclude = x.float().argmax(-1)
    token, log_prob, lse = sk.gumbel_sample(x, 0.7, _seed(9), 1, exclude)
    ref = sk.reference_gumbel_sample(x, 0.7, _seed(9), 1, exclude)
    for got, want in zip((token, log_prob, lse), ref):
        assert torch.equal(got, want)
    assert (token != exclude).all()
    z = x.float() / 0.7
    torch.testing.assert_close(lse, torch.logsumexp(z, -1))
    torch.testing.assert_close(log_prob, torch.log_softmax(z, -1).gather(-1, token[:, None])[:, 0])
    greedy, _, _ = sk.gumbel_sample(x, 0.0, _seed(9), 1)
    assert torch.equal(greedy, x.float().argmax(-1))
    u = sk.uniform((1000,), _seed(9), 0, "cpu")
    assert torch.equal(u, sk.reference_uniform((1000,), _seed(9), 0, "cpu"))
    assert ((u > 0) & (u < 1)).all()


def test_reference_distribution_with_exclusion():
    x = PROBS8.log().expand(DRAWS, 8)
    exclude = torch.full((DRAWS,), 0, dtype=torch.int64)
    token, _, _ = sk.reference_gumbel_sample(x, 1.0, _seed(13), 0, exclude)
    residual = PROBS8.double().clone()
    residual[0] = 0.0
    assert _chi2_pvalue(torch.bincount(token, minlength=8).double(), residual) > 0.01
