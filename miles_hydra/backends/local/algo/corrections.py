"""Train/rollout mismatch corrections: TIS and IcePop (miles ``loss_hub/corrections.py``) and
the mismatch metrics of miles' ``mis.py::add_ppl_metrics``.

``ρ_t = π_old^{train}(t) / π_roll(t) = exp(log π_old − log π_roll)`` compares the trainer's
old-policy log-probs with the rollout engine's sampling log-probs for the same tokens.
Every function returns per-token ``[B, T]`` weights/metrics; metrics are meant to be reduced
with the *original* loss mask (``aggregation.aggregate``), as miles does.
"""

from __future__ import annotations

import torch

from miles_hydra.backends.local.algo.aggregation import (
    masked_mean_per_sample,
    masked_sum_per_sample,
)
from miles_hydra.backends.local.algo.kl import LOG_RATIO_CLAMP


def tis_weights(
    train_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated IS (``vanilla_tis_function``): ``w_t = clamp(ρ_t, clip_low, clip_high)``.

    Metrics (pre-clamp, per token): ``tis = ρ_t``, ``tis_clipfrac = 1[w_t ≠ ρ_t]``,
    ``tis_abs = |ρ_t − 1|``. Weights carry no gradient. The loss mask is unchanged.
    """
    ratio = (train_log_probs.detach() - rollout_log_probs.detach()).exp()
    weights = ratio.clamp(min=clip_low, max=clip_high)
    metrics = {
        "tis": ratio,
        "tis_clipfrac": (weights != ratio).float(),
        "tis_abs": (ratio - 1).abs(),
    }
    return weights, metrics


def icepop_weights(
    train_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IcePop (``icepop_function``): ``w_t = ρ_t`` if ``clip_low ≤ ρ_t ≤ clip_high`` else 0.

    Metrics as ``tis_weights``: ``tis = ρ_t``, ``tis_clipfrac = 1[w_t ≠ ρ_t]`` (tokens
    popped), ``tis_abs = |ρ_t − 1|``. The loss mask is unchanged (popped tokens count as 0).
    """
    ratio = (train_log_probs.detach() - rollout_log_probs.detach()).exp()
    keep = (ratio >= clip_low) & (ratio <= clip_high)
    weights = torch.where(keep, ratio, 0.0)
    metrics = {
        "tis": ratio,
        "tis_clipfrac": (weights != ratio).float(),
        "tis_abs": (ratio - 1).abs(),
    }
    return weights, metrics


def mismatch_metrics(
    train_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    loss_mask: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """miles ``add_ppl_metrics``: per-token ``[B, T]`` tensors (per-sample values broadcast).

    With ``ℓ = log π_train − log π_roll`` and ``mean_i``/``sum_i`` masked over sample i:
    ``training_log_ppl = −mean_i(log π_train)``, ``training_ppl = exp(training_log_ppl)``,
    ``rollout_log_ppl``/``rollout_ppl`` likewise, ``kl_t = log π_roll − log π_train``,
    ``k3_kl_t = exp(ℓ_t) − ℓ_t − 1``, ``log_ppl_diff = mean_i(log π_roll) − mean_i(log π_train)``,
    ``log_ppl_abs_diff = |log_ppl_diff|``, ``ppl_ratio = exp(log_ppl_diff)``,
    ``chi2_token = mean_i(exp(clamp(ℓ,±20))²) − 1``, ``chi2_seq = exp(2·clamp(sum_i ℓ, ±20)) − 1``.
    """
    train = train_log_probs.detach().float()
    rollout = rollout_log_probs.detach().float()
    shape = train.shape
    mean_train = masked_mean_per_sample(train, loss_mask)[:, None].expand(shape)
    mean_rollout = masked_mean_per_sample(rollout, loss_mask)[:, None].expand(shape)
    log_ratio = train - rollout
    log_ppl_diff = mean_rollout - mean_train
    rho = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    chi2_token = masked_mean_per_sample(rho.square(), loss_mask) - 1.0
    seq_log_ratio = masked_sum_per_sample(log_ratio, loss_mask)
    chi2_seq = (2.0 * seq_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).exp() - 1.0
    return {
        "training_log_ppl": -mean_train,
        "training_ppl": (-mean_train).exp(),
        "rollout_log_ppl": -mean_rollout,
        "rollout_ppl": (-mean_rollout).exp(),
        "kl": rollout - train,
        "k3_kl": log_ratio.exp() - log_ratio - 1,
        "log_ppl_diff": log_ppl_diff,
        "log_ppl_abs_diff": log_ppl_diff.abs(),
        "ppl_ratio": log_ppl_diff.exp(),
        "chi2_token": chi2_token[:, None].expand(shape),
        "chi2_seq": chi2_seq[:, None].expand(shape),
    }
