"""Token draws inside the batched decode step (step.py), capturable in a CUDA graph on CUDA.

Only the batched loop (decode.py, step.py) samples through here. What to sample with
(`SamplingParams`), what comes out (`GenOutput`) and the reference sampling math of the
per-slot loop are in sampling.py.

`StepSampler` draws one token per row of a logits matrix, optionally excluding one token per
row (the speculative-sampling residual of a greedy draft: p with the rejected draft removed and
renormalized), and returns its log-prob under the FULL distribution softmax(logits / T) and the
row's log-sum-exp. It also draws the uniforms of the speculative accept test.

Two implementations with the same distribution (not the same draws):
- kernels (CUDA + Triton, `sample_kernel`): Gumbel-max with counter-based noise keyed by a
  device-side seed tensor that the decode step advances in place, so a captured graph replays
  with fresh noise and no host sync. Only plain temperature sampling or greedy.
- torch (CPU, or top-k/top-p): `sampling.sampling_probs` + multinomial with the engine's
  torch.Generator; not capturable (the decode step then runs eagerly).
"""

from __future__ import annotations

from typing import Optional

import torch

from miles_hydra.backends.local.rollout import sample_kernel
from miles_hydra.backends.local.rollout.sampling import SamplingParams, sampling_probs

SALT_TOKEN, SALT_ACCEPT = 0, 1 << 40  # noise streams of one step (seed advances by 1 per step)


class StepSampler:
    """Draws for one generate() call's sampling params; see the module docstring."""

    def __init__(
        self,
        params: SamplingParams,
        seed: torch.Tensor,
        generator: torch.Generator,
        use_kernels: bool,
    ) -> None:
        self.params = params
        self.seed = seed  # [1] int64 on the device: advanced by the caller after each step
        self.generator = generator
        filtered = 0 < params.top_k or params.top_p < 1.0
        self.use_kernels = use_kernels and not filtered
        self.temperature = 0.0 if params.greedy else params.temperature

    @property
    def capturable(self) -> bool:
        return self.use_kernels

    def sample(
        self, logits: torch.Tensor, exclude: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(token [N], log_prob [N] f32, lse [N] f32) for logits [N, V]; exclude [N] (-1 = none)."""
        if self.use_kernels:
            return sample_kernel.gumbel_sample(
                logits, self.temperature, self.seed, SALT_TOKEN, exclude
            )
        z = logits.float() / (self.temperature or 1.0)
        lse = torch.logsumexp(z, -1)
        if self.params.greedy:
            masked = z if exclude is None else _drop(z, exclude, float("-inf"))
            token = masked.argmax(-1)
        else:
            probs = sampling_probs(logits, self.params)
            if exclude is not None:
                probs = _drop(probs, exclude, 0.0)
                total = probs.sum(-1, keepdim=True)
                # a draft with p(d) = 1 is never rejected; guard the division anyway
                probs = torch.where(total > 0, probs / total.clamp_min(1e-30), probs)
            token = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
        log_prob = z.gather(-1, token[:, None]).squeeze(-1) - lse
        return token, log_prob, lse

    def draft_probs(
        self, logits: torch.Tensor, drafts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For logits [S, k, V] and greedy drafts [S, k]: (p(d) under the distribution tokens
        are drawn from [S, k] (one-hot argmax when greedy; top-k/top-p filtered), and
        log softmax(logits / T)[d] [S, k] float32, the log-prob the trainer sees)."""
        n, k, vocab = logits.shape
        flat = logits.reshape(n * k, vocab)
        if self.use_kernels:
            lse = sample_kernel.logsumexp(flat, self.temperature)
        else:
            lse = torch.logsumexp(flat.float() / (self.temperature or 1.0), -1)
        z = logits.gather(-1, drafts[..., None]).squeeze(-1).float() / (self.temperature or 1.0)
        log_prob = z - lse.view(n, k)
        if self.params.greedy:
            return (drafts == logits.argmax(-1)).float(), log_prob
        if self.use_kernels:
            return log_prob.exp(), log_prob
        probs = sampling_probs(flat, self.params).view(n, k, vocab)
        return probs.gather(-1, drafts[..., None]).squeeze(-1), log_prob

    def uniform(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        if self.use_kernels:
            return sample_kernel.uniform(shape, self.seed, SALT_ACCEPT, device)
        return torch.rand(shape, generator=self.generator, device=device)


def _drop(x: torch.Tensor, exclude: torch.Tensor, fill: float) -> torch.Tensor:
    """x with x[n, exclude[n]] = fill where exclude[n] >= 0."""
    rows = torch.arange(x.shape[0], device=x.device)
    keep = x[rows, exclude.clamp_min(0)]
    out = x.clone()
    out[rows, exclude.clamp_min(0)] = torch.where(exclude >= 0, torch.full_like(keep, fill), keep)
    return out
