"""What the rollout engine samples with and returns, and its reference sampling math.

`SamplingParams` (temperature, top-k/top-p, length cap, stop tokens) and `GenOutput` (one
response), then the math the per-slot loop uses: filtered sampling distributions, the log-probs
the trainer sees, and the speculative-sampling acceptance rule. The batched loop draws inside
its captured step through step_sampler.py, which matches these distributions.

Log-probs are always those of softmax(logits / T) without top-k/top-p filtering (T = 1 when
greedy), which is what the trainer recomputes. The logits come from the engine's forward in
its dtype (precision.rollout_dtype); the softmax itself is taken in float32, as SGLang does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus mass kept (1 = off)
    top_k: int = -1  # most likely tokens kept (-1 or 0 = off)
    max_new_tokens: int = 64  # response length cap
    stop_token_ids: list[int] = field(default_factory=list)  # end a response (eos is added)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class GenOutput:
    response_ids: list[int]  # sampled tokens (incl. the stop token when one ended the response)
    rollout_log_probs: list[float]  # log p(token) under softmax(logits / T) of the engine
    finished: bool  # True when a stop token ended it (False: hit max_new_tokens, or aborted)
    routed_experts: Optional[np.ndarray] = None  # [prompt+resp-1, num_layers, topk] int32 (R3)
    spec_draft_tokens: int = 0  # draft tokens proposed for this sample
    spec_accepted_tokens: int = 0  # of which the target accepted
    spec_verify_steps: int = 0  # target verification forwards (spec decoding only)
    # verify steps by accepted draft count: hist[a] = steps that accepted exactly a of the
    # k drafts (length k + 1; empty without speculation). Per-depth acceptance derives from it.
    spec_accept_hist: list[int] = field(default_factory=list)
    # stopped early by generate(stop_after_groups=...): neither a stop token nor the cap ended
    # it; response_ids / rollout_log_probs hold what was generated so far (partial rollout)
    aborted: bool = False


def token_log_probs(
    logits: torch.Tensor, tokens: torch.Tensor, params: SamplingParams
) -> torch.Tensor:
    """log softmax(logits / T)[token] in float32; logits [..., V], tokens [...]."""
    scaled = logits.float() / (1.0 if params.greedy else params.temperature)
    return torch.log_softmax(scaled, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def sampling_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution tokens are drawn from: softmax(logits / T) restricted to top-k / top-p
    and renormalized (one-hot argmax when greedy). logits [N, V] -> probs [N, V] float32."""
    logits = logits.float()
    if params.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    scaled = logits / params.temperature
    if 0 < params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of `probs` [N, V] -> [N] int64."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def speculative_accept(
    probs: torch.Tensor, draft_ids: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling for greedy (point-mass) drafts, batched.

    probs [N, k+1, V]: target sampling distributions at the k draft positions and the bonus one;
    draft_ids [N, k]. Draft token d_i is accepted with prob min(1, p(d_i)/q(d_i)) = p(d_i)
    (q is a point mass); at the first rejection the next token is drawn from the normalized
    residual max(p - q, 0), i.e. p with d_i removed; if all k are accepted a bonus token is
    drawn from p_k. The emitted tokens are then distributed exactly as plain sampling from p.
    Returns (accepted count a [N] in 0..k, the token drawn after them [N]).
    """
    n, k = draft_ids.shape
    p_draft = probs[:, :k].gather(-1, draft_ids.unsqueeze(-1)).squeeze(-1)  # [N, k]
    u = torch.rand(n, k, generator=generator, device=probs.device)
    ok = (u < p_draft).long()
    accepted = ok.cumprod(-1).sum(-1)  # length of the accepted prefix
    rows = torch.arange(n, device=probs.device)
    p_next = probs[rows, accepted].clone()  # [N, V]: p at the first rejected (or bonus) position
    rejected = accepted < k
    if rejected.any():
        d_rej = draft_ids[rows[rejected], accepted[rejected]]
        residual = p_next[rejected]
        residual[torch.arange(residual.shape[0], device=probs.device), d_rej] = 0.0
        total = residual.sum(-1, keepdim=True)
        # p(d) == 1 with rejection has probability 0; guard the division anyway
        p_next[rejected] = torch.where(
            total > 0, residual / total.clamp_min(1e-30), p_next[rejected]
        )
    return accepted, sample(p_next, generator)
