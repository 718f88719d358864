"""MTP-style draft head for speculative rollout, and its online training loss.

The head follows DeepSeek-V3 MTP / EAGLE: from the target's hidden state ``h_t`` at position t
and the embedding of the next token ``x_{t+1}`` it produces a hidden state whose logits, through
the target's own LM head, predict ``x_{t+2}``::

    u   = W_in [RMSNorm(h_t) ; RMSNorm(E[x_{t+1}])]          (2H -> H)
    u   = u + SwiGLU(RMSNorm(u))                              (mtp_num_layers times)
    d   = RMSNorm(u)                                          (the draft hidden state)
    q   = softmax(d W_lm^T)                                   (target's LM head)

Blocks are residual SwiGLU MLPs without attention, on purpose: the context is already in h_t,
and a draft step is then one small matmul chain with no KV cache, which keeps speculative
decoding cheap on CPU and trivial to roll back on rejection. Drafting chains EAGLE-style: step
k+1 takes the draft hidden state of step k and the token it proposed (``propose_chain``).

``h`` everywhere is the hidden state the target's LM head consumes (HF ``last_hidden_state``,
i.e. after the trunk's final norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from miles_hydra.config.model import ModelConfig
from miles_hydra.config.speculative import SpeculativeConfig


class _RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class _SwiGLUBlock(nn.Module):
    """Pre-norm residual gated-SiLU MLP: ``x + W_down(silu(W_gate n(x)) * W_up n(x))``."""

    def __init__(self, hidden_size: int, ffn_size: int, eps: float) -> None:
        super().__init__()
        self.norm = _RMSNorm(hidden_size, eps)
        self.gate_proj = nn.Linear(hidden_size, ffn_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, ffn_size, bias=False)
        self.down_proj = nn.Linear(ffn_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class DraftHead(nn.Module):
    """``mtp_num_layers``-block MTP draft head over the target's hidden size.

    Parameter names (state-dict keys, prefixed ``draft.`` inside PolicyModel): ``hidden_norm``,
    ``embed_norm``, ``input_proj``, ``layers.{i}.{norm,gate_proj,up_proj,down_proj}``,
    ``final_norm``. The head owns no embedding table and no LM head: it borrows the target's.
    """

    def __init__(self, model_cfg: ModelConfig, spec_cfg: SpeculativeConfig) -> None:
        super().__init__()
        h, eps = model_cfg.hidden_size, model_cfg.norm_epsilon
        self.hidden_size = h
        self.hidden_norm = _RMSNorm(h, eps)
        self.embed_norm = _RMSNorm(h, eps)
        self.input_proj = nn.Linear(2 * h, h, bias=False)
        self.layers = nn.ModuleList(
            _SwiGLUBlock(h, model_cfg.ffn_hidden_size, eps)
            for _ in range(max(1, spec_cfg.mtp_num_layers))
        )
        self.final_norm = _RMSNorm(h, eps)

    def forward(self, hidden: torch.Tensor, next_embeds: torch.Tensor) -> torch.Tensor:
        """Draft hidden state ``[..., H]`` from ``h_t`` ``[..., H]`` and ``E[x_{t+1}]`` ``[..., H]``."""
        u = self.input_proj(torch.cat([self.hidden_norm(hidden), self.embed_norm(next_embeds)], -1))
        for layer in self.layers:
            u = layer(u)
        return self.final_norm(u)

    def draft_hidden(
        self, hidden: torch.Tensor, next_ids: torch.Tensor, embed_tokens: nn.Embedding
    ) -> torch.Tensor:
        """Draft hidden state from ``h_t`` ``[..., H]`` and token ids ``x_{t+1}`` ``[...]``."""
        return self(hidden, embed_tokens(next_ids))

    def draft_logits(
        self, lm: nn.Module, hidden: torch.Tensor, next_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [..., V], draft_hidden [..., H])`` through ``lm``'s embeddings and LM head.

        ``lm`` is the HF ``*ForCausalLM`` (``PolicyModel.lm``). Feed ``draft_hidden`` and the
        token proposed from ``logits`` back in to draft the following token.
        """
        d = self.draft_hidden(hidden, next_ids, lm.get_input_embeddings())
        return lm.get_output_embeddings()(d), d

    @torch.no_grad()
    def propose_chain(
        self,
        lm: nn.Module,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        num_steps: int,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draft ``num_steps`` tokens after ``next_ids`` (a chain, top-k 1 per step).

        Args:
            hidden: ``[B, H]`` target hidden state at the position that produced ``next_ids``.
            next_ids: ``[B]`` the token just sampled from the target (``x_{t+1}``).
            temperature: 0 = greedy proposals (the draft distribution q is then one-hot);
                otherwise proposals are sampled from ``softmax(logits / temperature)``.
        Returns:
            ``(tokens [B, num_steps], q [B, num_steps, V])`` where ``q[:, k]`` is the
            distribution token k was drawn from (for the speculative-sampling accept rule
            ``min(1, p/q)``).
        """
        tokens, probs = [], []
        h, ids = hidden, next_ids
        for _ in range(num_steps):
            logits, h = self.draft_logits(lm, h, ids)
            logits = logits.float()
            if temperature <= 0.0:
                ids = logits.argmax(-1)
                q = F.one_hot(ids, logits.shape[-1]).to(logits.dtype)
            else:
                q = torch.softmax(logits / temperature, dim=-1)
                ids = torch.multinomial(q, 1, generator=generator).squeeze(-1)
            tokens.append(ids)
            probs.append(q)
        return torch.stack(tokens, 1), torch.stack(probs, 1)


def mtp_loss(
    draft: DraftHead,
    lm: nn.Module,
    hidden_states: torch.Tensor,
    input_ids: torch.Tensor,
    loss_mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Depth-1 MTP loss: predict ``x_{t+2}`` from ``(h_t, x_{t+1})``, on response tokens.

    ``loss = sum_t m_{t+2} * CE(draft(h_t, x_{t+1}) W_lm^T, x_{t+2}) / max(1, sum_t m_{t+2})``
    for ``t = 0 .. T-3``, where ``m`` is ``loss_mask`` aligned with ``input_ids`` (1 where the
    token is a response token the policy loss counts; 0 on prompt and padding).

    Gradient isolation (as in miles): ``h_t``, the embedding lookup and the LM head weights are
    detached on this branch, so only ``draft`` parameters receive gradients from it. The caller
    scales the loss by ``mtp_loss_scale(spec_cfg)`` before adding it to the policy loss.

    Args:
        hidden_states: ``[B, T, H]`` the target's last hidden states (may carry a graph).
        input_ids: ``[B, T]`` token ids; loss_mask: ``[B, T]`` 0/1 (any numeric dtype).
    Returns:
        ``(loss, metrics)`` with metrics ``train/mtp_loss`` and ``train/mtp_accuracy`` (top-1
        match rate of the draft on the masked targets) as floats.
    """
    assert hidden_states.dim() == 3 and input_ids.shape == hidden_states.shape[:2]
    assert loss_mask.shape == input_ids.shape
    if input_ids.shape[1] < 3:
        zero = hidden_states.new_zeros((), dtype=torch.float32) + 0.0 * _param_sum(draft)
        return zero, {"train/mtp_loss": 0.0, "train/mtp_accuracy": 0.0}
    embed_w = lm.get_input_embeddings().weight.detach()
    head = lm.get_output_embeddings()
    head_b = head.bias.detach() if getattr(head, "bias", None) is not None else None
    h = hidden_states[:, :-2].detach()
    next_embeds = F.embedding(input_ids[:, 1:-1], embed_w)
    d = draft(h.to(next_embeds.dtype), next_embeds)
    logits = F.linear(d, head.weight.detach(), head_b).float()
    targets = input_ids[:, 2:]
    mask = loss_mask[:, 2:].float()
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    denom = mask.sum().clamp(min=1.0)
    loss = (ce.view_as(mask) * mask).sum() / denom
    with torch.no_grad():
        hits = (logits.argmax(-1) == targets).float()
        accuracy = float((hits * mask).sum() / denom)
    return loss, {"train/mtp_loss": float(loss.detach()), "train/mtp_accuracy": accuracy}


def mtp_loss_scale(spec_cfg: SpeculativeConfig) -> float:
    """Weight of ``mtp_loss`` in the total loss: ``mtp_loss_scaling_factor / mtp_num_layers``."""
    return spec_cfg.mtp_loss_scaling_factor / max(1, spec_cfg.mtp_num_layers)


def _param_sum(module: nn.Module) -> torch.Tensor:
    """Sum of all parameters (keeps an empty-batch loss attached to the draft's graph)."""
    return sum(p.sum() for p in module.parameters()).float()
