"""MIS / rejection sampling (miles ``examples/.../train_infer_mismatch_helper/mis.py``), set by
``algorithm.correction`` (``CorrectionConfig`` with ``kind=mis``; its properties hold the
bound defaults, shared with the miles compiler).

Per sample, with ``ℓ_t = log π_train(t) − log π_roll(t)`` and level
``token: ℓ_t`` | ``sequence: Σ_t m_t ℓ_t`` (product of ratios) | ``geometric: mean_t ℓ_t``:

1. IS weights ``w = exp(clamp(ℓ_level, ±20))`` at ``level``, bounded by ``mode``:
   ``truncate``: ``clamp(w, 0, U)``; ``clip``: ``clamp(w, L, U)``; ``mask``: keep w, drop
   tokens with w outside ``[L, U]`` from the numerator mask (``L = lower_bound``, ``U = upper``).
2. Rejection sampling (``use_rs``): drop tokens whose RS ratio (at ``rs_ratio_level``) is
   outside ``rs_bounds``; veto: drop the whole sample if any loss token has
   ``ρ_t < rs_veto_threshold``.
3. ``batch_normalize``: ``w /= mean(w)`` over the batch (token level: over all loss tokens;
   sequence level: mean of per-sample means), if that mean is > 1e-8.

The modified mask only replaces the *numerator* mask of the reducer; denominators stay the
original token counts. All metrics are per-token ``[B, T]`` tensors keyed ``mis_<name>``.
"""

from __future__ import annotations

import math

import torch

from miles_hydra.backends.local.algo.aggregation import (
    masked_mean_per_sample,
    masked_sum_per_sample,
)
from miles_hydra.backends.local.algo.corrections import mismatch_metrics
from miles_hydra.backends.local.algo.kl import LOG_RATIO_CLAMP
from miles_hydra.config.algorithm import (
    CorrectionConfig,
    CorrectionKind,
    CorrectionLevel,
    CorrectionMode,
)


def _level_log_ratio(
    log_ratio: torch.Tensor, mask: torch.Tensor, level: CorrectionLevel
) -> torch.Tensor:
    """token: ``ℓ_t``; sequence: ``Σ_t m_t ℓ_t``; geometric: ``Σ_t m_t ℓ_t / max(Σ m, 1)``."""
    if level is CorrectionLevel.token:
        return log_ratio
    if level is CorrectionLevel.sequence:
        per_sample = masked_sum_per_sample(log_ratio, mask)
    else:
        per_sample = masked_mean_per_sample(log_ratio, mask)
    return per_sample[:, None].expand_as(log_ratio)


def _bound_weights(
    weights: torch.Tensor,
    mask: torch.Tensor,
    cfg: CorrectionConfig,
    metrics: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``mode``; returns ``(weights · m, numerator mask)`` and records fractions."""
    low, high = cfg.lower_bound, cfg.upper
    if cfg.mode is CorrectionMode.truncate:
        metrics["tis_truncate_fraction"] = (weights > high).float()
        return weights.clamp(0, high) * mask, mask
    metrics[f"tis_{cfg.mode.value}_fraction_low"] = (weights < low).float()
    metrics[f"tis_{cfg.mode.value}_fraction_high"] = (weights > high).float()
    if cfg.mode is CorrectionMode.clip:
        return weights.clamp(low, high) * mask, mask
    in_range = ((weights >= low) & (weights <= high)).float()
    return weights * mask, mask * in_range


def _reject(
    log_ratio: torch.Tensor,
    level_log_ratio: torch.Tensor,
    mask: torch.Tensor,
    numerator: torch.Tensor,
    cfg: CorrectionConfig,
    metrics: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Rejection sampling on ``numerator``: RS bounds at ``rs_ratio_level``, then the veto."""
    low, high = cfg.rs_bounds
    rs_weights = level_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    metrics["rs_mask_fraction_low"] = (rs_weights < low).float()
    metrics["rs_mask_fraction_high"] = (rs_weights > high).float()
    numerator = numerator * ((rs_weights >= low) & (rs_weights <= high)).float()
    if cfg.rs_veto_threshold is not None:
        catastrophic = (log_ratio < math.log(cfg.rs_veto_threshold)) & mask.bool()
        vetoed = catastrophic.any(dim=-1, keepdim=True).expand_as(mask)
        metrics["rs_catastrophic_token_fraction"] = catastrophic.float()
        metrics["rs_catastrophic_seq_fraction"] = vetoed.float()
        numerator = numerator * (~vetoed).float()
    return numerator


def _batch_mean(weights: torch.Tensor, mask: torch.Tensor, level: CorrectionLevel) -> torch.Tensor:
    """token: ``Σ m w / max(Σ m, 1)``; sequence: mean over samples of per-sample means."""
    if level is CorrectionLevel.token:
        return masked_sum_per_sample(weights, mask).sum() / mask.sum().clamp_min(1)
    return masked_mean_per_sample(weights, mask).mean()


def _final_stats(weights: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample mean/min/max of the final weights over loss tokens (0 for an empty sample)."""
    valid = mask.bool()
    has_tokens = valid.any(dim=-1)
    low = torch.where(valid, weights, math.inf).amin(dim=-1)
    high = torch.where(valid, weights, -math.inf).amax(dim=-1)
    stats = {
        "is_ratio_mean_final": masked_mean_per_sample(weights, mask),
        "is_ratio_min_final": torch.where(has_tokens, low, 0.0),
        "is_ratio_max_final": torch.where(has_tokens, high, 0.0),
    }
    return {key: value[:, None].expand_as(weights) for key, value in stats.items()}


def mis_weights(
    train_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    loss_mask: torch.Tensor,
    cfg: CorrectionConfig,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """miles ``compute_mis_weights`` on a padded batch (see the module docstring for the math).

    Returns ``(weights, numerator_mask, metrics)``: weights ``[B, T]``, the modified 0/1
    numerator mask, and ``mis_*`` per-token metrics to be reduced with the original
    ``loss_mask``. Weights and masks carry no gradient.
    """
    assert cfg.kind is CorrectionKind.mis, cfg.kind
    mask = loss_mask.float()
    train = torch.where(mask.bool(), train_log_probs.detach().float(), 0.0)
    rollout = torch.where(mask.bool(), rollout_log_probs.detach().float(), 0.0)
    metrics = mismatch_metrics(train, rollout, mask)

    log_ratio = train - rollout
    tis_log_ratio = _level_log_ratio(log_ratio, mask, cfg.level)
    weights = tis_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    metrics["tis_weight_before_bound"] = weights
    weights, numerator = _bound_weights(weights, mask, cfg, metrics)
    metrics["tis_weight_after_bound"] = weights
    if cfg.use_rs:
        rs_level = cfg.rs_ratio_level
        same_level = rs_level is cfg.level
        rs_log_ratio = tis_log_ratio if same_level else _level_log_ratio(log_ratio, mask, rs_level)
        numerator = _reject(log_ratio, rs_log_ratio, mask, numerator, cfg, metrics)
    metrics["is_ratio_mean_after_tis_rs"] = weights

    if cfg.batch_normalize:
        mean = _batch_mean(weights, mask, cfg.level)
        if mean > 1e-8:
            weights = weights / mean
            metrics["batch_norm_factor"] = mean.expand_as(weights)
        else:
            metrics["batch_norm_factor"] = torch.ones_like(weights)
    metrics.update(_final_stats(weights, mask))
    return weights, numerator, {f"mis_{key}": value for key, value in metrics.items()}
