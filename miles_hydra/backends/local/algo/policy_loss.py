"""PPO / GSPO policy loss, dual clip, ESS, the clipped value loss, and token log-probs and
entropy from logits (miles ``math_utils.py::compute_policy_loss``, ``compute_gspo_kl``,
``compute_ess_ratio_contribution``, ``compute_entropy_from_logits``,
``losses.py::value_loss_function``).

All token tensors are ``[B, T]``; results are per token (reduce them with ``aggregation``).
"""

from __future__ import annotations

import torch

from miles_hydra.backends.local.algo.kl import safe_clamp_log_ratio


def sanitize(values: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """miles' inactive-token rule: ``x`` with NaN/±Inf → 0 where ``loss_mask = 1``, exactly 0
    where ``loss_mask = 0``."""
    cleaned = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.where(loss_mask.bool(), cleaned, 0.0)


def token_ppo_kl(log_probs: torch.Tensor, old_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token ``ppo_kl_t = log π_old(t) − log π_θ(t)``."""
    return old_log_probs - log_probs


def sequence_ppo_kl(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """GSPO: ``ppo_kl_i = Σ_t m_t (log π_old − log π_θ) / max(Σ_t m_t, 1)`` broadcast to every
    token of sample i, so the ratio is ``(π_θ(y)/π_old(y))^{1/|y|}``. ``[B, T] -> [B, T]``."""
    diff = torch.where(loss_mask.bool(), old_log_probs - log_probs, 0.0)
    count = loss_mask.to(diff.dtype).sum(dim=-1, keepdim=True).clamp_min(1)
    return (diff.sum(dim=-1, keepdim=True) / count).expand_as(diff)


def ppo_clip_loss(
    ppo_kl: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eps_clip: float,
    eps_clip_high: float,
    eps_clip_c: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate per token; returns ``(pg_loss_t, pg_clipfrac_t)``.

    ``r_t = exp(clamp(−ppo_kl_t, −20, 20))`` (NaN→0, ±Inf→±20 first);
    ``L1 = −r_t·A_t``, ``L2 = −clip(r_t, 1−eps_clip, 1+eps_clip_high)·A_t``,
    ``L_t = max(L1, L2)``, ``clipfrac_t = 1[L2 > L1]`` (DAPO asymmetric clip).
    Dual clip (``eps_clip_c = c > 1``; None = off): where ``A_t < 0``,
    ``L_t = min(−c·A_t, L_t)``.
    Pass sanitized ``ppo_kl``/``advantages`` (see ``sanitize``) so inactive tokens give 0.
    """
    ratio = safe_clamp_log_ratio(-ppo_kl).exp()
    loss_unclipped = -ratio * advantages
    loss_clipped = -ratio.clamp(1 - eps_clip, 1 + eps_clip_high) * advantages
    pg_loss = torch.maximum(loss_unclipped, loss_clipped)
    clipfrac = torch.gt(loss_clipped, loss_unclipped).float()
    if eps_clip_c is not None:
        assert eps_clip_c > 1.0, (
            f"dual-clip constant must be > 1 (AlgorithmConfig), got {eps_clip_c}"
        )
        dual = torch.minimum(-eps_clip_c * advantages, pg_loss)
        pg_loss = torch.where(advantages < 0, dual, pg_loss)
    return pg_loss, clipfrac


def opsm_mask(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Off-policy sequence masking (``--use-opsm``, DeepSeek-V3.2; miles ``compute_opsm_mask``).

    ``kl_i = Σ_t m_t (log π_old − log π_θ) / max(Σ_t m_t, 1)``; a token is dropped when
    ``A_t < 0`` and ``kl_i > delta``. Returns ``(keep_t, clipfrac_i)``: the 0/1 multiplier
    for ``pg_loss_t`` and per sample the dropped fraction of its loss tokens, ``[B]``.
    """
    diff = torch.where(loss_mask.bool(), old_log_probs - log_probs, 0.0).detach()
    count = loss_mask.float().sum(dim=-1).clamp_min(1)
    seq_kl = diff.sum(dim=-1) / count
    dropped = (advantages < 0) & (seq_kl[:, None] > delta) & loss_mask.bool()
    return (~dropped).float(), dropped.float().sum(dim=-1) / count


def ess_ratio_per_sample(ppo_kl: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Effective-sample-size ratio per sample (no grad): with ``w_t = exp(clamp(−ppo_kl_t))``
    over the sample's n loss tokens, ``ESS = (Σ w)² / (max(n, 1) · max(Σ w², 1e-8))``.
    1.0 is on-policy. ``[B, T] -> [B]``."""
    weights = torch.where(loss_mask.bool(), safe_clamp_log_ratio(-ppo_kl.detach()).exp(), 0.0)
    count = loss_mask.float().sum(dim=-1).clamp_min(1)
    sum_w = weights.sum(dim=-1)
    sum_w2 = weights.square().sum(dim=-1)
    return sum_w.square() / (count * sum_w2.clamp_min(1e-8))


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    *,
    value_clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO critic loss per token; returns ``(value_loss_t, value_clipfrac_t)``.

    ``V_c = V_old + clip(V − V_old, −value_clip, value_clip)``,
    ``loss_t = max((V_c − R)², (V − R)²)``, ``clipfrac_t = 1[|V − V_old| > value_clip]``.
    """
    clipfrac = (values - old_values).abs().gt(value_clip).float()
    clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    loss = torch.maximum((clipped - returns).square(), (values - returns).square())
    return loss, clipfrac


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log softmax(z)[y]`` per position: ``z_y − logsumexp(z)``.

    Args:
        logits: ``[..., V]`` logits that predict ``tokens`` (already shifted by the caller:
            position t's logits predict token t).
        tokens: ``[...]`` token ids.
    Returns:
        ``[...]`` float32 log-probabilities.
    """
    logits = logits.float()
    picked = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution per position: ``H = logsumexp(z) − Σ_v p_v z_v``
    with ``p = softmax(z)`` (equal to ``−Σ_v p_v log p_v``); ``[..., V] -> [...]`` float32."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    # Logits of -inf (a sampling mask) have p = 0 and contribute 0, not 0 * -inf = NaN.
    finite_logits = torch.where(probs > 0, logits, 0.0)
    return torch.logsumexp(logits, dim=-1) - (probs * finite_logits).sum(dim=-1)
